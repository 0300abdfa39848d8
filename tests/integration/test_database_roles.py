"""Least privilege in PostgreSQL: the territory's appservice logs in as its own role, which writes
only its own rows of the shared schemas and cannot reach another territory's schema."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from appservice.stack.local import LocalStack
from db.database import Database
from db.migrations import MigrationNeedsAdmin
from db.setup import migrate_all, provision_territory
from db.territory import territory_code


@pytest_asyncio.fixture
async def role(stack: LocalStack) -> AsyncIterator[asyncpg.Connection]:
    """A connection as the territory dk's role, exactly what its appservice uses."""
    conn = await asyncpg.connect(stack.database_url)
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def admin(stack: LocalStack) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(stack.postgres.dsn())
    yield conn
    await conn.close()


@pytest_asyncio.fixture
async def neighbour(stack: LocalStack, admin: asyncpg.Connection) -> str:
    """Another territory in the same database, registered and provisioned by the admin."""
    code = f"n{secrets.token_hex(3)}"
    await admin.execute(
        """INSERT INTO global.territories (code, name, server_name, homeserver_url, database_dsn)
           VALUES ($1, 'Neighbour', $1 || '.example', 'https://' || $1, 'postgresql://x@y/z')""",
        code,
    )
    dsn = stack.postgres.dsn(user=f"territory_{code}", password=secrets.token_urlsafe(12))
    await provision_territory(stack.postgres.dsn(), territory_code(code), dsn)
    await admin.execute(f"CREATE TABLE territory_{code}.secrets (v text)")
    await admin.execute(f"INSERT INTO territory_{code}.secrets VALUES ('theirs')")
    await admin.execute(
        """INSERT INTO public.badge_definitions (slug, name, defined_in, defined_by)
           VALUES ($1, 'Theirs', $2, '@a:' || $2)""",
        f"{code}-badge",
        code,
    )
    await admin.execute(
        "INSERT INTO global.audit_log (territory_code, actor, action) VALUES ($1, '@a:x', 'x')",
        code,
    )
    return code


async def test_the_appservice_runs_as_its_territory_role(stack: LocalStack) -> None:
    platform = stack.platform
    assert platform is not None
    assert await platform.global_db.fetchval("SELECT current_user") == "territory_dk"
    assert await platform.global_db.fetchval("SELECT global.own_territory()") == "dk"
    flags = await platform.global_db.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles "
        "WHERE rolname = current_user"
    )
    assert flags is not None and not any(flags.values())


async def test_another_territory_row_cannot_be_rewritten(
    role: asyncpg.Connection, admin: asyncpg.Connection, neighbour: str
) -> None:
    before = await admin.fetchrow("SELECT * FROM global.territories WHERE code = $1", neighbour)
    status = await role.execute(
        "UPDATE global.territories SET homeserver_url = 'https://evil' WHERE code = $1", neighbour
    )
    assert status == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await role.execute(
            """INSERT INTO global.territories (code, name, server_name, homeserver_url,
                   database_dsn) VALUES ($1, 'x', $1, 'x', 'x')
               ON CONFLICT (code) DO UPDATE SET homeserver_url = 'https://evil'""",
            neighbour,
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await role.execute(
            """INSERT INTO global.territories (code, name, server_name, homeserver_url,
                   database_dsn) VALUES ('rogue', 'x', 'rogue.example', 'x', 'x')"""
        )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await role.execute("DELETE FROM global.territories WHERE code = $1", neighbour)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):  # nor map itself to another code
        await role.execute("UPDATE global.territory_roles SET code = $1", neighbour)
    after = await admin.fetchrow("SELECT * FROM global.territories WHERE code = $1", neighbour)
    assert after == before
    # Its own row it may change (the appservice records its key there at start).
    own = await role.execute("UPDATE global.territories SET updated_at = now() WHERE code = 'dk'")
    assert own == "UPDATE 1"


async def test_another_territory_schema_is_out_of_reach(
    role: asyncpg.Connection, neighbour: str
) -> None:
    for statement in (
        f"SELECT * FROM territory_{neighbour}.secrets",
        f"INSERT INTO territory_{neighbour}.secrets VALUES ('mine')",
        f"CREATE TABLE territory_{neighbour}.planted (v text)",
        "CREATE SCHEMA territory_planted",
        "CREATE TABLE global.planted (v text)",
        "CREATE TABLE public.planted (v text)",
        "DROP TABLE public.badge_definitions",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await role.execute(statement)


async def test_badges_and_audit_of_another_territory(
    role: asyncpg.Connection, admin: asyncpg.Connection, neighbour: str
) -> None:
    slug = f"{neighbour}-badge"
    # Definitions are public: dk reads them, but redefines none and defines none in its name.
    assert await role.fetchval("SELECT name FROM public.badge_definitions WHERE slug = $1", slug)
    status = await role.execute(
        "UPDATE public.badge_definitions SET name = 'Mine' WHERE slug = $1", slug
    )
    assert status == "UPDATE 0"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await role.execute(
            """INSERT INTO public.badge_definitions (slug, name, defined_in, defined_by)
               VALUES ('planted-badge', 'x', $1, '@x:x')""",
            neighbour,
        )
    assert (
        await admin.fetchval("SELECT name FROM public.badge_definitions WHERE slug = $1", slug)
        == "Theirs"
    )
    # The audit log is personal data: each territory sees and writes only its own entries.
    assert not await role.fetchval(
        "SELECT count(*) FROM global.audit_log WHERE territory_code = $1", neighbour
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await role.execute(
            "INSERT INTO global.audit_log (territory_code, actor, action) VALUES ($1, 'x', 'x')",
            neighbour,
        )


async def test_a_role_that_may_not_migrate_says_what_to_do(stack: LocalStack) -> None:
    name = f"unityplan_roles_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(stack.postgres.dsn("postgres"))
    db: Database | None = None
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        # The dk role may connect to the new database but owns nothing there.
        db = Database(stack.database_url.rsplit("/", 1)[0] + f"/{name}", name="fresh", max_size=1)
        await db.start()
        with pytest.raises(MigrationNeedsAdmin) as refused:
            await migrate_all(db, db, territory_code("dk"))
        assert "unityplan db migrate" in str(refused.value)
        assert "database.admin_url" in str(refused.value)
        assert await db.fetchval("SELECT to_regnamespace('global')") is None
    finally:
        if db is not None:
            await db.stop()
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
