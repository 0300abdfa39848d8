"""Who may be believed on the bus: messages are signed by their territory's key and checked
against the key the global registry holds for the territory they claim to come from."""

from __future__ import annotations

import logging

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.signing import SIGNATURE_HEADER, sign, verify
from db.cache import LruCache
from db.repositories.territories import TerritoryRepository
from db.territory import InvalidTerritoryCode, territory_code

log = logging.getLogger("unityplan.events.trust")

KEY_CACHE_SECONDS = 60.0


class BusTrust:
    def __init__(
        self, key: Ed25519PrivateKey, territory: str, territories: TerritoryRepository
    ) -> None:
        self.key = key
        self.territory = territory
        self.territories = territories
        self._keys: LruCache[str, str | None] = LruCache(1000, ttl_seconds=KEY_CACHE_SECONDS)

    def headers(self, subject: str, body: bytes) -> dict[str, str]:
        """The signature header for a message this territory publishes."""
        return {SIGNATURE_HEADER: sign(self.key, subject, body)}

    async def public_key(self, code: str) -> str | None:
        found, key = self._keys.lookup(code)
        if found:
            return key
        generation = self._keys.generation
        territory = await self.territories.get(territory_code(code))
        key = territory.public_key if territory else None
        self._keys.put(code, key, generation)
        return key

    def forget(self) -> None:
        """After a registry change (a rotated key)."""
        self._keys.invalidate()

    async def problem(
        self, claimed: str, subject: str, body: bytes, headers: dict[str, str] | None
    ) -> str | None:
        """Why a message that claims to come from territory ``claimed`` is not to be believed
        (None when it is): the subject must be the territory's own, and the signature its key's."""
        try:
            code = territory_code(claimed)
        except InvalidTerritoryCode:
            return "bad_territory"
        parts = subject.split(".")
        if len(parts) < 3 or parts[0] != "unityplan" or parts[1] != code:
            return "subject_mismatch"
        signature = (headers or {}).get(SIGNATURE_HEADER)
        if not signature:
            return "unsigned"
        key = await self.public_key(code)
        if key is None:
            return "unknown_territory"
        if not verify(key, subject, body, signature):
            self.forget()  # the key may have been rotated meanwhile: fetch it again next time
            return "bad_signature"
        return None

    def reply_headers(
        self, question_subject: str, question: bytes, answer: bytes
    ) -> dict[str, str]:
        """A signed answer to a request: bound to the question, so it cannot be replayed."""
        return {SIGNATURE_HEADER: sign(self.key, question_subject, question + b"\n" + answer)}

    async def reply_problem(
        self,
        code: str,
        question_subject: str,
        question: bytes,
        answer: bytes,
        headers: dict[str, str] | None,
    ) -> str | None:
        signature = (headers or {}).get(SIGNATURE_HEADER)
        if not signature:
            return "unsigned"
        key = await self.public_key(code)
        if key is None:
            return "unknown_territory"
        if not verify(key, question_subject, question + b"\n" + answer, signature):
            self.forget()
            return "bad_signature"
        return None
