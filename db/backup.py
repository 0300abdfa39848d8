"""Backups of one territory, and restoring one into an empty PostgreSQL server.

A backup is one tar file:

- ``manifest.json``: what the backup holds (format, territory, when, the territory schema's
  migration version, every table's row count, the IPFS CIDs its rows refer to, the territory's
  public key, the pg_dump version, and the sha256 of the other two files);
- ``territory.dump``: ``pg_dump --format=custom --schema=territory_<code>``;
- ``shared.json``: the territory's own rows in the shared schemas (its registry row and role, its
  users, its audit entries, the badge definitions it defines), as PostgreSQL's JSON of each row.

The dump, the counts and the CIDs are read in one snapshot (pg_dump imports the snapshot the
backup's own transaction exports), so the manifest describes exactly what the dump holds. A backup
runs as the territory's own role: it owns its schema and reads its rows of the shared ones.

A restore runs as the admin of the target server: it refuses a server that already has the
territory's schema, migrates the shared schemas there, creates the territory's role (the same name
and password, so the territory's config logs in), restores the dump and hands the schema to the
role, adds the shared rows, points the registry row at the target and then checks that every table
has the rows the manifest counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import asyncpg

from .database import describe_dsn
from .migrations import check_schema_version, newest_version
from .pgtools import PgToolsMissing, find_pg_bin, libpq_target, run_tool
from .repositories.territories import dsn_without_password
from .roles import hand_over_schema, role_name
from .setup import provision_territory
from .territory import TerritoryCode, territory_code, territory_schema

Progress = Callable[[str], None]

FORMAT = "unityplan-territory-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SHARED = "shared.json"
DUMP = "territory.dump"

# The territory's own rows in the shared schemas: table, the column that names the territory, and
# what the progress lines call its rows. Parents before children (users refer to territories).
SHARED_TABLES: tuple[tuple[str, str, str], ...] = (
    ("global.territories", "code", "registry row"),
    ("global.territory_roles", "code", "role entry"),
    ("global.users", "territory_code", "user"),
    ("global.audit_log", "territory_code", "audit entry"),
    ("public.badge_definitions", "defined_in", "badge definition"),
)


class BackupRefused(Exception):
    """The backup or restore cannot start; nothing was changed. The sentence says why."""


class BackupFailed(Exception):
    """pg_dump or pg_restore failed, or the restored schema differs from its backup."""


@dataclass(frozen=True)
class Backup:
    """A backup file, read and verified: its manifest, its shared rows and the extracted dump."""

    manifest: dict[str, Any]
    shared: dict[str, list[dict[str, Any]]]
    dump: Path

    @property
    def code(self) -> TerritoryCode:
        return territory_code(self.manifest["territory"])

    @property
    def tables(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.manifest["tables"].items()}


# --- helpers ----------------------------------------------------------------------------------


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _plural(count: int, noun: str) -> str:
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun[:-1]}ies" if noun.endswith("y") else f"{count} {noun}s"


def _tool(name: str) -> Path:
    try:
        return find_pg_bin(name) / name
    except PgToolsMissing as exc:
        raise BackupRefused(str(exc)) from exc


async def _run(argv: list[str], dsn_env: dict[str, str], what: str) -> str:
    """Run one of PostgreSQL's programs; BackupFailed with the end of its stderr if it fails."""
    code, out, err = await run_tool(argv, dsn_env)
    if code != 0:
        detail = err.strip().splitlines()[-5:]
        raise BackupFailed(f"{what} failed (exit {code}): " + " / ".join(detail))
    return out.strip()


async def _connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, timeout=10)


async def _has_schema(conn: asyncpg.Connection, schema: str) -> bool:
    return bool(await conn.fetchval("SELECT to_regnamespace($1) IS NOT NULL", schema))


async def table_counts(conn: asyncpg.Connection, schema: str) -> dict[str, int]:
    """Every table of ``schema`` and its number of rows."""
    tables = await conn.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = $1 ORDER BY tablename", schema
    )
    counts: dict[str, int] = {}
    for row in tables:
        name = row["tablename"]
        counts[name] = await conn.fetchval(f"SELECT count(*) FROM {schema}.{_quoted(name)}")
    return counts


