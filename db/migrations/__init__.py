"""Numbered migrations, run for the global and public schemas and for every territory schema.

A migration is never edited once shipped: add a new vNNN module and list it below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

import asyncpg

from . import (
    v001_foundation,
    v002_event_spine,
    v003_transaction_digest,
    v004_courses_and_badges,
    v005_gated_rooms,
    v006_forum,
    v007_media,
    v008_course_materials,
)

Scope = Literal["global", "public", "territory"]


@dataclass(frozen=True)
class Migration:
    version: int
    scope: Scope
    name: str
    # global/public migrations take (conn); territory migrations take (conn, schema).
    apply: Callable[..., Awaitable[None]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "global", "foundation", v001_foundation.upgrade_global),
    Migration(1, "territory", "foundation", v001_foundation.upgrade_territory),
    Migration(2, "territory", "event spine", v002_event_spine.upgrade_territory),
    Migration(3, "territory", "transaction digest", v003_transaction_digest.upgrade_territory),
    Migration(1, "public", "badge definitions", v004_courses_and_badges.upgrade_public),
    Migration(4, "territory", "courses and badges", v004_courses_and_badges.upgrade_territory),
    Migration(5, "territory", "gated rooms", v005_gated_rooms.upgrade_territory),
    Migration(6, "territory", "forum", v006_forum.upgrade_territory),
    Migration(7, "territory", "media", v007_media.upgrade_territory),
    Migration(8, "territory", "course materials", v008_course_materials.upgrade_territory),
)


def migrations_for(scope: Scope) -> list[Migration]:
    found = sorted((m for m in MIGRATIONS if m.scope == scope), key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{scope} migrations are not numbered 1..n: {versions}")
    return found


async def migrate_schema(conn: asyncpg.Connection, scope: Scope, schema: str) -> list[int]:
    """Bring one schema up to date; returns the versions applied. Safe to run concurrently."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"unityplan:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                    version integer PRIMARY KEY,
                    name text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        current = await conn.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"
        )
        for migration in migrations_for(scope):
            if migration.version <= current:
                continue
            if scope == "territory":
                await migration.apply(conn, schema)
            else:
                await migration.apply(conn)
            await conn.execute(
                f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied
