"""Numbered migrations, run for the global and public schemas and for every territory schema.

Each scope has its own package: ``global_schema``, ``public_schema`` and ``territory_schema``. In
it, module ``vNNN_some_name`` is version NNN of that scope (recorded as "some name" in the schema's
``schema_migrations``); the version comes from the file name, so the two cannot disagree. Versions
run 1..n per scope. A migration is never edited once shipped: add the next vNNN module to its scope
package and list it in that package's ``MODULES``.

A schema that records a version newer than the newest this code has is refused (DatabaseTooNew):
an older unityplan must not run against a database a newer one has migrated.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import asyncpg

from . import global_schema, public_schema, territory_schema

__all__ = [
    "MIGRATIONS",
    "PACKAGES",
    "DatabaseTooNew",
    "Migration",
    "MigrationNeedsAdmin",
    "Scope",
    "check_schema_version",
    "migrate_schema",
    "migrations_for",
    "newest_version",
]

Scope = Literal["global", "public", "territory"]

MODULE_NAME = re.compile(r"v(?P<version>\d{3})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)")


class DatabaseTooNew(Exception):
    """A schema records a migration version newer than any this code has."""

    def __init__(self, schema: str, version: int, known: int) -> None:
        super().__init__(schema, version, known)
        self.schema = schema
        self.version = version
        self.known = known

    def __str__(self) -> str:
        return (
            f"The {self.schema} schema is at version {self.version}, newer than this code knows "
            f"({self.known}): upgrade unityplan, or restore a backup made by this version."
        )


class MigrationNeedsAdmin(Exception):
    """A schema has migrations pending that the connected role may not apply (the shared schemas
    belong to the admin role; a territory's role owns only its territory schema)."""

    def __init__(self, schema: str, role: str) -> None:
        super().__init__(schema, role)
        self.schema = schema
        self.role = role

    def __str__(self) -> str:
        return (
            f"The {self.schema} schema has migrations pending that the database role {self.role} "
            "may not apply: run `unityplan db migrate` with database.admin_url set (the role that "
            "owns the shared schemas), then start again."
        )


@dataclass(frozen=True)
class Migration:
    version: int
    scope: Scope
    name: str
    # global/public migrations take (conn); territory migrations take (conn, schema).
    apply: Callable[..., Awaitable[None]]
    module: str


def _register(scope: Scope, package: ModuleType, modules: Iterable[ModuleType]) -> list[Migration]:
    """One Migration per module; version and name come from the module's file name."""
    found = []
    for module in modules:
        parent, _, leaf = module.__name__.rpartition(".")
        match = MODULE_NAME.fullmatch(leaf)
        if parent != package.__name__ or match is None:
            raise RuntimeError(
                f"{module.__name__} is listed as a {scope} migration, but {scope} migrations are "
                f"modules {package.__name__}.vNNN_name"
            )
        found.append(
            Migration(
                version=int(match["version"]),
                scope=scope,
                name=match["name"].replace("_", " "),
                apply=module.upgrade,
                module=module.__name__,
            )
        )
    return found


# The package of each scope's migrations.
PACKAGES: dict[Scope, ModuleType] = {
    "global": global_schema,
    "public": public_schema,
    "territory": territory_schema,
}

MIGRATIONS: tuple[Migration, ...] = tuple(
    migration
    for scope, package in PACKAGES.items()
    for migration in _register(scope, package, package.MODULES)
)


def migrations_for(scope: Scope) -> list[Migration]:
    found = sorted((m for m in MIGRATIONS if m.scope == scope), key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"{scope} migrations are not numbered 1..n: {versions}")
    return found


def newest_version(scope: Scope) -> int:
    """The newest version this code has for ``scope`` (0 when it has none)."""
    found = migrations_for(scope)
    return found[-1].version if found else 0


def _refuse_if_too_new(scope: Scope, schema: str, recorded: int) -> None:
    known = newest_version(scope)
    if recorded > known:
        raise DatabaseTooNew(schema, recorded, known)


async def check_schema_version(conn: asyncpg.Connection, scope: Scope, schema: str) -> int:
    """The version ``schema`` records (0 if it has no schema_migrations yet), changing nothing.

    Raises DatabaseTooNew when that is newer than this code's newest ``scope`` migration.
    """
    exists = await conn.fetchval(
        "SELECT to_regclass($1) IS NOT NULL", f"{schema}.schema_migrations"
    )
    recorded: int = 0
    if exists:
        recorded = await conn.fetchval(
            f"SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"
        )
    _refuse_if_too_new(scope, schema, recorded)
    return recorded


async def migrate_schema(conn: asyncpg.Connection, scope: Scope, schema: str) -> list[int]:
    """Bring one schema up to date; returns the versions applied. Safe to run concurrently.

    Raises DatabaseTooNew, before applying anything, when the schema records a version newer than
    this code has; the transaction is then rolled back whole.
    """
    applied: list[int] = []
    try:
        async with conn.transaction():
            await _migrate(conn, scope, schema, applied)
    except asyncpg.InsufficientPrivilegeError as exc:
        role = await conn.fetchval("SELECT current_user")
        raise MigrationNeedsAdmin(schema, role) from exc
    return applied


async def _migrate(conn: asyncpg.Connection, scope: Scope, schema: str, applied: list[int]) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"unityplan:{schema}")
    # CREATE SCHEMA checks the database's CREATE privilege even when the schema exists: a
    # territory's role owns its schema but may not create schemas.
    if await conn.fetchval("SELECT to_regnamespace($1) IS NULL", schema):
        await conn.execute(f"CREATE SCHEMA {schema}")
    await conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                version integer PRIMARY KEY,
                name text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    current = await conn.fetchval(
        f"SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations"
    )
    _refuse_if_too_new(scope, schema, current)
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
