"""Badge expiry: reminders before, ``badge.expired`` at expiry. State lives in the awards table
(reminder_sent_at, expired_at), so a restart picks up exactly where the last run stopped."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from core.background import every
from core.effects import Effects, caused_by
from core.html import code, escape
from db.database import Database
from db.repositories.badges import Award, AwardRepository, BadgeDefinitionRepository

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
        effects: Effects,
        reminder_lead_seconds: float,
        interval_seconds: float,
        command_prefix: str,
    ) -> None:
        self.prefix = command_prefix
        self.db = db
        self.awards = awards
        self.definitions = definitions
        self.badges = badges
        self.effects = effects
        self.reminder_lead_seconds = reminder_lead_seconds
        self.interval_seconds = interval_seconds

    async def run(self) -> None:
        await every(self.interval_seconds, self.tick, "The badge expiry check")

    async def tick(self) -> tuple[int, int]:
        """One pass: send due reminders, expire due awards. Returns (reminded, expired).

        Each reminder and each expiry is its own transaction (the reminder DM is an effect queued
        with it), so one that fails is logged and retried next pass while the others go on, and
        the expiry phase always runs."""
        reminded = expired = 0
        for award in await self.awards.due_reminders(self.reminder_lead_seconds):
            try:
                with caused_by(f"badge-reminder:{award.id}"):
                    async with self.db.transaction():
                        await self._remind(award)
                reminded += 1
            except Exception:
                log.exception("Reminder for award %d failed; trying again next pass", award.id)
        for award in await self.awards.due_expiries():
            try:
                with caused_by(f"badge-expiry:{award.id}"):
                    await self.badges.expire(award)
                expired += 1
            except Exception:
                log.exception("Expiring award %d failed; trying again next pass", award.id)
        if reminded or expired:
            log.info("Badge expiry: %d reminders queued, %d badges expired", reminded, expired)
        return reminded, expired

    async def _remind(self, award: Award) -> None:
        assert award.expires_at is not None
        badge = await self.definitions.get(award.badge_slug)
        name = escape(badge.name if badge else award.badge_slug)
        left = award.expires_at - datetime.now(UTC)
        renew = f"{self.prefix}badge renew {award.badge_slug}"
        await self.effects.dm(
            award.user_id,
            f"⏰ Your badge <strong>{name}</strong> ({code(award.badge_slug)}) expires on "
            f"{award.expires_at:%Y-%m-%d %H:%M} UTC ({_humanise(left.total_seconds())} "
            f"from now). Send {code(renew)} to see how to renew it.",
        )
        await self.awards.mark_reminded(award.id)


def _humanise(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.0f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{max(seconds, 0):.0f} seconds"
