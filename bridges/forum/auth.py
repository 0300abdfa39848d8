"""Who is calling the forum API: a Matrix OpenID token (or, where allowed, an access token), asked
of our homeserver.

Only users of this territory's homeserver may write: a token the homeserver vouches for but that
belongs to a user of another server is refused.
"""

from __future__ import annotations

import aiohttp

from core.errors import Forbidden, Unauthenticated
from core.ids import server_of
from db.cache import LruCache

CACHE_SECONDS = 60.0
NEGATIVE_SECONDS = 10.0


class TokenVerifier:
    """OpenID tokens (what a Matrix client hands a third party) by default; access tokens only
    when the territory allows them (``appservice.api_accepts_access_tokens``): an access token is
    the user's whole account, and a third party should never hold one."""

    def __init__(
        self, homeserver_url: str, server_name: str, *, accept_access_tokens: bool = False
    ) -> None:
        self.homeserver_url = homeserver_url.rstrip("/")
        self.server_name = server_name
        self.accept_access_tokens = accept_access_tokens
        self._cache: LruCache[str, str] = LruCache(10_000, ttl_seconds=CACHE_SECONDS)
        # Tokens the homeserver did not know: asked again only after a while.
        self._unknown: LruCache[str, bool] = LruCache(10_000, ttl_seconds=NEGATIVE_SECONDS)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def user_of(self, authorization: str | None) -> str:
        token = (authorization or "").removeprefix("Bearer ").strip()
        kinds = (
            "Matrix OpenID or access token" if self.accept_access_tokens else "Matrix OpenID token"
        )
        if not authorization or not authorization.startswith("Bearer ") or not token:
            raise Unauthenticated(
                f"This needs Authorization: Bearer <{kinds}>.", reason="missing_token"
            )
        found, cached = self._cache.lookup(token)
        if found and cached is not None:
            return cached
        if self._unknown.lookup(token)[0]:
            raise Unauthenticated(
                "The homeserver does not know that token.", reason="unknown_token"
            )
        generation = self._cache.generation
        user_id = await self._openid(token)
        if user_id is None and self.accept_access_tokens:
            user_id = await self._access_token(token)
        if user_id is None:
            self._unknown.put(token, True, self._unknown.generation)
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
        async with self._http().get(url, params={"access_token": token}) as resp:
            if resp.status != 200:
                return None
            sub = (await resp.json()).get("sub")
            return sub if isinstance(sub, str) else None

    async def _access_token(self, token: str) -> str | None:
        url = f"{self.homeserver_url}/_matrix/client/v3/account/whoami"
        async with self._http().get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            if resp.status != 200:
                return None
            user_id = (await resp.json()).get("user_id")
            return user_id if isinstance(user_id, str) else None
