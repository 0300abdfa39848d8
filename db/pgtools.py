"""PostgreSQL's own programs (initdb, postgres, pg_dump, pg_restore): where they are, and how to
give them a DSN without putting its password on their command line."""

from __future__ import annotations

import asyncio
import glob
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit


class PgToolsMissing(RuntimeError):
    """PostgreSQL's programs were not found; the message says what to install."""


def find_pg_bin(*tools: str) -> Path:
    """The folder with ``tools`` (default initdb and postgres): $UNITYPLAN_PG_BIN, Debian's newest
    /usr/lib/postgresql/N/bin, or the folder on PATH that has the first of them."""
    wanted = tools or ("initdb", "postgres")
    candidates = []
    if os.environ.get("UNITYPLAN_PG_BIN"):
        candidates.append(Path(os.environ["UNITYPLAN_PG_BIN"]))
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    candidates += [Path(p) for p in versions]
    on_path = shutil.which(wanted[0])
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if all((folder / tool).exists() for tool in wanted):
            return folder
    if "initdb" in wanted:
        raise PgToolsMissing(
            "PostgreSQL server binaries (initdb, postgres) were not found; install Debian's "
            "postgresql package (`make deps` does) or set UNITYPLAN_PG_BIN."
        )
    raise PgToolsMissing(
        f"PostgreSQL's {' and '.join(wanted)} were not found; install the postgresql-client "
        "package of your server's major version (or newer), or set UNITYPLAN_PG_BIN to its folder."
    )


def libpq_target(dsn: str) -> tuple[str, dict[str, str]]:
    """``dsn`` without its password, and the environment that carries the password (PGPASSWORD),
    so it never shows on a command line (``ps``)."""
    parts = urlsplit(dsn)
    env = {"PGPASSWORD": unquote(parts.password)} if parts.password is not None else {}
    if parts.password is None:
        return dsn, env
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{parts.username}@{host}" if parts.username else host
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env


async def run_tool(argv: list[str], env: dict[str, str]) -> tuple[int, str, str]:
    """Run one of PostgreSQL's programs with ``env`` (from ``libpq_target``) over ours:
    (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
