"""Members' data rights: export everything the territory holds about a member, erase it on request,
and keep the audit log of who read it.

- ``export`` reads the member's rows (``MemberDataRepository.collect``) and their badges' signed
  credentials into a ``MemberExport``: JSON plus a readable Markdown summary, zipped for a chat
  delivery. Every export is an audit entry (``personal_data.exported``).
- ``ask_erasure`` / ``erase``: ``!me forget`` asks for a confirmation word (kept in the database);
  with it, one transaction erases or pseudonymises every row as the territory's
  ``erasure_comments`` policy says, revokes the member's awards (their credentials say
  "revoked" and no longer name them), and records ``member.erased`` under a pseudonym. What must
  leave the database (unpin sole files, redact removed comments, clear the forum ghost, deactivate
  the Matrix account) is recorded as effects and leaves after the commit.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mautrix.errors import MatrixError
from mautrix.types import (
    EventType,
    RoomID,
    UserID,
)

from core.effects import EffectRow, Effects, Executor, PermanentFailure
from core.events import EventEmitter
from core.ids import Namespace, localpart_of, server_of
from core.matrix import MatrixConnection
from core.ports import AccountEraser, Pins
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.member_data import CommentPolicy, Erased, MemberDataRepository

from .badge_credentials import BadgeCredentials
from .territory import TerritorySettings

log = logging.getLogger("unityplan.data_rights")

EXPORT_EFFECT = "member.export"
UNPIN_EFFECT = "ipfs.unpin"
GHOST_EFFECT = "ghost.forget"
DEACTIVATE_EFFECT = "homeserver.deactivate"
SHARED_ERASURE_EFFECT = "member.erase_shared"
CONFIRM_SECONDS = 600.0
FORMER_MEMBER = "A former member"
_WORDS = (
    "amber", "birch", "cedar", "delta", "ember", "fjord", "grove", "heath", "inlet", "juniper",
    "kelp", "larch", "meadow", "north", "orchard", "pine", "quartz", "river", "slate", "tundra",
    "upland", "valley", "willow", "yarrow",
)  # fmt: skip


def pseudonym() -> str:
    """What an erased member is called from now on: random, so nothing links it back."""
    return f"former-member-{secrets.token_hex(6)}"


@dataclass(frozen=True)
class MemberExport:
    user_id: str
    territory: str
    exported_at: datetime
    data: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "format": "unityplan.member-export/1",
            "user_id": self.user_id,
            "territory": self.territory,
            "exported_at": self.exported_at.isoformat(),
            **self.data,
        }

    def to_json(self) -> bytes:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False).encode()

    @property
    def filename(self) -> str:
        return f"unityplan-{self.territory}-{localpart_of(self.user_id)}-{self.exported_at:%Y%m%d}"

    def to_markdown(self) -> str:
        d = self.data
        lines = [
            f"# What territory {self.territory} holds about {self.user_id}",
            "",
            f"Exported {self.exported_at:%Y-%m-%d %H:%M} UTC. The JSON file beside this one has",
            "every field; this is the summary.",
            "",
        ]
        profile = d.get("profile") or {}
        lines += ["## Profile", ""]
        lines.append(f"- Display name: {profile.get('display_name') or '(none kept)'}")
        if d.get("account"):
            lines.append(f"- Known here since {d['account']['created_at'][:10]}")
        lines += ["", f"## Badges ({len(d['badges'])})", ""]
        for b in d["badges"]:
            state = (
                f"revoked {b['revoked_at'][:10]}"
                if b["revoked_at"]
                else f"expired {b['expired_at'][:10]}"
                if b["expired_at"]
                else f"valid until {b['expires_at'][:10]}"
                if b["expires_at"]
                else "valid, no expiry"
            )
            lines.append(
                f"- {b['badge_slug']}: awarded {b['awarded_at'][:10]} by {b['awarded_by']} "
                f"({b['source']}), {state}; signed credential included"
            )
        lines += ["", f"## Courses ({len(d['enrollments'])})", ""]
        for e in d["enrollments"]:
            done = f"completed {e['completed_at'][:10]}" if e["completed_at"] else "in progress"
            score = f", best score {e['best_score']:.0%}" if e["best_score"] is not None else ""
            lines.append(
                f"- {e['course_slug']} (version {e['course_version']}): {done}, "
                f"{e['lessons_done']} lessons read, attempt {e['attempt']}{score}, "
                f"{len(e['answers'])} answers"
            )
        lines += ["", f"## Forum comments ({len(d['comments'])})", ""]
        for c in d["comments"]:
            gone = " (deleted)" if c["deleted_at"] else ""
            edits = f", {len(c['revisions'])} earlier versions" if c["revisions"] else ""
            lines.append(
                f"- {c['created_at'][:16]} in {c['topic']}{gone}{edits}: {c['body'][:200]}"
            )
        lines += ["", f"## Votes ({len(d['votes'])}), topics you started ({len(d['topics'])})"]
        lines += ["", f"## Files ({len(d['files'])})", ""]
        for f in d["files"]:
            lines.append(f"- {f['filename']} ({f['mime']}, {f['size']} bytes): {f['cid']}")
        lines += ["", f"## Audit log entries about you ({len(d['audit'])})", ""]
        for a in d["audit"]:
            lines.append(f"- {a['occurred_at'][:16]} {a['action']} by {a['actor']}")
        lines.append("")
        return "\n".join(lines)

    def to_zip(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(f"{self.filename}/export.json", self.to_json())
            archive.writestr(f"{self.filename}/README.md", self.to_markdown())
        return buffer.getvalue()


@dataclass(frozen=True)
class ErasureReport:
    erased: Erased
    policy: CommentPolicy
    pseudonym: str
    deactivating: bool  # the homeserver's admin API deactivates the account with erasure
    local: bool  # the member's account is on this territory's homeserver


class MemberDataService:
    def __init__(
        self,
        *,
        db: Database,
        repo: MemberDataRepository,
        credentials: BadgeCredentials,
        audit: AuditLog,
        effects: Effects,
        events: EventEmitter,
        settings: TerritorySettings,
        matrix: MatrixConnection,
        namespace: Namespace,
        pins: Pins,
        territory: str,
        account_eraser: AccountEraser | None = None,
    ) -> None:
        self.db = db
        self.repo = repo
        self.credentials = credentials
        self.audit = audit
        self.effects = effects
        self.events = events
        self.settings = settings
        self.matrix = matrix
        self.namespace = namespace
        self.pins = pins
        self.territory = territory
        self.account_eraser = account_eraser

    # --- export -------------------------------------------------------------------------------

    async def export(self, user_id: str, *, via: str, actor: str | None = None) -> MemberExport:
        """Everything about ``user_id``; ``actor`` (default: the member) is who asked."""
        data = await self.repo.collect(user_id)
        for badge in data["badges"]:
            issued = await self.credentials.issue(badge["credential_id"])
            if issued is not None:
                _, credential, token = issued
                badge["credential"] = credential
                badge["signed_credential"] = token
        await self.audit.record(
            actor or user_id,
            "personal_data.exported",
            target=user_id,
            details={"via": via, "items": {k: _size(v) for k, v in data.items()}},
        )
        return MemberExport(user_id, self.territory, datetime.now(UTC), data)

    async def queue_export(self, user_id: str, room_id: str) -> str:
        """Deliver the export as a file in ``room_id`` after the commit."""
        return await self.effects.record(
            EXPORT_EFFECT, {"user_id": user_id, "room_id": room_id}, room_key=room_id
        )

    # --- erasure ------------------------------------------------------------------------------

    @property
    def comment_policy(self) -> CommentPolicy:
        return "keep" if self.settings.erasure_comments == "keep" else "remove"

    async def ask_erasure(self, user_id: str) -> str:
        word = f"{secrets.choice(_WORDS)}-{secrets.randbelow(900) + 100}"
        await self.repo.ask_erasure(user_id, word, CONFIRM_SECONDS)
        return word

    async def pending_word(self, user_id: str) -> str | None:
        return await self.repo.pending_word(user_id)

    async def erase(self, user_id: str) -> ErasureReport:
        """Erase the member now (the caller checked the confirmation word)."""
        policy = self.comment_policy
        name = pseudonym()
        local = server_of(user_id) == self.namespace.server_name
        async with self.db.transaction():
            erased = await self.repo.erase(user_id, name, policy)
            for award_id, badge in erased.revoked_awards:
                # Named by award and badge only: gates re-check who is in their rooms.
                await self.events.emit("badge.revoked", {"award_id": award_id, "badge": badge})
            await self.events.emit("member.erased", {"pseudonym": name, "policy": policy})
            # The shared rows (audit log, global users) may live on another server: they follow
            # after the commit, idempotently (global.erase_member records member.erased once).
            await self.effects.record(
                SHARED_ERASURE_EFFECT,
                {
                    "user_id": user_id,
                    "pseudonym": name,
                    "details": {
                        "policy": policy,
                        "comments_removed": erased.comments_removed,
                        "comments_kept": erased.comments_kept,
                        "awards_revoked": erased.awards_revoked,
                        "files": erased.files,
                        "files_unpinned": len(erased.sole_cids),
                    },
                },
                room_key=f"erasure:{name}",
            )
            for cid in erased.sole_cids:
                await self.effects.record(UNPIN_EFFECT, {"cid": cid}, room_key=f"ipfs:{cid}")
            for room_id, event_id, source in erased.removed_events:
                sender = self.namespace.ghost_id(localpart_of(user_id)) if source == "api" else None
                await self.effects.redact(
                    room_id, event_id, sender=sender, reason="The author asked to be forgotten."
                )
            if local and erased.api_comments:
                ghost = self.namespace.ghost_id(localpart_of(user_id))
                await self.effects.record(GHOST_EFFECT, {"ghost": ghost}, room_key=f"dm:{ghost}")
        deactivating = local and self.account_eraser is not None
        return ErasureReport(erased, policy, name, deactivating, local)

    async def queue_deactivation(self, user_id: str, after_room: str) -> None:
        """Deactivate the member's account with erasure, after what was queued for
        ``after_room`` (the reply that tells them) has been sent."""
        await self.effects.record(DEACTIVATE_EFFECT, {"user_id": user_id}, room_key=after_room)

    # --- effects ------------------------------------------------------------------------------

    def executors(self) -> dict[str, Executor]:
        return {
            EXPORT_EFFECT: self._deliver_export,
            UNPIN_EFFECT: self._unpin,
            GHOST_EFFECT: self._clear_ghost,
            DEACTIVATE_EFFECT: self._deactivate,
            SHARED_ERASURE_EFFECT: self._erase_shared,
        }

    async def _erase_shared(self, effect: EffectRow) -> dict[str, Any]:
        p = effect.payload
        changed = await self.repo.erase_shared(p["user_id"], p["pseudonym"], p["details"])
        return {"audit_entries": changed}

    async def _deliver_export(self, effect: EffectRow) -> dict[str, Any]:
        user_id, room_id = effect.payload["user_id"], effect.payload["room_id"]
        # Only to the member and the bot: a room others joined since is no place for it.
        members = set(await self.matrix.bot.get_joined_members(RoomID(room_id)))
        if members != {UserID(user_id), self.matrix.bot_user_id}:
            raise PermanentFailure(f"{room_id} is not the member's private DM with the bot")
        export = await self.export(user_id, via="chat")
        archive = export.to_zip()
        name = f"{export.filename}.zip"
        media = await self.matrix.upload_for(
            room_id, archive, mime="application/zip", filename=name
        )
        content = {
            "msgtype": "m.file",
            "body": name,
            "info": {"mimetype": "application/zip", "size": len(archive)},
            **media,  # in an encrypted DM, an encrypted file
        }
        event_id = await self.matrix.send_message_event(
            room_id, EventType.ROOM_MESSAGE, content, txn_id=effect.txn_id
        )
        return {"event_id": str(event_id), "bytes": len(archive)}

    async def _unpin(self, effect: EffectRow) -> None:
        cid = str(effect.payload["cid"])
        if await self.pins.is_pinned(cid):
            await self.pins.unpin(cid)
        log.info("Unpinned %s: its only uploader was erased", cid)

    async def _clear_ghost(self, effect: EffectRow) -> None:
        intent = self.matrix.ghost(UserID(effect.payload["ghost"]))
        try:
            await intent.ensure_registered()
            await intent.set_displayname(FORMER_MEMBER)
        except MatrixError as exc:
            log.warning("Could not clear the ghost %s: %s", effect.payload["ghost"], exc)

    async def _deactivate(self, effect: EffectRow) -> None:
        if self.account_eraser is None:
            raise PermanentFailure("the homeserver admin API is not configured")
        await self.account_eraser.deactivate(str(effect.payload["user_id"]), erase=True)


def _size(value: Any) -> int:
    if isinstance(value, list):
        return len(value)
    return 0 if value is None else 1
