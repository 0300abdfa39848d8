"""Badge expiry: reminders before, ``badge.expired`` at expiry. State lives in the awards table
(reminder_sent_at, expired_at), so a restart picks up exactly where the last run stopped."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from core.html import code, escape
from core.matrix import DirectMessenger
from db.database import Database
from db.repositories.badges import AwardRepository, BadgeDefinitionRepository

from .badges import BadgeService

log = logging.getLogger("unityplan.badges.expiry")


class ExpiryScheduler:
    def __init__(
        self,
        *,
        db: Database,
        awards: AwardRepository,
        definitions: BadgeDefinitionRepository,
        badges: BadgeService,
        messenger: DirectMessenger,
        reminder_lead_seconds: float,
        interval_seconds: float,
        command_prefix: str,
    ) -> None:
        self.prefix = command_prefix
        self.db = db
        self.awards = awards
        self.definitions = definitions
        self.badges = badges
        self.messenger = messenger
        self.reminder_lead_seconds = reminder_lead_seconds
        self.interval_seconds = interval_seconds

    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception(
                    "Badge expiry check failed; trying again in %.0f s", self.interval_seconds
                )
            await asyncio.sleep(self.interval_seconds)

    async def tick(self) -> tuple[int, int]:
        """One pass: send due reminders, expire due awards. Returns (reminded, expired)."""
        reminded = 0
        async with self.db.transaction():
            for award in await self.awards.due_reminders(self.reminder_lead_seconds):
                assert award.expires_at is not None
                badge = await self.definitions.get(award.badge_slug)
                name = escape(badge.name if badge else award.badge_slug)
                left = award.expires_at - datetime.now(UTC)
                await self.messenger.send(
                    award.user_id,
                    f"⏰ Your badge <strong>{name}</strong> ({code(award.badge_slug)}) expires on "
                    f"{award.expires_at:%Y-%m-%d %H:%M} UTC ({_humanise(left.total_seconds())} "
                    f"from now). Send <code>{escape(self.prefix)}badge renew {escape(award.badge_slug)}</code> to "
                    "see how to renew it.",
                )
                await self.awards.mark_reminded(award.id)
                reminded += 1
        expired = 0
        for award in await self.awards.due_expiries():
            await self.badges.expire(award)
            expired += 1
        if reminded or expired:
            log.info("Badge expiry: %d reminders sent, %d badges expired", reminded, expired)
        return reminded, expired


def _humanise(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{max(seconds, 0):.0f} seconds"
