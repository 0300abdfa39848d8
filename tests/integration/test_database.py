"""Migrations, the territory registry and the audit log on the real PostgreSQL."""

from __future__ import annotations

import asyncio
import shutil

import asyncpg
import pytest

from appservice.app import Platform
from appservice.stack.local import LocalStack
from appservice.stack.postgres import PostgresServer
from appservice.stack.process import free_port
from db.database import Database
from db.migrations import migrations_for
from db.relocation import Relocation, RelocationRefused, check
from db.repositories.territories import dsn_without_password
from db.setup import migrate_all
from db.territory import InvalidTerritoryCode, territory_code, territory_schema


@pytest.mark.parametrize(
    "bad", ["DK", "d", "dk-1", "dk; DROP TABLE x", "1dk", "a" * 32, "", "dk\n"]
)
def test_bad_territory_codes_never_reach_sql(bad: str) -> None:
    with pytest.raises(InvalidTerritoryCode):
        territory_schema(bad)


async def test_migrations_are_idempotent_and_concurrent_safe(stack: LocalStack) -> None:
    code = territory_code("zz_test")
    # As the admin: the territory dk's role may not create another territory's schema.
    admin = Database(stack.postgres.dsn(), name="admin", max_size=3)
    await admin.start()
    try:
        results = await asyncio.gather(*(migrate_all(admin, admin, code) for _ in range(3)))
        applied = [r[territory_schema(code)] for r in results]
        versions = [m.version for m in migrations_for("territory")]
        assert sorted(applied, key=len) == [[], [], versions]
        again = await migrate_all(admin, admin, code)
        assert again == {"global": [], "public": [], "territory_zz_test": []}
        tables = {
            row["table_name"]
            for row in await admin.fetch(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'territory_zz_test'"
            )
        }
    finally:
        await admin.stop()
    assert {"as_transactions", "as_inbox", "user_profiles", "schema_migrations"} <= tables


async def test_territory_is_registered_without_password(platform: Platform) -> None:
    territory = await platform.territories.get(platform.territory)
    assert territory is not None
    assert territory.server_name == platform.config.homeserver.domain
    assert territory.settings["allow_cross_border"] is True
    assert "@" in territory.database_dsn
    assert (
        ":" + platform.config.database.url.split(":")[2].split("@")[0] + "@"
        not in territory.database_dsn
    )
    assert dsn_without_password("postgresql://u:pw@h:5/db") == "postgresql://u@h:5/db"


async def test_audit_log_is_append_only(stack: LocalStack, platform: Platform) -> None:
    entry_id = await platform.audit.record(
        "@admin:dk.localhost", "test.checked", target="x", details={"n": 1}
    )
    recent = await platform.audit.recent(5)
    assert recent[0].id == entry_id and recent[0].details == {"n": 1}
    # The territory's role may not even try; the admin who may is stopped by the trigger.
    for statement in (
        "DELETE FROM global.audit_log WHERE id = $1",
        "UPDATE global.audit_log SET action = 'x' WHERE id = $1",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await platform.global_db.execute(statement, entry_id)
        admin = await asyncpg.connect(stack.postgres.dsn())
        try:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await admin.execute(statement, entry_id)
        finally:
            await admin.close()


async def test_nested_transactions_join_and_roll_back_together(platform: Platform) -> None:
    db: Database = platform.global_db
    await db.execute("CREATE TABLE IF NOT EXISTS territory_dk.nest_test (v text)")
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await db.execute("INSERT INTO territory_dk.nest_test VALUES ('outer')")
            async with db.transaction():
                await db.execute("INSERT INTO territory_dk.nest_test VALUES ('inner')")
            raise RuntimeError("roll back both")
    assert await db.fetchval("SELECT count(*) FROM territory_dk.nest_test") == 0
    await db.execute("DROP TABLE territory_dk.nest_test")


async def test_after_commit_waits_for_the_outermost_transaction(platform: Platform) -> None:
    db = platform.territory_db
    ran: list[str] = []
    db.after_commit(lambda: ran.append("outside"))
    assert ran == ["outside"]  # no transaction: at once
    async with db.transaction():
        async with db.transaction():
            db.after_commit(lambda: ran.append("inner"))
        assert ran == ["outside"]  # the inner block joined; nothing committed yet
        await db.execute("SELECT 1")
    assert ran == ["outside", "inner"]
    with pytest.raises(RuntimeError):
        async with db.transaction():
            db.after_commit(lambda: ran.append("rolled back"))
            raise RuntimeError("boom")
    assert ran[-1] == "rolled back"  # invalidations are safe after a rollback too


async def test_a_move_from_a_server_without_logical_replication_is_refused(
    stack: LocalStack,
) -> None:
    """`territory migrate` checks the source first: a server at wal_level = replica (PostgreSQL's
    default) is refused with what to set, before anything is created on either server."""
    root = stack.root / "replica-only"  # where the stack's unprivileged PostgreSQL user may go
    source = PostgresServer(
        root / "data",
        free_port(),
        log_path=root / "pg.log",
        fast=True,
        name="postgres-replica-only",
        wal_level="replica",
    )
    await source.start()
    try:
        move = Relocation(
            territory_code("dk"),
            source_admin=source.dsn(),
            target_admin=stack.postgres.dsn(),
            role_dsn=stack.postgres.dsn(),
        )
        with pytest.raises(RelocationRefused, match="wal_level = replica; set wal_level = logical"):
            await check(move)
        target = await asyncpg.connect(stack.postgres.dsn())
        try:
            assert not await target.fetchval(
                "SELECT count(*) FROM pg_subscription WHERE subname = $1", move.name
            )
        finally:
            await target.close()
    finally:
        await source.stop()
        shutil.rmtree(root, ignore_errors=True)
