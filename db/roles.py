"""Least privilege in PostgreSQL: a territory's processes log in as the territory's own role.

That role owns its territory schema (so it migrates it itself) and nothing else. It reads the
shared registry and the badge definitions, and row-level security (global v3, public v2) lets it
write only its own rows there: its registry row, its users, its audit entries, the badges it
defines. It has no access to any other territory's schema. The global and public schemas belong to
the admin role, which migrates them; ``provision_territory_role`` is run with the admin's
connection (``unityplan db migrate`` / ``territory add`` with ``database.admin_url``, and the local
stack at start).
"""

from __future__ import annotations

import re

import asyncpg

from .territory import TerritoryCode, territory_schema

ROLE_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class InvalidRoleName(ValueError):
    pass


def role_name(value: str) -> str:
    if not ROLE_PATTERN.fullmatch(value):
        raise InvalidRoleName(
            f"{value!r} is not a database role name for a territory (a-z, 0-9 and _, at most 63)"
        )
    return value


def default_role(code: TerritoryCode) -> str:
    """The role the local stack creates for a territory."""
    return territory_schema(code)


# What a territory's role may do in the shared schemas; the policies narrow writes to its rows.
_SHARED_GRANTS = (
    "GRANT USAGE ON SCHEMA global TO {role}",
    "GRANT SELECT ON global.schema_migrations, global.territory_roles TO {role}",
    "GRANT SELECT, INSERT, UPDATE ON global.territories, global.users TO {role}",
    "GRANT SELECT, INSERT ON global.audit_log TO {role}",
    # Its own entries only, and only through these (global v5).
    "GRANT EXECUTE ON FUNCTION global.purge_audit_log(text, integer), "
    "global.erase_member(text, text, text, jsonb) TO {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT ON public.schema_migrations, public.translations TO {role}",
    "GRANT SELECT, INSERT, UPDATE ON public.badge_definitions TO {role}",
)


async def ensure_login_role(conn: asyncpg.Connection, role: str, password: str | None) -> None:
    """Create the role (or update its password): it logs in and holds no other privilege."""
    role = role_name(role)
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    verb = "ALTER" if exists else "CREATE"
    options = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS"
    if password is None:
        statement = f"{verb} ROLE {role} {options}"
    else:
        # Role statements take no parameters: PostgreSQL quotes the password itself.
        statement = await conn.fetchval(
            f"SELECT format('{verb} ROLE %I {options} PASSWORD %L', $1::text, $2::text)",
            role,
            password,
        )
    await conn.execute(statement)


async def grant_shared(conn: asyncpg.Connection, code: TerritoryCode, role: str) -> None:
    """On the global database: say which role speaks for ``code`` and grant what it may do."""
    role = role_name(role)
    async with conn.transaction():
        await conn.execute(
            """INSERT INTO global.territory_roles (role_name, code) VALUES ($1, $2)
               ON CONFLICT (code) DO UPDATE SET role_name = EXCLUDED.role_name""",
            role,
            code,
        )
        for grant in _SHARED_GRANTS:
            await conn.execute(grant.format(role=role))


async def hand_over_schema(conn: asyncpg.Connection, code: TerritoryCode, role: str) -> None:
    """On the territory's database: the role owns its schema and everything in it (created
    earlier by an admin, as before roles existed, or new)."""
    role = role_name(role)
    schema = territory_schema(code)
    async with conn.transaction():
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"ALTER SCHEMA {schema} OWNER TO {role}")
        await conn.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
        owned = await conn.fetch(
            """SELECT c.relname, c.relkind FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = c.oid
                                 AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))""",
            schema,
        )
        for row in owned:
            kind = {"v": "VIEW", "m": "MATERIALIZED VIEW", "S": "SEQUENCE"}.get(
                row["relkind"], "TABLE"
            )
            await conn.execute(f'ALTER {kind} {schema}."{row["relname"]}" OWNER TO {role}')
        functions = await conn.fetch(
            """SELECT p.oid::regprocedure::text AS signature FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1""",
            schema,
        )
        for row in functions:
            await conn.execute(f"ALTER ROUTINE {row['signature']} OWNER TO {role}")
