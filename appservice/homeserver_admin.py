"""The homeserver's admin API (Synapse): deactivate a member's account with erasure.

POST /_synapse/admin/v1/deactivate/<user_id> {"erase": true} marks what the account sent as erased
(the homeserver serves those events redacted to users who join later) and frees nothing else;
the appservice uses it only for `!me forget`, with a token of a homeserver admin."""

from __future__ import annotations

from urllib.parse import quote

import aiohttp

from core.effects import PermanentFailure


class SynapseAdmin:
    def __init__(self, homeserver_url: str, token: str) -> None:
        self.url = homeserver_url.rstrip("/")
        self.token = token

    async def deactivate(self, user_id: str, *, erase: bool = True) -> None:
        endpoint = f"{self.url}/_synapse/admin/v1/deactivate/{quote(user_id, safe='@:')}"
        headers = {"Authorization": f"Bearer {self.token}"}
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(endpoint, json={"erase": erase}, headers=headers) as resp:
                if resp.status == 200:
                    return
                text = (await resp.text())[:300]
                if resp.status in (401, 403, 404):
                    raise PermanentFailure(f"the homeserver refused ({resp.status}): {text}")
                raise RuntimeError(f"the homeserver answered {resp.status}: {text}")
