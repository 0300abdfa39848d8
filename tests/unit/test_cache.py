"""Bounded caches with stale-read protection, and per-key locks that are dropped when idle."""

from __future__ import annotations

import asyncio

from db.cache import KeyedLocks, LruCache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1, cache.generation)
    cache.put("b", 2, cache.generation)
    assert cache.lookup("a") == (True, 1)  # a is now the most recent
    cache.put("c", 3, cache.generation)
    assert len(cache) == 2
    assert cache.lookup("b") == (False, None)
    assert cache.lookup("a") == (True, 1) and cache.lookup("c") == (True, 3)


def test_none_is_a_value_and_a_read_begun_before_an_invalidation_is_not_stored() -> None:
    cache: LruCache[str, int | None] = LruCache(10)
    cache.put("none", None, cache.generation)
    assert cache.lookup("none") == (True, None)
    seen = cache.generation
    cache.invalidate(lambda key: key == "other")  # a writer committed meanwhile
    cache.put("late", 1, seen)
    assert cache.lookup("late") == (False, None)
    assert cache.lookup("none") == (True, None)  # not matched by the invalidation


def test_entries_expire() -> None:
    cache: LruCache[str, int] = LruCache(10, ttl_seconds=0)
    cache.put("a", 1, cache.generation)
    assert cache.lookup("a") == (False, None)


async def test_keyed_locks_serialise_one_key_and_forget_it_afterwards() -> None:
    locks: KeyedLocks[str] = KeyedLocks()
    order: list[str] = []

    async def work(name: str) -> None:
        async with locks.hold("room"):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

    await asyncio.gather(work("a"), work("b"), work("c"))
    assert order == ["a in", "a out", "b in", "b out", "c in", "c out"]
    assert len(locks) == 0
