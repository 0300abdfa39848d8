"""What the federation tests share: the HTTP API of one territory, and waiting for a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

from appservice.stack.local import TerritoryNode

T = TypeVar("T")


async def api(
    node: TerritoryNode, method: str, path: str, token: str | None = None, json: Any = None
) -> tuple[int, Any]:
    """A request to the territory's HTTP API: (status, JSON answer)."""
    assert node.config is not None
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, node.config.public_url + path, json=json, headers=headers
        ) as resp:
            return resp.status, await resp.json()


async def eventually(check: Callable[[], Awaitable[T]], what: str, timeout: float = 40) -> T:
    """The first truthy result of ``check``, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)
