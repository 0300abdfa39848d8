"""A child process with its log in a file, a readiness check, and a clean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

log = logging.getLogger("unityplan.stack")


class StackError(RuntimeError):
    """A piece of the local stack could not be started; the message says which and why."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


_handed_out: set[int] = set()


def free_port(preferred: int | None = None) -> int:
    """``preferred`` when it is free, else a free port the OS picks (never one handed out before)."""
    if preferred is not None and preferred not in _handed_out and port_is_free(preferred):
        _handed_out.add(preferred)
        return preferred
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            out.write(
                f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(self.argv)}\n".encode()
            )
            out.flush()
            try:
                self.process = subprocess.Popen(
                    self.argv,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env={**os.environ, **(self.env or {})},
                    cwd=self.cwd,
                    user=self.user,
                    start_new_session=True,  # Ctrl-C in the terminal reaches us, not the child
                )
            except OSError as exc:
                raise StackError(f"{self.name}: could not run {self.argv[0]}: {exc}") from exc
        log.info("Started %s (pid %d), log in %s", self.name, self.process.pid, self.log_path)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def wait_ready(
        self, check: Callable[[], Awaitable[bool]], *, timeout: float, what: str = "ready"
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise StackError(
                    f"{self.name} exited with code {self.process and self.process.returncode} "
                    f"before it was {what}; see {self.log_path}:\n{self.tail()}"
                )
            try:
                if await check():
                    return
            except Exception:
                pass
            await asyncio.sleep(0.1)
        raise StackError(
            f"{self.name} was not {what} within {timeout:.0f} s; see {self.log_path}:\n{self.tail()}"
        )

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def stop(self, timeout: float = 10.0) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if proc.poll() is None:
            log.warning("%s did not stop within %.0f s; killing it", self.name, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.info("Stopped %s", self.name)
