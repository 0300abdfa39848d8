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
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from opentelemetry import trace

log = logging.getLogger("unityplan.db")
_tracer = trace.get_tracer("unityplan")  # spans of transactions (core/tracing.py)

SLOW_QUERY_SECONDS = 1.0


Flush = Callable[[list[Any]], Awaitable[None]]


@dataclass
class _PendingRows:
    """Rows of one kind kept for one bulk write before the commit."""

    flush: Flush
    rows: list[Any] = field(default_factory=list)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a connection it takes back, beyond asyncpg's own rollback of an
    unfinished transaction: nothing. Our sessions keep no state outside a transaction (no LISTEN,
    SET or session advisory lock: listeners have connections of their own, settings are local to
    a transaction), so asyncpg's reset query would be one more round trip per query."""


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
        self._pending: ContextVar[dict[str, _PendingRows] | None] = ContextVar(
            f"unityplan_db_pending_{name}_{id(self)}", default=None
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
                    reset=_keep_session,
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
        inner failure rolls back only the inner work, and the outer commit takes the rest).

        Rows kept with ``write_later`` are written just before the commit; those kept inside a
        savepoint that rolls back are dropped with it."""
        current = self._current.get()
        if current is not None:
            # What was kept before the savepoint is written before it, so that rolling the
            # savepoint back drops exactly what was kept inside it.
            await self.flush_pending()
            pending = self._pending.get()
            marks = {key: len(rows.rows) for key, rows in (pending or {}).items()}
            try:
                async with current.transaction():
                    yield current
            except BaseException:
                for key, rows in (pending or {}).items():
                    del rows.rows[marks.get(key, 0) :]
                raise
            return
        callbacks: list[Callable[[], None]] = []
        after = self._after.set(callbacks)
        kept = self._pending.set({})
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                token = self._current.set(conn)
                try:
                    with _tracer.start_as_current_span(
                        "db.transaction",
                        attributes={"db.system": "postgresql", "db.name": self.name},
                    ):
                        yield conn
                        await self.flush_pending()
                finally:
                    self._current.reset(token)
        finally:
            self._pending.reset(kept)
            self._after.reset(after)
            # Cache invalidations: safe after a rollback too, needed after a commit.
            for callback in callbacks:
                callback()

    def write_later(self, key: str, row: Any, flush: Flush) -> bool:
        """Inside a transaction: keep ``row`` to be written with the others under ``key`` in one
        call of ``flush`` before the commit (or at ``flush_pending``), and return True. Outside
        one: False, and the caller writes it now."""
        pending = self._pending.get()
        if pending is None or self._current.get() is None:
            return False
        rows = pending.get(key)
        if rows is None:
            rows = pending[key] = _PendingRows(flush)
        rows.rows.append(row)
        return True

    async def flush_pending(self) -> None:
        """Write the rows kept by ``write_later`` now (before reading what they hold), in the
        order their kinds were first kept; a flush may keep more rows, which are written too."""
        pending = self._pending.get()
        while pending and any(rows.rows for rows in pending.values()):
            for rows in list(pending.values()):
                if rows.rows:
                    batch, rows.rows = rows.rows, []
                    await rows.flush(batch)

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
