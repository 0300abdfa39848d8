"""asyncpg pools with transactions that nest.

``Database.acquire()`` and ``Database.transaction()`` reuse the connection of an enclosing
``transaction()`` of the same database (through a ContextVar), so repository calls made inside a
handler's transaction join it instead of opening their own; a nested ``transaction()`` is a
savepoint.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from opentelemetry import trace

log = logging.getLogger("unityplan.db")
_tracer = trace.get_tracer("unityplan")  # spans of transactions (core/tracing.py)

SLOW_QUERY_SECONDS = 1.0


class DatabaseUnavailable(Exception):
    """The database server cannot be reached; the message names it without the password."""


def describe_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


class Database:
    def __init__(self, dsn: str, *, name: str, min_size: int = 1, max_size: int = 10) -> None:
        self.dsn = dsn
        self.name = name
        self._min_size = min_size
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._current: ContextVar[asyncpg.Connection | None] = ContextVar(
            f"unityplan_db_{name}_{id(self)}", default=None
        )
        self._after: ContextVar[list[Callable[[], None]] | None] = ContextVar(
            f"unityplan_db_after_{name}_{id(self)}", default=None
        )

    async def start(self, *, wait: float = 0.0) -> None:
        """Open the pool; keep trying for ``wait`` seconds while the server is unreachable."""
        deadline = time.monotonic() + wait
        delay = 0.5
        while True:
            try:
                self._pool = await asyncpg.create_pool(
                    self.dsn,
                    min_size=self._min_size,
                    max_size=self._max_size,
                    command_timeout=60,
                    server_settings={"application_name": f"unityplan-{self.name}"},
                )
                return
            except (
                OSError,
                asyncpg.CannotConnectNowError,
                asyncpg.InvalidPasswordError,
                asyncpg.InvalidCatalogNameError,
            ) as exc:
                where = describe_dsn(self.dsn)
                if time.monotonic() + delay > deadline or isinstance(
                    exc, asyncpg.InvalidPasswordError | asyncpg.InvalidCatalogNameError
                ):
                    raise DatabaseUnavailable(
                        f"Cannot use the {self.name} database at {where}: {exc}"
                    ) from exc
                log.warning(
                    "Database %s not reachable yet (%s); retrying in %.1f s", where, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"database {self.name} is not started")
        return self._pool

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        current = self._current.get()
        if current is not None:
            yield current
            return
        async with self.pool.acquire() as conn:
            yield conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A transaction; inside another transaction() of this database, a savepoint of it (so an
        inner failure rolls back only the inner work, and the outer commit takes the rest)."""
        current = self._current.get()
        if current is not None:
            async with current.transaction():
                yield current
            return
        callbacks: list[Callable[[], None]] = []
        after = self._after.set(callbacks)
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                token = self._current.set(conn)
                try:
                    with _tracer.start_as_current_span(
                        "db.transaction",
                        attributes={"db.system": "postgresql", "db.name": self.name},
                    ):
                        yield conn
                finally:
                    self._current.reset(token)
        finally:
            self._after.reset(after)
            # Cache invalidations: safe after a rollback too, needed after a commit.
            for callback in callbacks:
                callback()

    @property
    def in_transaction(self) -> bool:
        """Whether the caller runs inside a transaction() of this database."""
        return self._current.get() is not None

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the enclosing transaction has ended (at once outside one)."""
        pending = self._after.get()
        if pending is None:
            callback()
        else:
            pending.append(callback)

    async def execute(self, query: str, *args: Any) -> str:
        async with self.acquire() as conn:
            return await self._timed(conn.execute, query, *args)

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.acquire() as conn:
            return await self._timed(conn.fetch, query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.acquire() as conn:
            return await self._timed(conn.fetchrow, query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.acquire() as conn:
            return await self._timed(conn.fetchval, query, *args)

    async def ping(self) -> None:
        await self.fetchval("SELECT 1")

    @staticmethod
    async def _timed(method: Any, query: str, *args: Any) -> Any:
        started = time.monotonic()
        try:
            return await method(query, *args)
        finally:
            elapsed = time.monotonic() - started
            if elapsed > SLOW_QUERY_SECONDS:
                log.warning("Slow query (%.2f s): %s", elapsed, " ".join(query.split())[:200])
