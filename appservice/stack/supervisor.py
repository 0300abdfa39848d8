"""The appservice as production runs it: a `unityplan run` child process on the stack's config,
restarted with backoff whenever it dies, its current pid reported to whoever keeps stack.json."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from .process import ManagedProcess, StackError

log = logging.getLogger("unityplan.stack.supervisor")

READY_TIMEOUT = 90.0
MAX_BACKOFF = 30.0
STABLE_SECONDS = 60.0  # a child that ran this long resets the backoff


class SupervisedAppservice:
    def __init__(
        self,
        config_path: Path,
        *,
        ready_url: str,
        log_path: Path,
        on_restart: Callable[[int], None] | None = None,
        name: str = "appservice",
    ) -> None:
        self.name = name  # names its pid file: one per territory
        self.config_path = config_path
        self.ready_url = ready_url
        self.log_path = log_path
        self.on_restart = on_restart
        self.restarts = 0
        self._process: ManagedProcess | None = None
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        self._paused = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.running else None

    def _spawn(self) -> ManagedProcess:
        process = ManagedProcess(
            self.name,
            [sys.executable, "-m", "appservice", "-c", str(self.config_path), "run"],
            log_path=self.log_path,
        )
        process.start()
        self._process = process
        return process

    async def _ready(self) -> bool:
        timeout = aiohttp.ClientTimeout(total=2)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(self.ready_url) as resp:
                return resp.status == 200

    def start(self) -> None:
        """Start the child; ``first_ready`` then waits for it and begins supervising."""
        self._spawn()

    async def first_ready(self) -> None:
        """Until the first child is ready (migrated, homeserver connected); fails if it dies."""
        assert self._process is not None
        await self._process.wait_ready(
            self._ready, timeout=READY_TIMEOUT, what="ready (GET /ready)"
        )
        self._watch = asyncio.create_task(self._supervise(), name="appservice-supervisor")

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """After a restart: until the current child answers /ready."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if self.pid is not None and await self._ready():
                    return
            await asyncio.sleep(0.1)
        raise StackError(f"the appservice was not ready within {timeout:.0f} s")

    async def pause(self) -> None:
        """Stop the child and keep it down until ``resume`` (an operator's maintenance window)."""
        self._paused = True
        if self._process is not None:
            await self._process.stop()

    def resume(self) -> None:
        self._paused = False
        process = self._spawn()
        if self.on_restart is not None:
            self.on_restart(process.pid or 0)

    async def _supervise(self) -> None:
        delay = 0.5
        while not self._stopping:
            started = time.monotonic()
            assert self._process is not None
            while (self._process.running or self._paused) and not self._stopping:
                await asyncio.sleep(0.1)
            if self._stopping:
                return
            code = self._process.process.returncode if self._process.process else None
            if time.monotonic() - started > STABLE_SECONDS:
                delay = 0.5
            log.warning("The appservice exited (code %s); restarting in %.1f s", code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_BACKOFF)
            if self._stopping:
                return
            process = self._spawn()
            self.restarts += 1
            if self.on_restart is not None:
                self.on_restart(process.pid or 0)

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        if self._process is not None:
            await self._process.stop()
