"""What the domain needs from outside, as protocols: the bridges implement them, the composition
root plugs them in, and the domain never imports a bridge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from .errors import Unavailable


@dataclass(frozen=True)
class BadgeStatus:
    """Whether a user holds a badge now, as their own territory answers it."""

    valid: bool
    expires_at: datetime | None = None
    error: str | None = None
    # The territory that answered (set by the asker once the signed answer verified).
    answered_by: str | None = None

    def as_json(self) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "valid": self.valid,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }
        if self.error:
            answer["error"] = self.error
        return answer


class BadgeCheckError(Unavailable):
    """The badge could not be checked (no such territory, no answer); the sentence says why."""


class BadgeChecker(Protocol):
    """Asks the territory that owns ``user_id`` whether the user holds ``badge`` now."""

    async def check(self, user_id: str, badge: str, timeout: float = 3.0) -> BadgeStatus: ...


class CredentialStatusSource(Protocol):
    """Asks the territory that issued a credential whether it is revoked (its public credential
    URL answers). Raises Unavailable when it cannot be asked."""

    async def revoked_at(self, credential_url: str) -> datetime | None: ...


class ContentStore(Protocol):
    """Content-addressed storage (the IPFS node): add pins, ``cat`` reads back by CID."""

    async def add(self, data: bytes, timeout: float = 60.0) -> str: ...

    async def cat(self, cid: str, timeout: float = 10.0) -> bytes: ...


class Pins(Protocol):
    """The pins of the IPFS node: what it keeps."""

    async def is_pinned(self, cid: str, timeout: float = 10.0) -> bool: ...

    async def unpin(self, cid: str, timeout: float = 10.0) -> None: ...


class AccountEraser(Protocol):
    """The homeserver's admin API: deactivate a local account and erase what it sent."""

    async def deactivate(self, user_id: str, *, erase: bool = True) -> None: ...
