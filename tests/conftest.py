"""Real services for the tests: one local stack (PostgreSQL, NATS, IPFS, Synapse, the appservice)
per test session, started from what the project installs. A piece that cannot start fails the run."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import nats.aio.client
import pytest
import pytest_asyncio

from appservice.app import Platform
from appservice.stack.local import LocalStack, StackOptions
from tests.matrix_user import MatrixUser
from tests.otlp_collector import OtlpCollector

REPO_ROOT = Path(__file__).resolve().parents[1]
ROLE_BADGE = "trusted-issuer"
SCOPED_BADGE = "first-aid-helper"


COLLECTOR = OtlpCollector()  # the session stack's appservice sends its traces here


@pytest_asyncio.fixture(scope="session")
async def stack() -> AsyncIterator[LocalStack]:
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-test-"))
    await COLLECTOR.start()
    local = LocalStack(
        StackOptions(
            data_dir=data_dir,
            fast=True,
            # Badge expiry in seconds, not days: reminders 7.2 s ahead, checked twice a second.
            config_overrides={
                "badges": {"reminder_lead_hours": 0.002, "expiry_check_seconds": 0.5},
                "media": {"max_bytes": 1024 * 1024},  # 1 MB, so oversize files are cheap
                "retention": {"check_seconds": 0.5},
                # Traces to a real OTLP receiver in this process, sent within a fifth of a second.
                "tracing": {"otlp_endpoint": COLLECTOR.endpoint, "export_delay_ms": 200},
                # Retries in tenths of seconds, so a given-up event is answered within seconds.
                "appservice": {"retry_base_seconds": 0.1, "event_max_attempts": 4},
                "courses": {"max_attempts": 3, "attempt_cooldown_seconds": 1},
                # The suite creates many topics and knocks as few users: limits out of its way
                # (tests/unit/test_http_errors.py checks the limiter and the 429 itself).
                "limits": {
                    "api_writes_per_minute": 100_000,
                    "topics_per_hour": 1_000_000,
                    "knocks_per_hour": 1_000_000,
                    "remote_server_per_hour": 1_000_000,
                },
                # Holders of the badge trusted-issuer may award badges (a role badge).
                "permissions": {
                    "badge_issuers": ["@admin:dk.localhost", f"badge:{ROLE_BADGE}"],
                    # ... and award only these (and the role itself, which needs an admin).
                    "issuer_scopes": {f"badge:{ROLE_BADGE}": [SCOPED_BADGE, ROLE_BADGE]},
                },
            },
        )
    )
    try:
        await local.start()
        yield local
    finally:
        await local.stop()
        await COLLECTOR.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def platform(stack: LocalStack) -> Platform:
    assert stack.platform is not None
    return stack.platform


@pytest_asyncio.fixture
async def user(stack: LocalStack) -> AsyncIterator[MatrixUser]:
    member = await MatrixUser.create(stack)
    yield member
    await member.close()


@pytest_asyncio.fixture
async def admin(stack: LocalStack) -> AsyncIterator[MatrixUser]:
    demo = next(u for u in stack.demo_users if u.role == "admin")
    member = await MatrixUser.login(stack, demo.user_id, demo.password)
    yield member
    await member.close()


@pytest_asyncio.fixture
async def nc(stack: LocalStack) -> AsyncIterator[nats.aio.client.Client]:
    """A NATS client without credentials: it may read the bus, not publish events."""
    client = await nats.connect(stack.nats.url)
    yield client
    await client.close()


@pytest_asyncio.fixture
async def territory_nc(stack: LocalStack) -> AsyncIterator[nats.aio.client.Client]:
    """A NATS client with the territory's own credentials (a buggy or compromised process of it)."""
    client = await nats.connect(stack.nats.url, **stack.nats.credentials("dk"))
    yield client
    await client.close()
