"""Moving a territory's schema to another PostgreSQL server while it runs (logical replication).

1. The target gets the territory's role (same password) and the schema, built by the territory
   migrations as that role and then emptied, so the copy brings every row (seeded ones too).
2. The source publishes the schema (``FOR TABLES IN SCHEMA``); the target subscribes, which copies
   every table and then streams changes.
3. Once every table is copied, the cutover: the territory's role is made read-only on the source
   and its sessions are ended (the appservice's transactions fail and the homeserver retries them),
   the source's WAL position is taken and waited for on the target, and sequences are set.
4. The caller switches the registry. ``finish`` then drops the subscription and publication,
   renames the old schema out of the way (owned by the admin, so the role no longer reaches it)
   and lets the role write again (its global rows stay on the source).

Anything that fails before the registry switch is undone by ``abandon``: the source keeps serving.
Runs as the admin of each server (publications and subscriptions need a superuser).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

import asyncpg

from .migrations import migrate_schema
from .pgtools import find_pg_bin, libpq_target, run_tool
from .roles import ensure_login_role, hand_over_schema, role_name
from .territory import TerritoryCode, territory_schema

Progress = Callable[[str], None]


class RelocationRefused(Exception):
    """The move cannot start or did not finish in time; the sentence says why and what to do."""


@dataclass(frozen=True)
class Relocation:
    code: TerritoryCode
    source_admin: str  # the DSN of the admin of the server the territory is on now
    target_admin: str  # the DSN of the admin of the server it moves to
    role_dsn: str  # the territory's own DSN (its role and password) on the source

    @property
    def schema(self) -> str:
        return territory_schema(self.code)

    @property
    def role(self) -> str:
        return role_name(urlsplit(self.role_dsn).username or "")

    @property
    def name(self) -> str:
        return f"unityplan_move_{self.code}"

    def target_role_dsn(self) -> str:
        """The territory's DSN on the target: its role and password, the target's server."""
        role, target = urlsplit(self.role_dsn), urlsplit(self.target_admin)
        host = target.hostname or "localhost"
        netloc = f"{role.username}:{role.password}@{host}" + (
            f":{target.port}" if target.port else ""
        )
        return target._replace(netloc=netloc).geturl()


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


async def check(move: Relocation) -> None:
    """Before anything changes: RelocationRefused when the servers are not ready for the move."""
    source = await _connect(move.source_admin)
    target = await _connect(move.target_admin)
    try:
        level = await source.fetchval("SHOW wal_level")
        if level != "logical":
            raise RelocationRefused(
                f"The source server has wal_level = {level}; set wal_level = logical (and "
                "max_replication_slots, max_wal_senders) in its postgresql.conf and restart it."
            )
        if not await source.fetchval("SELECT to_regnamespace($1) IS NOT NULL", move.schema):
            raise RelocationRefused(f"The source server has no schema {move.schema}.")
        if await target.fetchval("SELECT to_regnamespace($1) IS NOT NULL", move.schema):
            raise RelocationRefused(
                f"The target server already has a schema {move.schema}; drop it or choose "
                "another server."
            )
    finally:
        await source.close()
        await target.close()


async def prepare(move: Relocation, progress: Progress) -> None:
    """Steps 1 and 2, after ``check``; ``abandon`` undoes them."""
    source = await _connect(move.source_admin)
    target = await _connect(move.target_admin)
    try:
        progress(f"Creating the role {move.role} and the schema {move.schema} on the target")
        password = unquote(urlsplit(move.role_dsn).password or "") or None
        await ensure_login_role(target, move.role, password)
        await hand_over_schema(target, move.code, move.role)
        role_on_target = await _connect(move.target_role_dsn())
        try:
            await migrate_schema(role_on_target, "territory", move.schema)
            # Tables others made in the schema (the bot's crypto store: mautrix's own migrations)
            # come from the source's definitions.
            await _copy_other_tables(source, role_on_target, move)
            # Empty, the copy fills it: rows the migrations seed (and their record) come from
            # the source like every other row.
            tables = await role_on_target.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", move.schema
            )
            names = ", ".join(f'{move.schema}."{t["tablename"]}"' for t in tables)
            await role_on_target.execute(f"TRUNCATE {names} RESTART IDENTITY")
        finally:
            await role_on_target.close()
        without_key = await source.fetch(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')
                 AND NOT EXISTS (SELECT 1 FROM pg_index i
                                 WHERE i.indrelid = c.oid AND i.indisprimary)""",
            move.schema,
        )
        for row in without_key:  # updates and deletes of such tables replicate by whole row
            await source.execute(
                f'ALTER TABLE {move.schema}."{row["relname"]}" REPLICA IDENTITY FULL'
            )
        progress("Publishing the schema on the source and subscribing on the target")
        await source.execute(f"CREATE PUBLICATION {move.name} FOR TABLES IN SCHEMA {move.schema}")
        await target.execute(
            f"CREATE SUBSCRIPTION {move.name} CONNECTION '{_conninfo(move.source_admin)}' "
            f"PUBLICATION {move.name}"
        )
    finally:
        await source.close()
        await target.close()


