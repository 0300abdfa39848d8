"""Real checks of every dependency, for /health and /ready (shapes of the seed's section 9.4)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from . import __version__

CHECK_TIMEOUT = 3.0


async def _timed(check: Callable[[], Awaitable[Any]]) -> dict[str, Any]:
    started = time.monotonic()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:200]}
    return {"status": "up", "latency_ms": round((time.monotonic() - started) * 1000, 1)}


class HealthChecks:
    def __init__(self, checks: dict[str, Callable[[], Awaitable[Any]]]) -> None:
        self.checks = checks

    async def health(self) -> tuple[int, dict[str, Any]]:
        names = list(self.checks)
        results = await asyncio.gather(*(_timed(self.checks[name]) for name in names))
        checks = dict(zip(names, results, strict=True))
        down = [name for name, result in checks.items() if result["status"] != "up"]
        if not down:
            status = "healthy"
        elif "database" in down:
            status = "unhealthy"
        else:
            status = "degraded"
        body = {
            "status": status,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "version": __version__,
            "checks": checks,
        }
        return (200 if status == "healthy" else 503), body