async def _schema_version(conn: asyncpg.Connection, schema: str) -> int:
    if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.schema_migrations"):
        return 0
    return int(
        await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {schema}.schema_migrations")
    )


async def _cids(conn: asyncpg.Connection, schema: str) -> list[str]:
    """The IPFS CIDs the schema's rows refer to (columns named cid or *_cid)."""
    columns = await conn.fetch(
        r"""SELECT table_name, column_name FROM information_schema.columns
            WHERE table_schema = $1 AND (column_name = 'cid' OR column_name LIKE '%\_cid')
              AND data_type IN ('text', 'character varying')
            ORDER BY table_name, column_name""",
        schema,
    )
    found: set[str] = set()
    for column in columns:
        name = _quoted(column["column_name"])
        rows = await conn.fetch(
            f"SELECT DISTINCT {name} AS cid FROM {schema}.{_quoted(column['table_name'])} "
            f"WHERE {name} IS NOT NULL"
        )
        found.update(row["cid"] for row in rows)
    return sorted(found)


async def _shared(
    conn: asyncpg.Connection, code: TerritoryCode
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """The territory's rows in the shared schemas, and those schemas' versions."""
    versions = {name: await _schema_version(conn, name) for name in ("global", "public")}
    rows: dict[str, list[dict[str, Any]]] = {}
    for table, column, _ in SHARED_TABLES:
        if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", table):
            rows[table] = []
            continue
        found = await conn.fetch(
            f"SELECT to_jsonb(t)::text AS row FROM {table} t WHERE {column} = $1 ORDER BY 1", code
        )
        rows[table] = [json.loads(r["row"]) for r in found]
    return rows, versions


def _describe_shared(rows: dict[str, list[dict[str, Any]]]) -> str:
    labels = {table: label for table, _, label in SHARED_TABLES}
    return ", ".join(_plural(len(found), labels.get(table, table)) for table, found in rows.items())


def _describe_restored(shared: dict[str, list[dict[str, Any]]], inserted: dict[str, int]) -> str:
    parts = []
    for table, _, label in SHARED_TABLES:
        added, total = inserted.get(table, 0), len(shared.get(table, []))
        there = f" ({total - added} there already)" if total > added else ""
        parts.append(_plural(added, label) + there)
    return ", ".join(parts)


# --- backup -----------------------------------------------------------------------------------


async def backup(
    code: TerritoryCode,
    territory_dsn: str,
    path: Path,
    progress: Progress,
    *,
    global_dsn: str | None = None,
) -> dict[str, Any]:
    """Write the backup of ``code`` to ``path`` (replaced whole, only once it is complete).

    ``territory_dsn`` reaches the territory's schema (its own role); ``global_dsn`` the shared
    schemas when they are on another server or reached as another role. Returns the manifest.
    """
    schema = territory_schema(code)
    path = path.resolve()
    if path.is_dir():
        raise BackupRefused(f"{path} is a folder; name the backup file, e.g. {path}/{code}.tar.")
    if not path.parent.is_dir():
        raise BackupRefused(f"The folder {path.parent} does not exist.")
    pg_dump = _tool("pg_dump")
    pg_dump_version = await _run([str(pg_dump), "--version"], {}, "pg_dump --version")
    progress(f"Backing up territory {code} from {describe_dsn(territory_dsn)}")
    separate = global_dsn is not None and global_dsn != territory_dsn
    with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
        work = Path(tmp)
        conn = await _connect(territory_dsn)
        try:
            if not await _has_schema(conn, schema):
                raise BackupRefused(
                    f"{describe_dsn(territory_dsn)} has no schema {schema}; is it territory "
                    f"{code}'s database?"
                )
            # One snapshot for the dump, the counts and the CIDs: the manifest says what the dump
            # holds, whatever the running appservice writes meanwhile.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
                server_version = await conn.fetchval("SHOW server_version")
                version = await _schema_version(conn, schema)
                tables = await table_counts(conn, schema)
                cids = await _cids(conn, schema)
                progress(
                    f"Dumping {schema} (schema version {version}): {_plural(len(tables), 'table')}, "
                    f"{_plural(sum(tables.values()), 'row')}, {_plural(len(cids), 'CID')}"
                )
                target, env = libpq_target(territory_dsn)
                await _run(
                    [
                        str(pg_dump),
                        "--format=custom",
                        f"--schema={schema}",
                        f"--snapshot={snapshot}",
                        f"--file={work / DUMP}",
                        f"--dbname={target}",
                    ],
                    env,
                    "pg_dump",
                )
                if not separate:  # in the same snapshot
                    shared, shared_versions = await _shared(conn, code)
        finally:
            await conn.close()
        if separate:
            assert global_dsn is not None
            conn = await _connect(global_dsn)
            try:
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    shared, shared_versions = await _shared(conn, code)
            finally:
                await conn.close()
        progress(f"Shared rows: {_describe_shared(shared)}")
        registry = shared["global.territories"][0] if shared["global.territories"] else {}
        roles = shared["global.territory_roles"]
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "territory": code,
            "schema": schema,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "schema_version": version,
            "shared_schema_versions": shared_versions,
            "role": roles[0]["role_name"] if roles else None,
            "tables": tables,
            "rows": sum(tables.values()),
            "cids": cids,
            "public_keys": {"signing": registry["public_key"]}
            if registry.get("public_key")
            else {},
            "public_url": registry.get("public_url"),
            "server_version": server_version,
            "pg_dump_version": pg_dump_version,
            "shared_rows": {table: len(found) for table, found in shared.items()},
        }
        size = await asyncio.to_thread(_write_archive, path, work, manifest, shared)
    progress(
        f"Wrote {path} ({size / 1024:.0f} KiB, dump sha256 {manifest['files'][DUMP]['sha256']})"
    )
    return manifest


