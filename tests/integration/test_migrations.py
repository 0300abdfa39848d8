"""Migrations on fresh databases of the stack's real PostgreSQL: up to date once, and a database
newer than this code is refused before anything changes."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from appservice.stack.local import LocalStack
from db.database import Database
from db.migrations import DatabaseTooNew, Scope, migrate_schema, migrations_for, newest_version
from db.setup import migrate_all
from db.territory import territory_code, territory_schema

CODE = territory_code("zz_migrations")
SCHEMA = territory_schema(CODE)


@dataclass
class Fresh:
    """An empty global database and an empty territory database, as with database.territory_url."""

    global_db: Database
    territory_db: Database

    def db_of(self, scope: Scope) -> Database:
        return self.territory_db if scope == "territory" else self.global_db


@pytest_asyncio.fixture
async def fresh(stack: LocalStack) -> AsyncIterator[Fresh]:
    names = [f"unityplan_migrations_{secrets.token_hex(4)}_{part}" for part in ("g", "t")]
    admin = await asyncpg.connect(stack.postgres.dsn("postgres"))
    databases: list[Database] = []
    try:
        for name in names:
            await admin.execute(f"CREATE DATABASE {name}")
        databases = [
            Database(stack.postgres.dsn(name), name=part, max_size=2)
            for name, part in zip(names, ("global", "territory"), strict=True)
        ]
        for db in databases:
            await db.start()
        yield Fresh(*databases)
    finally:
        for db in databases:
            await db.stop()
        for name in names:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


async def _state(fresh: Fresh) -> dict[str, Any]:
    """Every relation of the migrated schemas, and what each schema_migrations records."""
    state: dict[str, Any] = {}
    for db, schemas in ((fresh.global_db, ["global", "public"]), (fresh.territory_db, [SCHEMA])):
        for schema in schemas:
            state[f"{db.name}:{schema}:relations"] = [
                tuple(row)
                for row in await db.fetch(
                    """SELECT c.relname, c.relkind FROM pg_class c
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname = $1 ORDER BY c.relname""",
                    schema,
                )
            ]
            if await db.fetchval("SELECT to_regclass($1)", f"{schema}.schema_migrations"):
                state[f"{db.name}:{schema}:recorded"] = [
                    tuple(row)
                    for row in await db.fetch(
                        f"SELECT version, name, applied_at FROM {schema}.schema_migrations "
                        "ORDER BY version"
                    )
                ]
    return state


async def test_a_fresh_database_migrates_to_the_newest_versions_and_then_applies_nothing(
    fresh: Fresh,
) -> None:
    applied = await migrate_all(fresh.global_db, fresh.territory_db, CODE)
    assert applied == {
        "global": list(range(1, newest_version("global") + 1)),
        "public": list(range(1, newest_version("public") + 1)),
        SCHEMA: list(range(1, newest_version("territory") + 1)),
    }
    assert applied[SCHEMA] == [m.version for m in migrations_for("territory")]

    # What databases migrated before the per-scope layout record, so they need no re-run.
    recorded = {
        schema: [
            tuple(row)
            for row in await db.fetch(
                f"SELECT version, name FROM {schema}.schema_migrations ORDER BY version"
            )
        ]
        for db, schema in (
            (fresh.global_db, "global"),
            (fresh.global_db, "public"),
            (fresh.territory_db, SCHEMA),
        )
    }
    assert recorded["global"][:1] == [(1, "foundation")]
    assert recorded["public"][:1] == [(1, "badge definitions")]
    assert recorded[SCHEMA][:8] == [
        (1, "foundation"),
        (2, "event spine"),
        (3, "transaction digest"),
        (4, "courses and badges"),
        (5, "gated rooms"),
        (6, "forum"),
        (7, "media"),
        (8, "course materials"),
    ]
    # Each schema lives in its own database: global and public in one, the territory in the other.
    assert await fresh.global_db.fetchval("SELECT to_regnamespace($1)", SCHEMA) is None
    assert await fresh.territory_db.fetchval("SELECT to_regnamespace('global')") is None
    assert (
        await fresh.territory_db.fetchval("SELECT to_regclass('public.badge_definitions')") is None
    )

    before = await _state(fresh)
    assert await migrate_all(fresh.global_db, fresh.territory_db, CODE) == {
        "global": [],
        "public": [],
        SCHEMA: [],
    }
    assert await _state(fresh) == before


@pytest.mark.parametrize(
    ("scope", "schema"), [("territory", SCHEMA), ("global", "global"), ("public", "public")]
)
async def test_a_schema_newer_than_the_code_is_refused_and_nothing_changes(
    fresh: Fresh, scope: Scope, schema: str
) -> None:
    await migrate_all(fresh.global_db, fresh.territory_db, CODE)
    known = newest_version(scope)
    await fresh.db_of(scope).execute(
        f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, 'from the future')",
        known + 1,
    )
    before = await _state(fresh)

    with pytest.raises(DatabaseTooNew) as refused:
        await migrate_all(fresh.global_db, fresh.territory_db, CODE)
    assert str(refused.value) == (
        f"The {schema} schema is at version {known + 1}, newer than this code knows ({known}): "
        "upgrade unityplan, or restore a backup made by this version."
    )
    assert (refused.value.schema, refused.value.version, refused.value.known) == (
        schema,
        known + 1,
        known,
    )
    assert await _state(fresh) == before


async def test_the_refusal_comes_before_any_schema_is_migrated(fresh: Fresh) -> None:
    # Only the territory schema exists, at a version from the future; global and public are empty.
    future = newest_version("territory") + 1
    await fresh.territory_db.execute(
        f"""CREATE SCHEMA {SCHEMA};
            CREATE TABLE {SCHEMA}.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now());
            INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES ({future}, 'future')"""
    )
    before = await _state(fresh)
    with pytest.raises(DatabaseTooNew, match=rf"^The {SCHEMA} schema is at version {future},"):
        await migrate_all(fresh.global_db, fresh.territory_db, CODE)
    # global and public had every migration pending, yet none ran: not even their schemas exist.
    assert await fresh.global_db.fetchval("SELECT to_regnamespace('global')") is None
    assert await fresh.global_db.fetchval("SELECT to_regclass('public.schema_migrations')") is None
    assert await _state(fresh) == before


async def test_migrate_schema_itself_refuses_and_rolls_back_whole(fresh: Fresh) -> None:
    # Without migrate_all's check first: the one under the schema's advisory lock refuses too.
    future = newest_version("territory") + 1
    async with fresh.territory_db.acquire() as conn:
        await conn.execute(f"CREATE SCHEMA {SCHEMA}")
        await conn.execute(
            f"CREATE TABLE {SCHEMA}.schema_migrations "
            "(version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz)"
        )
        await conn.execute(
            f"INSERT INTO {SCHEMA}.schema_migrations (version, name) VALUES ($1, 'future')", future
        )
        with pytest.raises(DatabaseTooNew):
            await migrate_schema(conn, "territory", SCHEMA)
        assert not conn.is_in_transaction()
        # The advisory lock went with the transaction: another session takes it at once.
        async with fresh.territory_db.pool.acquire() as other, other.transaction():
            assert await other.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext($1))", f"unityplan:{SCHEMA}"
            )
        assert await conn.fetchval(f"SELECT count(*) FROM {SCHEMA}.schema_migrations") == 1
        tables = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", SCHEMA
        )
        assert [row["table_name"] for row in tables] == ["schema_migrations"]
