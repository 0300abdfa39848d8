"""Who is calling the forum API: a Matrix OpenID token (or an access token), asked of our homeserver.

Only users of this territory's homeserver may write: a token the homeserver vouches for but that
belongs to a user of another server is refused.
"""

from __future__ import annotations

import aiohttp

from core.errors import Forbidden, Unauthenticated
from core.ids import server_of
from db.cache import LruCache

CACHE_SECONDS = 60.0


class TokenVerifier:
    def __init__(self, homeserver_url: str, server_name: str) -> None:
        self.homeserver_url = homeserver_url.rstrip("/")
        self.server_name = server_name
        self._cache: LruCache[str, str] = LruCache(10_000, ttl_seconds=CACHE_SECONDS)

    async def user_of(self, authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not authorization or not authorization.startswith("Bearer ") or not token:
            raise Unauthenticated(
                "Writing needs Authorization: Bearer <Matrix OpenID or access token>.",
                reason="missing_token",
            )
        found, cached = self._cache.lookup(token)
        if found and cached is not None:
            return cached
        generation = self._cache.generation
        user_id = await self._openid(token) or await self._access_token(token)
        if user_id is None:
            raise Unauthenticated(
                "The homeserver does not know that token.", reason="unknown_token"
            )
        if server_of(user_id) != self.server_name:
            raise Forbidden(
                f"Only users of {self.server_name} may write here; {user_id} is not one."
            )
        self._cache.put(token, user_id, generation)
        return user_id

    async def _openid(self, token: str) -> str | None:
        url = f"{self.homeserver_url}/_matrix/federation/v1/openid/userinfo"
        async with aiohttp.ClientSession() as session:
            async with session.get(
                url, params={"access_token": token}, timeout=aiohttp.ClientTimeout(total=5)
            ) as resp:
                if resp.status != 200:
                    return None
                sub = (await resp.json()).get("sub")
                return sub if isinstance(sub, str) else None

    async def _access_token(self, token: str) -> str | None:
        url = f"{self.homeserver_url}/_matrix/client/v3/account/whoami"
        async with aiohttp.ClientSession() as session:
            async with session.get(
                url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                if resp.status != 200:
                    return None
                user_id = (await resp.json()).get("user_id")
                return user_id if isinstance(user_id, str) else None
