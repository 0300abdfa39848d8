"""!mod kick|ban|unban @user [reason...] and !mod audit [n] (room moderators)."""

from __future__ import annotations

from mautrix.types import RoomID, UserID

from core.effects import Effects
from core.errors import Forbidden
from core.events import EventEmitter
from core.html import code, escape
from core.matrix import MatrixConnection
from db.repositories.audit import AuditLog

from .decorators import argument, command, requires
from .parsers import user_id
from .permissions import Permission
from .router import CommandContext


def _count(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 50:
        raise ValueError("a number from 1 to 50")
    return int(value)


class ModerationCommands:
    def __init__(
        self, matrix: MatrixConnection, effects: Effects, audit: AuditLog, events: EventEmitter
    ) -> None:
        self.matrix = matrix
        self.effects = effects
        self.audit = audit
        self.events = events

    async def _act(
        self, ctx: CommandContext, action: str, user: UserID, reason: str | None
    ) -> None:
        # The bot acts with its own power: the sender must be entitled to the act themselves.
        levels = await self.matrix.effective_power_levels(RoomID(ctx.room_id))
        mine = levels.get_user_level(UserID(ctx.sender))
        theirs = levels.get_user_level(user)
        needed = levels.kick if action == "kick" else levels.ban
        if mine < needed:
            raise Forbidden(
                f"You may not {action} in this room: it needs power level {needed}, you have {mine}."
            )
        if action != "unban" and theirs >= mine:
            raise Forbidden(
                f"You may not {action} {user}: their power level ({theirs}) is not below yours "
                f"({mine})."
            )
        why = f"{reason or 'no reason given'} (by {ctx.sender})"
        await self.effects.membership(action, ctx.room_id, user, why)
        await self.audit.record(
            ctx.sender,
            f"moderation.{action}",
            target=user,
            room_id=ctx.room_id,
            details={"reason": reason},
        )
        await self.events.emit(
            "moderation.action_taken",
            {"action": action, "room_id": ctx.room_id, "user_id": user, "reason": reason},
            actor=ctx.sender,
        )
        done = {"kick": "Removed", "ban": "Banned", "unban": "Unbanned"}[action]
        await ctx.reply(
            f"{done} {escape(user)}." + (f" Reason: {escape(reason)}" if reason else "")
        )

    @command("mod kick", help="Remove someone from this room")
    @requires(Permission.ROOM_MODERATOR)
    @argument("user", parser=user_id, metavar="@user")
    @argument("reason", rest=True, required=False)
    async def kick(self, ctx: CommandContext, user: UserID, reason: str | None) -> None:
        await self._act(ctx, "kick", user, reason)

    @command("mod ban", help="Ban someone from this room")
    @requires(Permission.ROOM_MODERATOR)
    @argument("user", parser=user_id, metavar="@user")
    @argument("reason", rest=True, required=False)
    async def ban(self, ctx: CommandContext, user: UserID, reason: str | None) -> None:
        await self._act(ctx, "ban", user, reason)

    @command("mod unban", help="Lift a ban in this room")
    @requires(Permission.ROOM_MODERATOR)
    @argument("user", parser=user_id, metavar="@user")
    @argument("reason", rest=True, required=False)
    async def unban(self, ctx: CommandContext, user: UserID, reason: str | None) -> None:
        await self._act(ctx, "unban", user, reason)

    @command("mod audit", help="The latest audit log entries of this room")
    @requires(Permission.ROOM_MODERATOR)
    @argument("n", parser=_count, required=False, metavar="n")
    async def audit_log(self, ctx: CommandContext, n: int | None) -> None:
        entries = await self.audit.recent(n or 10, room_id=ctx.room_id)
        # Reading the log is itself recorded (after the read: it is not among what it shows).
        await self.audit.record(
            ctx.sender,
            "audit.viewed",
            room_id=ctx.room_id,
            details={"entries": len(entries), "via": "chat"},
        )
        if not entries:
            await ctx.reply("Nothing in the audit log for this room yet.")
            return
        items = "".join(
            f"<li>{e.occurred_at:%Y-%m-%d %H:%M} {code(e.action)} by {escape(e.actor)}"
            + (f" → {escape(e.target)}" if e.target else "")
            + (f": {escape(str(e.details.get('reason')))}" if e.details.get("reason") else "")
            + "</li>"
            for e in entries
        )
        await ctx.reply(f"<strong>Audit log</strong><ul>{items}</ul>")
