"""!mod kick|ban|unban @user [reason...] and !mod audit [n] (room moderators)."""

from __future__ import annotations

from mautrix.errors import MatrixError
from mautrix.types import RoomID, UserID

from core.errors import Refused
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
    def __init__(self, matrix: MatrixConnection, audit: AuditLog, events: EventEmitter) -> None:
        self.matrix = matrix
        self.audit = audit
        self.events = events

    async def _act(
        self, ctx: CommandContext, action: str, user: UserID, reason: str | None
    ) -> None:
        bot, room = self.matrix.bot, RoomID(ctx.room_id)
        why = f"{reason or 'no reason given'} (by {ctx.sender})"
        try:
            if action == "kick":
                await bot.kick_user(room, user, reason=why)
            elif action == "ban":
                await bot.ban_user(room, user, reason=why)
            else:
                await bot.unban_user(room, user, reason=why)
        except MatrixError as exc:
            raise Refused(f"I could not {action} {user}: {exc}") from exc
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
