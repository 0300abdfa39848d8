"""Run every migration this process owns: global, public and its territory's schema."""

from __future__ import annotations

from typing import Literal
from urllib.parse import unquote, urlsplit

import asyncpg

from .database import Database
from .migrations import Scope, check_schema_version, migrate_schema, newest_version
from .roles import ensure_login_role, grant_shared, hand_over_schema
from .territory import TerritoryCode, territory_schema


async def migrate_all(
    global_db: Database, territory_db: Database, code: TerritoryCode
) -> dict[str, list[int]]:
    """Migrate the global, public and territory schemas; returns the versions applied to each.

    A schema already up to date is not touched (a territory's role may not change the shared
    schemas; it only reads their version). Raises DatabaseTooNew, before changing any schema, when
    one of them records a version newer than this code has, and MigrationNeedsAdmin when the role
    may not apply what is pending.
    """
    schema = territory_schema(code)
    schemas: list[tuple[Scope, str, Database]] = [
        ("global", "global", global_db),
        ("public", "public", global_db),
        ("territory", schema, territory_db),
    ]
    recorded: dict[str, int] = {}
    for scope, name, db in schemas:
        async with db.acquire() as conn:
            recorded[name] = await check_schema_version(conn, scope, name)
    applied: dict[str, list[int]] = {}
    for scope, name, db in schemas:
        if recorded[name] == newest_version(scope):
            applied[name] = []
            continue
        async with db.acquire() as conn:
            applied[name] = await migrate_schema(conn, scope, name)
    return applied


def on_same_server(a: str, b: str) -> bool:
    """Whether two DSNs name the same database on the same server (whatever their roles)."""
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.hostname, pa.port or 5432, pa.path) == (pb.hostname, pb.port or 5432, pb.path)


_SHARED: tuple[tuple[Literal["global", "public"], str], ...] = (
    ("global", "global"),
    ("public", "public"),
)


async def provision_territory(
    admin_dsn: str, code: TerritoryCode, role_dsn: str, *, same_server: bool = True
) -> dict[str, list[int]]:
    """As the admin role: migrate the shared schemas, then give ``code`` the login role named in
    ``role_dsn`` (with its password), its grants and its schema. Returns what was applied.

    When ``role_dsn`` names the admin role itself (one role for everything), only the migrations
    run. With ``same_server`` False the territory schema is on a server of its own, where its role
    is expected to own the database; only the shared grants are made here.
    """
    role_parts = urlsplit(role_dsn)
    admin_parts = urlsplit(admin_dsn)
    conn = await asyncpg.connect(admin_dsn)
    try:
        applied: dict[str, list[int]] = {}
        for scope, name in _SHARED:
            await check_schema_version(conn, scope, name)
        for scope, name in _SHARED:
            applied[name] = await migrate_schema(conn, scope, name)
        role = role_parts.username
        if role and role != admin_parts.username:
            await ensure_login_role(conn, role, unquote(role_parts.password or "") or None)
            await grant_shared(conn, code, role)
            if same_server:
                await hand_over_schema(conn, code, role)
        return applied
    finally:
        await conn.close()
