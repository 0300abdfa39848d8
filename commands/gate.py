"""!gate require|show|off: badge-gated rooms (room moderators)."""

from __future__ import annotations

from mautrix.types import RoomID

from core.html import code, escape
from db.repositories.gates import Mode
from workflows.gate import GateService

from .decorators import argument, command, option, requires
from .parsers import slug, slug_list
from .permissions import Permission
from .router import CommandContext


class GateCommands:
    def __init__(self, gate: GateService) -> None:
        self.gate = gate

    @command(
        "gate require", help="Let only holders of these badges in (the room becomes knock-only)"
    )
    @requires(Permission.ROOM_MODERATOR)
    @argument("badge", parser=slug)
    @argument(
        "more",
        parser=lambda text: slug_list(text.replace(" ", ",")),
        required=False,
        rest=True,
        metavar="<badge>...",
    )
    @option("--any")
    async def require(
        self, ctx: CommandContext, badge: str, more: tuple[str, ...] | None, any: bool
    ) -> None:
        badges = tuple(dict.fromkeys((badge, *(more or ()))))
        mode: Mode = "any" if any else "all"
        gate, removed = await self.gate.require(RoomID(ctx.room_id), badges, mode, ctx.sender)
        needs = (" or " if mode == "any" else " and ").join(code(b) for b in gate.badges)
        gone = (
            f" Removed {len(removed)} member(s) without them: "
            + ", ".join(escape(u) for u in removed)
            + "."
            if removed
            else ""
        )
        await ctx.reply(
            f"This room now requires {needs}. It is knock-only: holders who knock are invited "
            f"at once, others are told how to earn the badge.{gone}"
        )

    @command("gate show", help="Which badges this room requires")
    async def show(self, ctx: CommandContext) -> None:
        gate = await self.gate.gates.get(ctx.room_id)
        if gate is None:
            await ctx.reply("This room is not badge-gated.")
            return
        joiner = " or " if gate.mode == "any" else " and "
        await ctx.reply(
            f"This room requires {joiner.join(code(b) for b in gate.badges)} "
            f"(set by {escape(gate.set_by)})."
        )

    @command("gate off", help="Remove the badge requirement and restore the join rule")
    @requires(Permission.ROOM_MODERATOR)
    async def off(self, ctx: CommandContext) -> None:
        gate = await self.gate.off(RoomID(ctx.room_id), ctx.sender)
        await ctx.reply(
            f"This room no longer requires badges; its join rule is "
            f"{code(gate.previous_join_rule)} again."
        )
