"""Bounded in-process caches in front of the database, and per-key locks that do not pile up.

A cache here only ever saves a query: the database stays the truth. Writers invalidate *after* their
transaction commits (``Database.after_commit``), and a reader that started before an invalidation
cannot store what it read: ``put`` takes the generation seen before the query and drops stale values.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable
from contextlib import asynccontextmanager
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most ``max_size`` entries, least recently used evicted first; optional time to live."""

    def __init__(self, max_size: int, *, ttl_seconds: float | None = None) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.ttl_seconds = ttl_seconds
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def generation(self) -> int:
        """Read before the query whose result goes to ``put``."""
        return self._generation

    def lookup(self, key: K) -> tuple[bool, V | None]:
        """(found, value); a value may itself be None (a remembered "there is none")."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        expires, value = entry
        if expires < time.monotonic():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, value

    def put(self, key: K, value: V, generation: int) -> None:
        if generation != self._generation:
            return  # invalidated while the value was being read: it may be stale
        expires = (
            time.monotonic() + self.ttl_seconds if self.ttl_seconds is not None else float("inf")
        )
        self._entries[key] = (expires, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_size:
            self._entries.popitem(last=False)

    def invalidate(self, matches: Callable[[K], bool] | None = None) -> None:
        """Forget every entry (or those whose key ``matches``)."""
        self._generation += 1
        if matches is None:
            self._entries.clear()
            return
        for key in [k for k in self._entries if matches(k)]:
            del self._entries[key]


class KeyedLocks(Generic[K]):
    """One asyncio lock per key, kept only while somebody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[K, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, key: K) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
