"""/health, /ready and /metrics check the real dependencies."""

from __future__ import annotations

import asyncio

import aiohttp

from appservice.stack.local import LocalStack
from tests.matrix_user import MatrixUser


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_health_reports_every_dependency(stack: LocalStack) -> None:
    assert stack.config is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.config.appservice.address + "/health") as resp:
            assert resp.status == 200
            health = await resp.json()
    assert health["status"] == "healthy"
    assert set(health["checks"]) == {"database", "nats", "ipfs", "homeserver"}
    for check in health["checks"].values():
        assert check["status"] == "up" and check["latency_ms"] >= 0
    assert health["timestamp"].endswith("Z") and health["version"]


async def test_health_degrades_when_ipfs_is_down(stack: LocalStack) -> None:
    assert stack.config is not None
    await stack.ipfs.stop()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(stack.config.appservice.address + "/health") as resp:
                assert resp.status == 503
                health = await resp.json()
        assert health["status"] == "degraded"
        assert health["checks"]["ipfs"]["status"] == "down"
        assert health["checks"]["database"]["status"] == "up"
    finally:
        await stack.ipfs.start()


async def test_ready(stack: LocalStack) -> None:
    assert stack.config is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.config.appservice.address + "/ready") as resp:
            assert resp.status == 200
            ready = await resp.json()
    assert ready["ready"] is True
    assert ready["checks"] == {
        "configuration_loaded": True,
        "database_migrations": "complete",
        "homeserver_connected": True,
    }
    queues = ready["queues"]  # what waits and what was given up, for operators
    assert set(queues) == {"inbox", "effects", "dead_letters_last_hour", "dead_letters_growing"}
    assert set(queues["inbox"]) == {"pending", "failed", "dead"}
    assert queues["dead_letters_growing"] == (queues["dead_letters_last_hour"] > 0)


async def test_metrics_count_transactions_and_commands(stack: LocalStack, user: MatrixUser) -> None:
    assert stack.config is not None
    room = await user.room_with_bot()
    await user.command(room, "!territory info")
    # The event is counted once its transaction commits, a moment after the reply was sent.
    for _ in range(50):
        status, content_type, text = await _get(stack.config.appservice.address + "/metrics")
        if 'unityplan_events_total{result="handled",type="m.room.message"}' in text:
            break
        await asyncio.sleep(0.1)
    assert status == 200 and content_type.startswith("text/plain")
    assert 'unityplan_transactions_total{result="handled"}' in text
    assert 'unityplan_commands_total{command="territory info",outcome="ok"}' in text
    assert "unityplan_command_seconds_bucket" in text
    assert 'unityplan_events_total{result="handled",type="m.room.message"}' in text


async def test_unknown_user_and_alias_queries_are_404(stack: LocalStack) -> None:
    assert stack.config is not None and stack.platform is not None
    headers = {"Authorization": f"Bearer {stack.platform.hs_token}"}
    base = stack.config.appservice.address + "/_matrix/app/v1"
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.get(f"{base}/users/@unity_nobody:{stack.server_name}") as resp:
            assert resp.status == 404 and (await resp.json())["errcode"] == "M_NOT_FOUND"
        async with session.get(f"{base}/rooms/%23forum_nothing:{stack.server_name}") as resp:
            assert resp.status == 404
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/users/@unity_nobody:{stack.server_name}") as resp:
            assert resp.status == 401
