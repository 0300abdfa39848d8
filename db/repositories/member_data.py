"""Everything a territory holds about one member: read for an export, erased for `!me forget`,
and the retention purge of old entries.

Reads come back as plain JSON-ready dicts (timestamps as ISO strings) so an export is exactly what
the database holds. The erasure runs in the caller's transaction: it commits all at once or not at
all, and returns what must leave afterwards (files to unpin, Matrix events to redact).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from ..database import Database
from ..territory import TerritoryCode, territory_schema

CommentPolicy = Literal["remove", "keep"]
ERASED_FILENAME = "(erased)"


@dataclass
class Erased:
    """What one erasure changed, and what the caller sends out after the commit."""

    comments_removed: int = 0
    comments_kept: int = 0
    api_comments: int = 0  # written through the API: the forum ghost said them
    topics: int = 0
    votes: int = 0
    enrollments: int = 0
    answers: int = 0
    awards_revoked: int = 0
    files: int = 0
    other_rows: int = 0
    sole_cids: list[str] = field(default_factory=list)
    # (room_id, event_id, source) of removed comments: redacted in their rooms afterwards.
    removed_events: list[tuple[str, str, str]] = field(default_factory=list)
    revoked_awards: list[tuple[int, str]] = field(default_factory=list)  # (award id, badge)


def _count(status: str) -> int:
    """The row count of an asyncpg command status such as ``UPDATE 3`` or ``DELETE 0``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class MemberDataRepository:
    def __init__(self, territory_db: Database, global_db: Database, territory: TerritoryCode):
        self.db = territory_db
        self.global_db = global_db
        self.territory = territory
        self.schema = territory_schema(territory)

    async def _rows(self, query: str, *args: Any, db: Database | None = None) -> list[Any]:
        raw = await (db or self.db).fetchval(
            f"SELECT coalesce(json_agg(r), '[]'::json)::text FROM ({query}) r", *args
        )
        return list(json.loads(raw))

    async def collect(self, user_id: str) -> dict[str, Any]:
        """Every row about ``user_id`` in this territory (and its shared rows): nothing of anyone
        else but what names them as the other side of the member's own record (who awarded a
        badge, who moderated them)."""
        s = self.schema
        profile = await self._rows(
            f"""SELECT display_name, language, created_at, updated_at FROM {s}.user_profiles
                WHERE matrix_user_id = $1""",
            user_id,
        )
        account = await self._rows(
            """SELECT matrix_user_id, territory_code, created_at FROM global.users
               WHERE matrix_user_id = $1 AND territory_code = $2""",
            user_id,
            self.territory,
            db=self.global_db,
        )
        return {
            "profile": profile[0] if profile else None,
            "account": account[0] if account else None,
            "badges": await self._rows(
                f"""SELECT id, badge_slug, awarded_at, awarded_by, source, expires_at, renewed_at,
                           expired_at, revoked_at, revoked_by, revoke_reason, credential_id
                    FROM {s}.user_badges WHERE user_id = $1 ORDER BY id""",
                user_id,
            ),
            "enrollments": await self._rows(
                f"""SELECT e.id, e.course_slug, c.version AS course_version, e.enrolled_at,
                           e.lessons_done, e.attempt, e.questions_shown, e.best_score,
                           e.completed_at,
                           coalesce((SELECT json_agg(a ORDER BY a.attempt, a.position)
                                     FROM (SELECT attempt, position, choice, correct, answered_at
                                           FROM {s}.quiz_answers
                                           WHERE enrollment_id = e.id) a), '[]'::json) AS answers
                    FROM {s}.enrollments e JOIN {s}.courses c ON c.id = e.course_id
                    WHERE e.user_id = $1 ORDER BY e.id""",
                user_id,
            ),
            "topics": await self._rows(
                f"""SELECT id, slug, title, matrix_room_id, created_at FROM {s}.forum_topics
                    WHERE created_by = $1 ORDER BY id""",
                user_id,
            ),
            "comments": await self._rows(
                f"""SELECT c.id, t.slug AS topic, t.title AS topic_title, c.parent_id, c.body,
                           c.body_html, c.source, c.matrix_event_id, c.created_at, c.edited_at,
                           c.deleted_at,
                           coalesce((SELECT json_agg(v ORDER BY v.revision)
                                     FROM (SELECT revision, body, body_html, created_at
                                           FROM {s}.forum_comment_revisions
                                           WHERE comment_id = c.id) v), '[]'::json) AS revisions,
                           (SELECT count(*) FROM {s}.forum_votes
                            WHERE comment_id = c.id AND value = 1) AS upvotes,
                           (SELECT count(*) FROM {s}.forum_votes
                            WHERE comment_id = c.id AND value = -1) AS downvotes
                    FROM {s}.forum_comments c JOIN {s}.forum_topics t ON t.id = c.topic_id
                    WHERE c.author = $1 ORDER BY c.id""",
                user_id,
            ),
            "votes": await self._rows(
                f"""SELECT comment_id, value, matrix_event_id, voted_at FROM {s}.forum_votes
                    WHERE user_id = $1 ORDER BY voted_at""",
                user_id,
            ),
            "files": await self._rows(
                f"""SELECT id, cid, filename, mime, size, room_id, matrix_event_id, comment_id,
                           created_at, redacted_at
                    FROM {s}.file_uploads WHERE uploader = $1 ORDER BY id""",
                user_id,
            ),
            "files_waiting": await self._rows(
                f"""SELECT matrix_event_id, room_id, filename, declared_mime, declared_size,
                           attempts FROM {s}.media_queue WHERE uploader = $1""",
                user_id,
            ),
            "direct_room": await self._rows(
                f"SELECT room_id, created_at FROM {s}.direct_rooms WHERE user_id = $1", user_id
            ),
            "refused_knocks": await self._rows(
                f"""SELECT room_id, refused_at FROM {s}.refused_knocks WHERE user_id = $1
                    ORDER BY refused_at""",
                user_id,
            ),
            "audit": await self._rows(
                """SELECT id, occurred_at, actor, action, target, room_id, details
                   FROM global.audit_log
                   WHERE territory_code = $2 AND (actor = $1 OR target = $1)
                   ORDER BY occurred_at, id""",
                user_id,
                self.territory,
                db=self.global_db,
            ),
        }

    # --- erasure ------------------------------------------------------------------------------

    async def erase(self, user_id: str, pseudonym: str, comments: CommentPolicy) -> Erased:
        """Erase or pseudonymise every row about ``user_id``; call inside a transaction."""
        s, done = self.schema, Erased()
        done.api_comments = await self.db.fetchval(
            f"SELECT count(*) FROM {s}.forum_comments WHERE author = $1 AND source = 'api'",
            user_id,
        )
        if comments == "remove":
            rows = await self.db.fetch(
                f"""UPDATE {s}.forum_comments c SET body = '', body_html = NULL,
                        deleted_at = coalesce(c.deleted_at, now()), author = $2
                    FROM {s}.forum_topics t
                    WHERE c.author = $1 AND t.id = c.topic_id
                    RETURNING c.id, c.matrix_event_id, c.source, t.matrix_room_id""",
                user_id,
                pseudonym,
            )
            done.comments_removed = len(rows)
            ids = [r["id"] for r in rows]
            # The edits are events of their own, holding the text too: they are redacted as well.
            edits = await self.db.fetch(
                f"""DELETE FROM {s}.forum_comment_revisions v
                    WHERE v.comment_id = ANY($1::bigint[]) RETURNING v.comment_id,
                        v.matrix_event_id""",
                ids,
            )
            room_of = {r["id"]: (r["matrix_room_id"], r["source"]) for r in rows}
            events = [(r["id"], r["matrix_event_id"]) for r in rows]
            events += [(e["comment_id"], e["matrix_event_id"]) for e in edits]
            done.removed_events = sorted(
                {
                    (room_of[comment][0], event_id, room_of[comment][1])
                    for comment, event_id in events
                    if event_id and room_of[comment][0]
                }
            )
        else:
            done.comments_kept = _count(
                await self.db.execute(
                    f"UPDATE {s}.forum_comments SET author = $2 WHERE author = $1",
                    user_id,
                    pseudonym,
                )
            )
        done.topics = _count(
            await self.db.execute(
                f"UPDATE {s}.forum_topics SET created_by = $2 WHERE created_by = $1",
                user_id,
                pseudonym,
            )
        )
        done.votes = _count(
            await self.db.execute(f"DELETE FROM {s}.forum_votes WHERE user_id = $1", user_id)
        )
        done.answers = _count(
            await self.db.execute(
                f"""DELETE FROM {s}.quiz_answers WHERE enrollment_id IN
                        (SELECT id FROM {s}.enrollments WHERE user_id = $1)""",
                user_id,
            )
        )
        done.enrollments = _count(
            await self.db.execute(f"DELETE FROM {s}.enrollments WHERE user_id = $1", user_id)
        )
        revoked = await self.db.fetch(
            f"""UPDATE {s}.user_badges
                SET revoked_at = now(), revoked_by = 'erasure',
                    revoke_reason = 'the holder asked to be forgotten'
                WHERE user_id = $1 AND revoked_at IS NULL RETURNING id, badge_slug""",
            user_id,
        )
        done.revoked_awards = [(r["id"], r["badge_slug"]) for r in revoked]
        done.awards_revoked = len(revoked)
        # The award rows stay (their credentials must keep saying "revoked") but no longer name
        # the member; nor do the awards they gave or revoked as an issuer.
        await self.db.execute(
            f"""UPDATE {s}.user_badges SET
                    user_id = CASE WHEN user_id = $1 THEN $2 ELSE user_id END,
                    awarded_by = CASE WHEN awarded_by = $1 THEN $2 ELSE awarded_by END,
                    revoked_by = CASE WHEN revoked_by = $1 THEN $2 ELSE revoked_by END
                WHERE user_id = $1 OR awarded_by = $1 OR revoked_by = $1""",
            user_id,
            pseudonym,
        )
        done.sole_cids = [
            row["cid"]
            for row in await self.db.fetch(
                f"""SELECT DISTINCT u.cid FROM {s}.file_uploads u
                    WHERE u.uploader = $1
                      AND NOT EXISTS (SELECT 1 FROM {s}.file_uploads o WHERE o.cid = u.cid
                                      AND o.uploader <> $1 AND o.redacted_at IS NULL)
                      AND NOT EXISTS (SELECT 1 FROM {s}.course_materials m
                                      WHERE m.cid = u.cid)""",
                user_id,
            )
        ]
        done.files = _count(
            await self.db.execute(
                f"""UPDATE {s}.file_uploads SET uploader = $2, filename = $3,
                        redacted_at = coalesce(redacted_at, now())
                    WHERE uploader = $1""",
                user_id,
                pseudonym,
                ERASED_FILENAME,
            )
        )
        await self.db.execute(
            f"UPDATE {s}.media_objects SET pinned = false WHERE cid = ANY($1::text[])",
            done.sole_cids,
        )
        other = 0
        for statement in (
            f"DELETE FROM {s}.media_queue WHERE uploader = $1",
            f"DELETE FROM {s}.user_profiles WHERE matrix_user_id = $1",
            f"DELETE FROM {s}.direct_rooms WHERE user_id = $1",
            f"DELETE FROM {s}.refused_knocks WHERE user_id = $1",
            f"DELETE FROM {s}.erasure_requests WHERE user_id = $1",
            # What the homeserver sent us from them, once handled.
            f"DELETE FROM {s}.as_inbox WHERE event->>'sender' = $1 AND status <> 'pending'",
            # Effects done and events published that named them (the bus keeps its own copy).
            f"""DELETE FROM {s}.effects WHERE state = 'done'
                    AND strpos(payload::text, to_json($1::text)::text) > 0""",
            f"""DELETE FROM {s}.outbox WHERE published_at IS NOT NULL
                    AND strpos(payload, to_json($1::text)::text) > 0""",
            f"DELETE FROM {s}.dead_letters WHERE strpos(payload, to_json($1::text)::text) > 0",
        ):
            other += _count(await self.db.execute(statement, user_id))
        done.other_rows = other
        return done

    async def erase_shared(self, user_id: str, pseudonym: str, details: dict[str, Any]) -> int:
        """The shared part of an erasure: the audit log's entries now name the pseudonym, the
        member's global user row goes, and ``member.erased`` is recorded (once per pseudonym, so
        running it again changes nothing). Returns how many audit entries changed."""
        return int(
            await self.global_db.fetchval(
                "SELECT global.erase_member($1, $2, $3, $4::jsonb)",
                self.territory,
                user_id,
                pseudonym,
                json.dumps(details),
            )
        )

    # --- confirmation words -------------------------------------------------------------------

    async def ask_erasure(self, user_id: str, word: str, valid_seconds: float) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.erasure_requests (user_id, word, expires_at)
                VALUES ($1, $2, now() + make_interval(secs => $3))
                ON CONFLICT (user_id) DO UPDATE SET word = EXCLUDED.word, asked_at = now(),
                    expires_at = EXCLUDED.expires_at""",
            user_id,
            word,
            valid_seconds,
        )

    async def pending_word(self, user_id: str) -> str | None:
        """The word asked for, while it is valid."""
        return await self.db.fetchval(
            f"""SELECT word FROM {self.schema}.erasure_requests
                WHERE user_id = $1 AND expires_at > now()""",
            user_id,
        )

    # --- retention ----------------------------------------------------------------------------

    async def purge_audit(self, keep_days: int) -> int:
        return int(
            await self.global_db.fetchval(
                "SELECT global.purge_audit_log($1, $2)", self.territory, keep_days
            )
        )

    async def purge_comments(self, keep_days: int) -> int:
        """Comments older than ``keep_days``: their text and revisions go (the row stays, so
        replies and attachments keep their place), as for a removed comment."""
        async with self.db.transaction():
            rows = await self.db.fetch(
                f"""UPDATE {self.schema}.forum_comments
                    SET body = '', body_html = NULL, deleted_at = coalesce(deleted_at, now())
                    WHERE created_at < now() - make_interval(days => $1)
                      AND (body <> '' OR body_html IS NOT NULL)
                    RETURNING id""",
                keep_days,
            )
            ids = [r["id"] for r in rows]
            await self.db.execute(
                f"""DELETE FROM {self.schema}.forum_comment_revisions
                    WHERE comment_id = ANY($1::bigint[])""",
                ids,
            )
        return len(ids)

    async def purge_answers(self, keep_days: int) -> int:
        return _count(
            await self.db.execute(
                f"""DELETE FROM {self.schema}.quiz_answers
                    WHERE answered_at < now() - make_interval(days => $1)""",
                keep_days,
            )
        )

    async def purge_handled(self, keep_days: int) -> int:
        """The operational copies: homeserver events handled, their transactions, effects done
        and events published, once older than ``keep_days`` (they hold what members sent and
        were sent; nothing needs them after a retry can no longer come)."""
        s, removed = self.schema, 0
        for statement in (
            f"""DELETE FROM {s}.as_inbox WHERE status = 'done'
                    AND handled_at < now() - make_interval(days => $1)""",
            f"""DELETE FROM {s}.as_transactions WHERE completed_at IS NOT NULL
                    AND completed_at < now() - make_interval(days => $1)""",
            f"""DELETE FROM {s}.effects WHERE state = 'done'
                    AND done_at < now() - make_interval(days => $1)""",
            f"""DELETE FROM {s}.outbox WHERE published_at IS NOT NULL
                    AND published_at < now() - make_interval(days => $1)""",
        ):
            removed += _count(await self.db.execute(statement, keep_days))
        return removed
