"""The homeserver asks about users and aliases in our namespaces before they exist.

Bridges register resolvers here (the forum bridge resolves #forum_… aliases by creating the topic's
room). A query nobody resolves is answered 404.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Resolver = Callable[[str], Awaitable[bool]]


class NamespaceQueries:
    def __init__(self) -> None:
        self._user_resolvers: list[Resolver] = []
        self._alias_resolvers: list[Resolver] = []

    def add_user_resolver(self, resolver: Resolver) -> None:
        self._user_resolvers.append(resolver)

    def add_alias_resolver(self, resolver: Resolver) -> None:
        self._alias_resolvers.append(resolver)

    async def query_user(self, user_id: str) -> dict[str, Any] | None:
        return await self._resolve(self._user_resolvers, user_id)

    async def query_alias(self, alias: str) -> dict[str, Any] | None:
        return await self._resolve(self._alias_resolvers, alias)

    @staticmethod
    async def _resolve(resolvers: list[Resolver], key: str) -> dict[str, Any] | None:
        for resolver in resolvers:
            if await resolver(key):
                return {"resolved": key}
        return None
