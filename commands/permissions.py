"""Who may run what: territory roles from the config, room moderators by power level."""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from mautrix.types import PowerLevelStateEventContent, RoomID, UserID

log = logging.getLogger("unityplan.commands.permissions")

MODERATOR_POWER_LEVEL = 50


class Permission(enum.Enum):
    TERRITORY_ADMIN = "territory admin"
    BADGE_ADMIN = "badge admin"
    BADGE_ISSUER = "badge issuer"
    COURSE_ADMIN = "course admin"
    ROOM_MODERATOR = "room moderator (power level 50 or more in this room)"


class BadgeHolderLookup(Protocol):
    async def __call__(self, user_id: UserID, badge_slug: str) -> bool: ...


PowerLevelsFetcher = Callable[[RoomID], Awaitable[PowerLevelStateEventContent]]


class PermissionChecker:
    """Decides from the sender's MXID only, never from display names."""

    def __init__(
        self,
        *,
        admins: tuple[str, ...],
        badge_issuers: tuple[str, ...],
        course_admins: tuple[str, ...],
        badge_admins: tuple[str, ...] = (),
        power_levels: PowerLevelsFetcher,
        holds_badge: BadgeHolderLookup | None = None,
        issuer_scopes: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self._issuer_scopes = issuer_scopes or {}
        self._admins = frozenset(admins)
        self._grants = {
            Permission.BADGE_ADMIN: badge_admins,
            Permission.BADGE_ISSUER: badge_issuers,
            Permission.COURSE_ADMIN: course_admins,
        }
        self._power_levels = power_levels
        self.holds_badge = holds_badge

    def is_admin(self, user_id: UserID) -> bool:
        return user_id in self._admins

    async def may_issue(self, user_id: UserID, badge: str) -> bool:
        """Whether an issuer's scope (if they have one) includes ``badge``; admins always may.
        A user in several scopes (their MXID, badges they hold) may award any badge of them."""
        if self.is_admin(user_id):
            return True
        scopes = []
        for who, badges in self._issuer_scopes.items():
            if who == user_id or (
                who.startswith("badge:")
                and self.holds_badge is not None
                and await self.holds_badge(user_id, who.removeprefix("badge:"))
            ):
                scopes.append(badges)
        return not scopes or any(badge in badges for badges in scopes)

    def role_badges(self) -> frozenset[str]:
        """Badges that grant a permission (``badge:<slug>`` in a grant list): holding one makes
        an issuer or an admin, so only territory admins may award them."""
        return frozenset(
            grant.removeprefix("badge:")
            for grants in self._grants.values()
            for grant in grants
            if grant.startswith("badge:")
        )

    async def has(self, permission: Permission, user_id: UserID, room_id: RoomID) -> bool:
        if self.is_admin(user_id):
            return True
        if permission is Permission.TERRITORY_ADMIN:
            return False
        if permission is Permission.ROOM_MODERATOR:
            # The fetcher reads the bot's state store, kept current by the room's own events.
            levels = await self._power_levels(room_id)
            return levels.get_user_level(user_id) >= MODERATOR_POWER_LEVEL
        for grant in self._grants[permission]:
            if grant == user_id:
                return True
            holder_of = grant.removeprefix("badge:") if grant.startswith("badge:") else None
            if holder_of and self.holds_badge and await self.holds_badge(user_id, holder_of):
                return True
        return False

    async def missing(
        self, permissions: tuple[Permission, ...], user_id: UserID, room_id: RoomID
    ) -> list[Permission]:
        return [p for p in permissions if not await self.has(p, user_id, room_id)]
