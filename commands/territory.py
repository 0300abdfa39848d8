"""!territory info: what territory this bot serves."""

from __future__ import annotations

from core.errors import NotFound
from core.html import code, escape
from db.repositories.territories import TerritoryRepository
from db.territory import TerritoryCode

from .decorators import command
from .router import CommandContext


class TerritoryCommands:
    def __init__(
        self, territories: TerritoryRepository, code: TerritoryCode, bot_user_id: str
    ) -> None:
        self.territories = territories
        self.code = code
        self.bot_user_id = bot_user_id

    @command("territory info", help="Show this territory: code, name, homeserver and settings")
    async def info(self, ctx: CommandContext) -> None:
        territory = await self.territories.get(self.code)
        if territory is None:
            raise NotFound(f"Territory {self.code} is not in the registry yet.")
        cross = "yes" if territory.settings.get("allow_cross_border") else "no"
        residency = territory.settings.get("data_residency") or "not set"
        await ctx.reply(
            f"<strong>{escape(territory.name)}</strong> — territory {code(territory.code)}<ul>"
            f"<li>Homeserver: {code(territory.server_name)}</li>"
            f"<li>Bot: {code(self.bot_user_id)}</li>"
            f"<li>Data residency: {escape(str(residency))}</li>"
            f"<li>Members of other territories may join cross-territory rooms: {cross}</li>"
            "</ul>"
        )
