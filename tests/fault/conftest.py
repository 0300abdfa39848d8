"""The fault suite's stack: the appservice as a real `unityplan run` child (killed with SIGKILL by
the tests, restarted by its supervisor), talking to Synapse through a proxy that fails on purpose.
The tests read the database through the same domain code, in this process (``tools``).

Each test records what it measured with ``report``; the figures are printed at the end of the run
(and written to $UNITYPLAN_FAULT_REPORT as JSON when that is set): docs/reliability.md shows them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from appservice.app import Platform
from appservice.stack.local import LocalStack, StackOptions
from appservice.stack.process import free_port
from tests.fault.proxy import FaultyProxy

REPORT: list[dict[str, Any]] = []


@dataclass
class FaultStack:
    stack: LocalStack
    proxy: FaultyProxy
    tools: Platform  # the domain over the same database, without serving anything
    metrics_port: int

    @property
    def appservice_pid(self) -> int:
        assert self.stack.appservice is not None and self.stack.appservice.pid is not None
        return self.stack.appservice.pid


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def faults() -> AsyncIterator[FaultStack]:
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-fault-"))
    proxy_port = free_port()
    metrics_port = free_port()
    stack = LocalStack(
        StackOptions(
            data_dir=data_dir,
            fast=True,
            appservice_process=True,
            config_overrides={
                # The appservice reaches its homeserver through the faulty proxy.
                "homeserver": {"address": f"http://127.0.0.1:{proxy_port}"},
                "appservice": {
                    "metrics_port": metrics_port,  # /metrics apart, as in production
                    "retry_base_seconds": 0.1,
                    "effect_timeout_seconds": 2,
                    "event_max_attempts": 8,
                    "effect_max_attempts": 30,
                },
                "badges": {"reminder_lead_hours": 0.002, "expiry_check_seconds": 0.5},
                "limits": {
                    "topics_per_hour": 1_000_000,
                    "knocks_per_hour": 1_000_000,
                    "remote_server_per_hour": 1_000_000,
                },
            },
        )
    )
    proxy = FaultyProxy(stack.synapse.url)
    proxy.port = proxy_port
    await proxy.start()
    try:
        await stack.start()
        assert stack.config is not None
        async with Platform(stack.config).offline() as tools:
            yield FaultStack(stack, proxy, tools, metrics_port)
    finally:
        await stack.stop()
        await proxy.stop()
        if not os.environ.get("UNITYPLAN_KEEP_FAULT_DIR"):  # to read the logs of a failure
            shutil.rmtree(data_dir, ignore_errors=True)
        else:
            print(f"fault stack kept in {data_dir}")


@pytest.fixture
def report() -> Callable[..., None]:
    def record(fault: str, **figures: Any) -> None:
        REPORT.append({"fault": fault, **figures})

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not REPORT:
        return
    terminalreporter.section("fault suite figures")
    for row in REPORT:
        terminalreporter.write_line(json.dumps(row))
    target = os.environ.get("UNITYPLAN_FAULT_REPORT")
    if target:
        Path(target).write_text(json.dumps(REPORT, indent=2))
