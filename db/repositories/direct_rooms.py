"""The bot's direct-message room with each user (for reminders and notices)."""

from __future__ import annotations

from ..database import Database
from ..territory import TerritoryCode, territory_schema


class DirectRoomRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    async def get(self, user_id: str) -> str | None:
        return await self.db.fetchval(
            f"SELECT room_id FROM {self.schema}.direct_rooms WHERE user_id = $1", user_id
        )

    async def set(self, user_id: str, room_id: str) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.direct_rooms (user_id, room_id) VALUES ($1, $2)
                ON CONFLICT (user_id) DO UPDATE SET room_id = EXCLUDED.room_id""",
            user_id,
            room_id,
        )
