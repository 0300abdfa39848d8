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
        pid_file: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = env
        self.cwd = cwd
        self.user = user
        self.process: subprocess.Popen[bytes] | None = None
        # <data>/run/<name>.pid: lets the next start find what a SIGKILLed stack left running.
        self.pid_file = pid_file or pid_file_for(log_path, name)

    def start(self) -> None:
        reap_leftover(self.pid_file)
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
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(f"{self.process.pid}\n{_start_time(self.process.pid)}\n")
        log.info("Started %s (pid %d), log in %s", self.name, self.process.pid, self.log_path)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

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

    async def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        proc = self.process
        if proc is None or proc.poll() is not None:
            self.pid_file.unlink(missing_ok=True)
            return
        try:
            os.killpg(proc.pid, sig)
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
        self.pid_file.unlink(missing_ok=True)
        log.info("Stopped %s", self.name)


def pid_file_for(log_path: Path, name: str) -> Path:
    slug = "".join(c if c.isalnum() else "-" for c in name.lower())
    return log_path.parent.parent / "run" / f"{slug}.pid"


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): with the pid,
    it names one process for good (a pid reused later has another start time)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def _alive_as(pid: int, started: str) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and bool(started) and _start_time(pid) == started


def reap_leftover(pid_file: Path, timeout: float = 10.0) -> None:
    """Stop the process (group) a previous stack left behind when it was killed with SIGKILL."""
    try:
        pid_text, started = pid_file.read_text().splitlines()[:2]
        pid = int(pid_text)
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return
    program = pid_file.stem
    if _alive_as(pid, started):
        log.warning("Stopping %s (pid %d) left running by an earlier stack", program, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _alive_as(pid, started) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive_as(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
    pid_file.unlink(missing_ok=True)


def reap_leftovers(run_dir: Path, first: Sequence[str] = ()) -> None:
    """Every process a killed stack left (names starting with one of ``first`` go first: clients
    before servers)."""
    if not run_dir.is_dir():
        return
    prefixes = tuple(first)
    files = sorted(run_dir.glob("*.pid"), key=lambda f: (not f.stem.startswith(prefixes), f.stem))
    for pid_file in files:
        reap_leftover(pid_file)