async def _tables(conn: asyncpg.Connection, schema: str) -> set[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
    return {row["tablename"] for row in rows}


async def _copy_other_tables(
    source: asyncpg.Connection, target: asyncpg.Connection, move: Relocation
) -> None:
    missing = sorted(await _tables(source, move.schema) - await _tables(target, move.schema))
    if not missing:
        return
    dsn, env = libpq_target(move.source_admin)
    command = [
        str(find_pg_bin("pg_dump") / "pg_dump"),
        "--schema-only",
        "--no-owner",
        "--no-acl",
        *(f"--table={move.schema}.{name}" for name in missing),
        dsn,
    ]
    code, out, err = await run_tool(command, env)
    if code != 0:
        raise RelocationRefused(f"pg_dump of {', '.join(missing)} failed: {err.strip()}")
    # SQL only: pg_dump's psql meta-commands (\restrict …) are not SQL.
    script = "\n".join(line for line in out.splitlines() if not line.startswith("\\"))
    await target.execute(script)
    await target.execute(f"SET search_path TO {move.schema}, public")


def _conninfo(dsn: str) -> str:
    """A libpq key=value string (the subscription's CONNECTION), quoted for SQL."""
    parts = urlsplit(dsn)
    values = {
        "host": parts.hostname or "localhost",
        "port": str(parts.port or 5432),
        "dbname": parts.path.lstrip("/") or "postgres",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    text = " ".join(
        f"{key}='{value.replace(chr(92), chr(92) * 2).replace(chr(39), chr(92) + chr(39))}'"
        for key, value in values.items()
        if value
    )
    return text.replace("'", "''")


async def wait_copied(move: Relocation, progress: Progress, timeout: float) -> None:
    """Until the target has copied every table (then it only streams changes)."""
    target = await _connect(move.target_admin)
    try:
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            states = await target.fetch(
                """SELECT r.srsubstate FROM pg_subscription_rel r
                   JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1""",
                move.name,
            )
            # s: copied and handed to the stream; r: the stream has passed it too.
            ready = sum(1 for s in states if s["srsubstate"] in (b"s", b"r", "s", "r"))
            line = f"Copying tables: {ready}/{len(states)}"
            if line != last:
                progress(line)
                last = line
            if states and ready == len(states):
                return
            if time.monotonic() > deadline:
                raise RelocationRefused(
                    f"The target did not copy the schema within {timeout:.0f} s ({line})."
                )
            await asyncio.sleep(0.2)
    finally:
        await target.close()


async def cut_over(move: Relocation, progress: Progress, timeout: float) -> None:
    """Step 3: writes paused on the source, the target caught up, sequences set."""
    source = await _connect(move.source_admin)
    target = await _connect(move.target_admin)
    try:
        progress(f"Pausing {move.role}'s writes on the source")
        await source.execute(f"ALTER ROLE {move.role} SET default_transaction_read_only = on")
        await _end_sessions(source, move.role)
        lsn = await source.fetchval("SELECT pg_current_wal_lsn()")
        deadline = time.monotonic() + timeout
        while True:
            flushed = await source.fetchval(
                "SELECT confirmed_flush_lsn >= $2 FROM pg_replication_slots WHERE slot_name = $1",
                move.name,
                lsn,  # as asyncpg reads a pg_lsn
            )
            if flushed and await _all_streaming(target, move.name):
                break
            if time.monotonic() > deadline:
                raise RelocationRefused(
                    f"The target did not catch up with the source within {timeout:.0f} s."
                )
            await asyncio.sleep(0.05)
        progress("The target has caught up; setting sequences")
        sequences = await source.fetch(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = $1",
            move.schema,
        )
        for row in sequences:
            if row["last_value"] is not None:
                await target.execute(
                    "SELECT setval($1::regclass, $2, true)",
                    f'{move.schema}."{row["sequencename"]}"',
                    row["last_value"],
                )
    finally:
        await source.close()
        await target.close()


async def _all_streaming(target: asyncpg.Connection, name: str) -> bool:
    """Every table of the subscription past its copy and applied from the stream."""
    states = await target.fetch(
        """SELECT r.srsubstate FROM pg_subscription_rel r
           JOIN pg_subscription s ON s.oid = r.srsubid WHERE s.subname = $1""",
        name,
    )
    return bool(states) and all(row["srsubstate"] in (b"r", "r") for row in states)


async def _end_sessions(conn: asyncpg.Connection, role: str, timeout: float = 30) -> None:
    """End every session of the role and wait until each is gone.

    ``pg_terminate_backend`` alone only signals: a session in the middle of a COMMIT may still
    finish it afterwards. Waiting for each to exit (and looking again) means that no write of a
    session started before now can land after this returns.
    """
    since = await conn.fetchval("SELECT clock_timestamp()")
    deadline = time.monotonic() + timeout
    while True:
        left = await conn.fetchval(
            """SELECT count(*) FROM (
                   SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity
                   WHERE usename = $1 AND pid <> pg_backend_pid() AND backend_start <= $2) AS t""",
            role,
            since,
        )
        remaining = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 "
            "AND pid <> pg_backend_pid() AND backend_start <= $2",
            role,
            since,
        )
        if not remaining:
            return
        if time.monotonic() > deadline:
            raise RelocationRefused(
                f"{remaining} sessions of {role} did not end within {timeout:.0f} s "
                f"({left} were asked to)."
            )
        await asyncio.sleep(0.1)


async def _drop_replication(move: Relocation) -> None:
    target = await _connect(move.target_admin)
    try:
        if await target.fetchval("SELECT 1 FROM pg_subscription WHERE subname = $1", move.name):
            await target.execute(f"DROP SUBSCRIPTION {move.name}")  # and its slot on the source
    finally:
        await target.close()
    source = await _connect(move.source_admin)
    try:
        await source.execute(f"DROP PUBLICATION IF EXISTS {move.name}")
    finally:
        await source.close()


async def finish(move: Relocation, progress: Progress) -> str:
    """Step 4, after the registry names the target: returns the old schema's new name."""
    await _drop_replication(move)
    source = await _connect(move.source_admin)
    try:
        moved = f"{move.schema}_moved_{datetime.now(UTC):%Y%m%d%H%M%S}"
        admin = await source.fetchval("SELECT current_user")
        async with source.transaction():
            await source.execute(f"ALTER SCHEMA {move.schema} RENAME TO {moved}")
            await source.execute(f"ALTER SCHEMA {moved} OWNER TO {admin}")
        await source.execute(f"ALTER ROLE {move.role} RESET default_transaction_read_only")
        await _end_sessions(source, move.role)  # they come back writable (global rows)
        progress(f"The old schema is kept on the source as {moved}")
        return moved
    finally:
        await source.close()


async def abandon(move: Relocation) -> None:
    """Undo a move that did not reach the registry switch: the source serves on."""
    await _drop_replication(move)
    source = await _connect(move.source_admin)
    try:
        await source.execute(f"ALTER ROLE {move.role} RESET default_transaction_read_only")
        await _end_sessions(source, move.role)
    finally:
        await source.close()
    target = await _connect(move.target_admin)
    try:
        await target.execute(f"DROP SCHEMA IF EXISTS {move.schema} CASCADE")
    finally:
        await target.close()
