"""Run every migration this process owns: global, public and its territory's schema."""

from __future__ import annotations

from .database import Database
from .migrations import migrate_schema
from .territory import TerritoryCode, territory_schema


async def migrate_all(
    global_db: Database, territory_db: Database, code: TerritoryCode
) -> dict[str, list[int]]:
    applied: dict[str, list[int]] = {}
    async with global_db.acquire() as conn:
        applied["global"] = await migrate_schema(conn, "global", "global")
        applied["public"] = await migrate_schema(conn, "public", "public")
    schema = territory_schema(code)
    async with territory_db.acquire() as conn:
        applied[schema] = await migrate_schema(conn, "territory", schema)
    return applied
