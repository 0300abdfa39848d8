"""Run every migration this process owns: global, public and its territory's schema."""

from __future__ import annotations

from .database import Database
from .migrations import Scope, check_schema_version, migrate_schema
from .territory import TerritoryCode, territory_schema


async def migrate_all(
    global_db: Database, territory_db: Database, code: TerritoryCode
) -> dict[str, list[int]]:
    """Migrate the global, public and territory schemas; returns the versions applied to each.

    Raises DatabaseTooNew, before changing any schema, when one of them records a version newer
    than this code has.
    """
    schema = territory_schema(code)
    schemas: list[tuple[Scope, str, Database]] = [
        ("global", "global", global_db),
        ("public", "public", global_db),
        ("territory", schema, territory_db),
    ]
    for scope, name, db in schemas:
        async with db.acquire() as conn:
            await check_schema_version(conn, scope, name)
    applied: dict[str, list[int]] = {}
    for scope, name, db in schemas:
        async with db.acquire() as conn:
            applied[name] = await migrate_schema(conn, scope, name)
    return applied