def _write_archive(
    path: Path, work: Path, manifest: dict[str, Any], shared: dict[str, list[dict[str, Any]]]
) -> int:
    """The tar file, written beside ``path`` and renamed over it; returns its size."""
    (work / SHARED).write_text(json.dumps(shared, indent=1, sort_keys=True))
    manifest["files"] = {
        name: {"sha256": _sha256(work / name), "bytes": (work / name).stat().st_size}
        for name in (DUMP, SHARED)
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    partial = work / "backup.tar"
    with tarfile.open(partial, "w") as archive:
        for name in (MANIFEST, SHARED, DUMP):  # the manifest first: quick to read
            archive.add(work / name, arcname=name)
    partial.chmod(0o600)  # members' data
    os.replace(partial, path)
    return path.stat().st_size


def read_backup(path: Path, work: Path) -> Backup:
    """Open a backup file: BackupRefused unless it is one, whole, of a format this code reads.
    The dump is extracted into ``work``."""
    if not path.is_file():
        raise BackupRefused(f"{path} does not exist.")
    try:
        with tarfile.open(path, "r:*") as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
            missing = [n for n in (MANIFEST, SHARED, DUMP) if n not in members]
            if missing:
                raise BackupRefused(
                    f"{path} is not a territory backup (no {', '.join(missing)} in it)."
                )

            def member(name: str) -> IO[bytes]:
                extracted = archive.extractfile(members[name])
                assert extracted is not None  # a regular file
                return extracted

            manifest = json.load(member(MANIFEST))
            if manifest.get("format") != FORMAT:
                raise BackupRefused(f"{path} is not a territory backup (its manifest is not one).")
            if int(manifest.get("format_version", 0)) > FORMAT_VERSION:
                raise BackupRefused(
                    f"{path} was written by a newer unityplan (backup format "
                    f"{manifest['format_version']}); restore it with that version."
                )
            for name in (SHARED, DUMP):
                with member(name) as source, (work / name).open("wb") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
        for name in (SHARED, DUMP):
            if _sha256(work / name) != manifest["files"][name]["sha256"]:
                raise BackupRefused(
                    f"{path} is damaged: its {name} does not match the sha256 in its manifest."
                )
        shared = json.loads((work / SHARED).read_text())
    except tarfile.TarError as exc:
        raise BackupRefused(f"{path} is not a territory backup (not a tar file).") from exc
    except (KeyError, TypeError, ValueError) as exc:  # JSON and Unicode errors are ValueErrors
        raise BackupRefused(f"{path} is not a territory backup (its manifest: {exc!r}).") from exc
    return Backup(manifest=manifest, shared=shared, dump=work / DUMP)


# --- restore ----------------------------------------------------------------------------------


def target_role_dsn(role_dsn: str, target_admin: str) -> str:
    """The territory's DSN on the target: the role and password of ``role_dsn``, the server and
    database of ``target_admin``."""
    role, target = urlsplit(role_dsn), urlsplit(target_admin)
    credentials = role.netloc.rsplit("@", 1)[0] if "@" in role.netloc else ""
    host = target.netloc.rsplit("@", 1)[-1]
    return target._replace(netloc=f"{credentials}@{host}" if credentials else host).geturl()


async def restore(
    path: Path,
    admin_dsn: str,
    role_dsn: str,
    progress: Progress,
    *,
    expect: TerritoryCode | None = None,
) -> Backup:
    """Restore the backup at ``path`` into the (empty) server of ``admin_dsn``, its admin.

    ``role_dsn`` names the territory's role and password (its config's database URL; the server
    in it does not matter). BackupRefused, with nothing changed, when the file is not a whole
    backup (of ``expect``), or the target has the territory's schema already; BackupFailed when a
    step fails or the check finds the restored rows differ from the manifest.
    """
    with tempfile.TemporaryDirectory(prefix="unityplan-restore-") as tmp:
        found = await asyncio.to_thread(read_backup, path.resolve(), Path(tmp))
        manifest = found.manifest
        code = found.code
        schema = territory_schema(code)
        if expect is not None and code != expect:
            raise BackupRefused(
                f"{path} is a backup of territory {code}; restore it with {code}'s config."
            )
        progress(
            f"Read {path}: territory {code} as of {manifest['created_at']}, schema version "
            f"{manifest['schema_version']}, {_plural(len(found.tables), 'table')}, "
            f"{_plural(sum(found.tables.values()), 'row')}; its files match their sha256"
        )
        if manifest["schema_version"] > newest_version("territory"):
            raise BackupRefused(
                f"The backup's {schema} is at version {manifest['schema_version']}, newer than "
                f"this code knows ({newest_version('territory')}): upgrade unityplan first."
            )
        pg_restore = _tool("pg_restore")
        home = target_role_dsn(role_dsn, admin_dsn)
        role = role_name(urlsplit(home).username or "")
        conn = await _connect(admin_dsn)
        try:
            if await _has_schema(conn, schema):
                raise BackupRefused(
                    f"{describe_dsn(admin_dsn)} already has the schema {schema}; restore into an "
                    "empty server (or drop that schema first)."
                )
            for scope in ("global", "public"):
                await check_schema_version(conn, scope, scope)  # DatabaseTooNew, unchanged
            admin = await conn.fetchval("SELECT current_user")
        finally:
            await conn.close()

        progress(f"Migrating the shared schemas and creating the role {role} on the target")
        await provision_territory(admin_dsn, code, home, same_server=False)
        progress(f"Restoring {schema} with pg_restore")
        target, env = libpq_target(admin_dsn)
        await _run(
            [
                str(pg_restore),
                "--no-owner",
                "--no-acl",
                "--exit-on-error",
                "--single-transaction",
                f"--dbname={target}",
                str(found.dump),
            ],
            env,
            "pg_restore",
        )
        conn = await _connect(admin_dsn)
        try:
            if role != admin:
                await hand_over_schema(conn, code, role)
                progress(f"{schema} belongs to the role {role}")
            inserted = await _insert_shared(conn, found.shared, code)
            progress(f"Shared rows restored: {_describe_restored(found.shared, inserted)}")
            registered = await conn.execute(
                """UPDATE global.territories SET database_dsn = $2, updated_at = now()
                   WHERE code = $1""",
                code,
                dsn_without_password(home),
            )
            if registered != "UPDATE 0":
                progress(f"The registry puts {code} on {dsn_without_password(home)}")
            await _check(conn, found, progress)
        finally:
            await conn.close()
        if role != admin:
            own = await _connect(home)
            try:
                await own.fetchval(f"SELECT count(*) FROM {schema}.schema_migrations")
            finally:
                await own.close()
            progress(f"The role {role} logs in on the target and reads {schema}")
        progress(f"Restored {code} to {describe_dsn(admin_dsn)}.")
        return found


async def _insert_shared(
    conn: asyncpg.Connection, shared: dict[str, list[dict[str, Any]]], code: str
) -> dict[str, int]:
    """The backup's shared rows of territory ``code`` (those not there already); returns how
    many were added. Rows of any other territory in the file are not restored: a backup speaks
    only for its own territory."""
    known = {table for table, _, _ in SHARED_TABLES}
    inserted: dict[str, int] = {}
    async with conn.transaction():
        for table, key, _ in SHARED_TABLES:
            rows = [row for row in shared.get(table) or [] if row.get(key) == code]
            if table not in known or not rows:
                continue
            namespace, _, name = table.partition(".")
            columns = await conn.fetch(
                """SELECT column_name, is_identity FROM information_schema.columns
                   WHERE table_schema = $1 AND table_name = $2 AND is_generated = 'NEVER'""",
                namespace,
                name,
            )
            # The backup's columns the target has (a newer target's new columns take defaults).
            present = [c["column_name"] for c in columns if c["column_name"] in rows[0]]
            listed = ", ".join(_quoted(c) for c in present)
            status = await conn.execute(
                f"""INSERT INTO {table} ({listed}) OVERRIDING SYSTEM VALUE
                    SELECT {", ".join("r." + _quoted(c) for c in present)}
                    FROM jsonb_array_elements($1::jsonb) AS e,
                         jsonb_populate_record(NULL::{table}, e) AS r
                    ON CONFLICT DO NOTHING""",
                json.dumps(rows),
            )
            inserted[table] = int(status.rsplit(" ", 1)[-1])
            for column in columns:
                if column["is_identity"] == "YES":  # the next id comes after the restored ones
                    sequence = await conn.fetchval(
                        "SELECT pg_get_serial_sequence($1, $2)", table, column["column_name"]
                    )
                    await conn.execute(
                        f"""SELECT setval($1::regclass, greatest(
                                (SELECT max({_quoted(column["column_name"])}) FROM {table}),
                                (SELECT last_value FROM {sequence})))""",
                        sequence,
                    )
    return inserted


async def _check(conn: asyncpg.Connection, found: Backup, progress: Progress) -> None:
    """The restored schema against the manifest: its version and every table's row count."""
    schema = territory_schema(found.code)
    problems = []
    version = await _schema_version(conn, schema)
    if version != found.manifest["schema_version"]:
        problems.append(
            f"schema version {version}, the backup has {found.manifest['schema_version']}"
        )
    counts = await table_counts(conn, schema)
    expected = found.tables
    for table in sorted(set(counts) | set(expected)):
        if counts.get(table) != expected.get(table):
            problems.append(
                f"{table} has {counts.get(table, 'no table, no')} rows, the backup "
                f"{expected.get(table, 'no table, no')}"
            )
    if problems:
        raise BackupFailed(
            f"The restored {schema} differs from its backup: " + "; ".join(problems[:10]) + "."
        )
    progress(
        f"Checked {_plural(len(counts), 'table')}: same rows as the backup "
        f"({_plural(sum(counts.values()), 'row')}, schema version {version})"
    )
