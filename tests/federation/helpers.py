"""What the federation tests share: the HTTP API of one territory, and waiting for a condition."""

from __future__ import annotations

from typing import Any

import aiohttp

from appservice.stack.local import TerritoryNode
from tests.waiting import eventually

__all__ = ["api", "eventually"]


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
