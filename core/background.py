"""The one way to start background work: keeps a reference, logs failures, cancels cleanly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("unityplan.background")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("Background task %s failed", task.get_name(), exc_info=task.exception())

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def every(
    interval_seconds: float,
    tick: Callable[[], Awaitable[Any]],
    what: str,
    on_failure: Callable[[], None] | None = None,
) -> None:
    """Run ``tick`` now and then every ``interval_seconds``, for good; a failed pass is logged
    (and ``on_failure`` called) and the next one comes as planned."""
    while True:
        try:
            await tick()
        except Exception:
            if on_failure is not None:
                on_failure()
            log.exception("%s failed; trying again in %.0f s", what, interval_seconds)
        await asyncio.sleep(interval_seconds)


async def wait_until_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait for ``event`` at most ``timeout`` seconds; whether it was set.

    Instead of ``asyncio.wait_for(event.wait(), timeout)``: on Python 3.11 that can swallow a
    cancellation arriving just as the event is set, and a loop around it then runs on after
    ``BackgroundTasks.stop`` cancelled it (a stop that never returns). ``asyncio.timeout`` keeps it.
    """
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
