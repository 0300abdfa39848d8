"""A PostgreSQL server from the machine's packages, run as an unprivileged user when we are root."""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import subprocess
from pathlib import Path

import asyncpg

from db import pgtools

from .process import ManagedProcess, StackError

DATABASE = "unityplan"
SUPERUSER = "unityplan"
SERVICE_USER = "unityplan"


def find_pg_bin() -> Path:
    """The folder with initdb and postgres (see db.pgtools.find_pg_bin)."""
    try:
        return pgtools.find_pg_bin("initdb", "postgres")
    except pgtools.PgToolsMissing as exc:
        raise StackError(str(exc)) from exc


def service_user() -> str | None:
    """None when not root; otherwise an unprivileged user to run PostgreSQL as (created if needed)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", SERVICE_USER):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        check=True,
    )
    return SERVICE_USER


def _hand_over(path: Path, user: str | None) -> None:
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for folder, _, files in os.walk(path):
        os.chown(folder, entry.pw_uid, entry.pw_gid)
        for name in files:
            os.chown(os.path.join(folder, name), entry.pw_uid, entry.pw_gid)


class PostgresServer:
    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        log_path: Path,
        fast: bool = False,
        name: str = "postgres",
        wal_level: str = "logical",
    ) -> None:
        self.name = name  # names its pid file
        self.wal_level = wal_level
        self.data_dir = data_dir
        self.port = port
        self.fast = fast
        self.log_path = log_path
        self.user = service_user()
        self.bin = find_pg_bin()
        self._password_file = data_dir.parent / "postgres-password"
        self.process: ManagedProcess | None = None

    @property
    def password(self) -> str:
        return self._password_file.read_text().strip()

    def dsn(
        self, database: str = DATABASE, *, user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """The admin's DSN, or another role's with its password."""
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def _initdb(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if not self._password_file.exists():
            self._password_file.write_text(secrets.token_urlsafe(24))
            self._password_file.chmod(0o600)
        pwfile = self.data_dir.parent / "postgres-initdb-pw"
        pwfile.write_text(self.password)
        _hand_over(self.data_dir, self.user)
        _hand_over(pwfile, self.user)
        try:
            result = subprocess.run(
                [
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=trust",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                ],
                capture_output=True,
                text=True,
                user=self.user,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise StackError(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")

    async def start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            await asyncio.to_thread(self._initdb)
        stale_pid = self.data_dir / "postmaster.pid"
        if stale_pid.exists():
            stale_pid.unlink()  # a previous run was killed; the port check below guards us
        settings = [
            "-c",
            "listen_addresses=127.0.0.1",
            "-p",
            str(self.port),
            "-c",
            f"unix_socket_directories={self.data_dir}",
            "-c",
            "max_connections=200",
            # Logical replication, so `unityplan territory migrate` can move a territory live.
            "-c",
            f"wal_level={self.wal_level}",
            "-c",
            "max_replication_slots=10",
            "-c",
            "max_wal_senders=10",
        ]
        if self.fast:
            settings += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self.process = ManagedProcess(
            self.name,
            [str(self.bin / "postgres"), "-D", str(self.data_dir), *settings],
            log_path=self.log_path,
            user=self.user,
        )
        self.process.start()
        await self.process.wait_ready(
            self._accepts_connections, timeout=30, what="accepting connections"
        )
        await self._ensure_database()

    async def _accepts_connections(self) -> bool:
        conn = await asyncpg.connect(self.dsn("postgres"), timeout=2)
        await conn.close()
        return True

    async def _ensure_database(self) -> None:
        conn = await asyncpg.connect(self.dsn("postgres"))
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await conn.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            await conn.close()

    async def stop(self) -> None:
        if self.process is not None:
            # SIGINT is PostgreSQL's fast shutdown: it does not wait for clients to leave.
            await self.process.stop(timeout=15, sig=signal.SIGINT)
