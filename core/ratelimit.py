"""Per-key token buckets: how often one user (or server) may do a costly thing. In memory on
purpose: a restart forgetting them costs nothing, and asking PostgreSQL on every write would."""

from __future__ import annotations

import time

from db.cache import LruCache

from .errors import RateLimited


class RateLimiter:
    def __init__(self, what: str, per_minute: float, *, burst: int | None = None) -> None:
        self.what = what
        self.rate = per_minute / 60.0  # tokens per second
        # A burst of at least three, and up to a minute's worth.
        self.burst = float(burst if burst is not None else max(3, round(per_minute)))
        self._buckets: LruCache[str, tuple[float, float]] = LruCache(100_000)

    def hit(self, key: str) -> None:
        """Take one token for ``key`` or raise ``RateLimited`` saying when to try again."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        found, bucket = self._buckets.lookup(key)
        tokens, stamp = bucket if found and bucket is not None else (self.burst, now)
        tokens = min(self.burst, tokens + (now - stamp) * self.rate)
        if tokens < 1:
            wait = (1 - tokens) / self.rate
            raise RateLimited(
                f"Too many {self.what}; try again in {max(wait, 0.1):.0f} s.", retry_after=wait
            )
        self._buckets.put(key, (tokens - 1, now), self._buckets.generation)
