"""Badges: define, award, revoke, renew, check. Every change is audited and emits its event.

Each operation runs in one territory-database transaction with its outbox event, so the award and
``badge.awarded`` commit together. Sentences of the ``DomainError``s raised here are shown to users as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from core.errors import Forbidden, NotFound, Refused
from core.events import EventEmitter
from core.ports import BadgeStatus
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.badges import (
    Award,
    AwardRepository,
    BadgeDefinition,
    BadgeDefinitionRepository,
)
from db.repositories.courses import CourseRepository
from db.territory import TerritoryCode

log = logging.getLogger("unityplan.badges")


@dataclass(frozen=True)
class AwardOutcome:
    award: Award
    renewed: bool  # the user held the badge already: its validity was extended


def end_of_day(day: date) -> datetime:
    return datetime.combine(day, time(23, 59, 59), tzinfo=UTC)


class BadgeService:
    def __init__(
        self,
        *,
        db: Database,
        definitions: BadgeDefinitionRepository,
        awards: AwardRepository,
        courses: CourseRepository,
        events: EventEmitter,
        audit: AuditLog,
        territory: TerritoryCode,
        command_prefix: str,
    ) -> None:
        self.prefix = command_prefix  # sentences that name a command use the configured prefix
        self.db = db
        self.definitions = definitions
        self.awards = awards
        self.courses = courses
        self.events = events
        self.audit = audit
        self.territory = territory

    async def definition(self, slug: str) -> BadgeDefinition:
        badge = await self.definitions.get(slug)
        if badge is None:
            raise NotFound(
                f"There is no badge {slug!r}. Send {self.prefix}badge list to see yours."
            )
        return badge

    async def define(
        self,
        slug: str,
        name: str,
        *,
        valid_days: float | None,
        requires: tuple[str, ...],
        actor: str,
        description: str = "",
    ) -> bool:
        for required in requires:
            if required == slug:
                raise Refused("A badge cannot require itself.")
            if await self.definitions.get(required) is None:
                raise NotFound(f"The required badge {required!r} does not exist.")
        created = await self.definitions.define(
            BadgeDefinition(
                slug=slug,
                name=name,
                description=description,
                valid_days=valid_days,
                prerequisites=requires,
                defined_in=self.territory,
                defined_by=actor,
            )
        )
        if created is None:
            owner = await self.definitions.get(slug)
            raise Forbidden(
                f"The badge {slug} belongs to territory {owner.defined_in if owner else '?'}; "
                "only that territory changes it."
            )
        await self.audit.record(
            actor,
            "badge.defined" if created else "badge.redefined",
            target=slug,
            details={"name": name, "valid_days": valid_days, "requires": list(requires)},
        )
        return created

    async def missing_prerequisites(self, user_id: str, badges: tuple[str, ...]) -> list[str]:
        return [slug for slug in badges if not await self.awards.holds(user_id, slug)]

    async def award(
        self,
        user_id: str,
        slug: str,
        *,
        by: str,
        source: str,
        expires: date | None = None,
        room_id: str | None = None,
    ) -> AwardOutcome:
        """Award (or, when already held, renew) a badge; emits badge.awarded or badge.renewed."""
        badge = await self.definition(slug)
        missing = await self.missing_prerequisites(user_id, badge.prerequisites)
        if missing:
            raise Forbidden(f"{user_id} cannot get {slug!r} yet: it requires {', '.join(missing)}.")
        now = datetime.now(UTC)
        expires_at: datetime | None
        if expires is not None:
            expires_at = end_of_day(expires)
            if expires_at <= now:
                raise Refused("The expiry date is in the past.")
        elif badge.valid_days is not None:
            expires_at = now + timedelta(days=badge.valid_days)
        else:
            expires_at = None
        async with self.db.transaction():
            current = await self.awards.current(user_id, slug)
            if current is not None and current.is_current(now):
                award = await self.awards.renew(current.id, expires_at)
                renewed = True
            else:
                if current is not None:  # past its expiry but not yet marked: close it first
                    await self.awards.mark_expired(current.id)
                award = await self.awards.insert(
                    user_id, slug, awarded_by=by, source=source, expires_at=expires_at
                )
                renewed = False
            await self.events.emit(
                "badge.renewed" if renewed else "badge.awarded",
                {
                    "award_id": award.id,
                    "user_id": user_id,
                    "badge": slug,
                    "badge_name": badge.name,
                    "source": source,
                    "expires_at": expires_at.isoformat() if expires_at else None,
                    "room_id": room_id,
                },
                actor=by,
            )
        await self.audit.record(
            by,
            "badge.renewed" if renewed else "badge.awarded",
            target=user_id,
            room_id=room_id,
            details={
                "badge": slug,
                "award_id": award.id,
                "source": source,
                "expires_at": expires_at.isoformat() if expires_at else None,
            },
        )
        return AwardOutcome(award, renewed)

    async def revoke(
        self, user_id: str, slug: str, *, by: str, reason: str | None, room_id: str | None = None
    ) -> Award:
        await self.definition(slug)
        async with self.db.transaction():
            current = await self.awards.current(user_id, slug)
            if current is None or not current.is_current(datetime.now(UTC)):
                raise NotFound(f"{user_id} does not hold {slug!r}.")
            award = await self.awards.revoke(current.id, by, reason)
            await self.events.emit(
                "badge.revoked",
                {"award_id": award.id, "user_id": user_id, "badge": slug, "reason": reason},
                actor=by,
            )
        await self.audit.record(
            by,
            "badge.revoked",
            target=user_id,
            room_id=room_id,
            details={"badge": slug, "award_id": award.id, "reason": reason},
        )
        return award

    async def renew_by_holder(self, user_id: str, slug: str) -> AwardOutcome:
        """`badge renew`: the holder renews when the badge's rule is met.

        The rule: a badge that courses award is renewed by completing one of those courses again
        after the badge was last awarded or renewed; other badges are renewed by an issuer.
        """
        badge = await self.definition(slug)
        current = await self.awards.current(user_id, slug)
        if current is None:
            raise NotFound(f"You do not hold {slug!r}; there is nothing to renew.")
        if current.expires_at is None:
            raise Refused(f"Your {slug!r} badge does not expire.")
        courses = await self.courses.awarding(slug)
        if not courses:
            raise Refused(
                f"{badge.name} is renewed by a badge issuer: ask one to send "
                f"{self.prefix}badge award {user_id} {slug}."
            )
        since = current.renewed_at or current.awarded_at
        for course in courses:
            enrollment = await self.courses.latest_enrollment(user_id, course.slug)
            if enrollment and enrollment.completed_at and enrollment.completed_at > since:
                return await self.award(user_id, slug, by=user_id, source=f"course:{course.slug}")
        names = " or ".join(f"{self.prefix}course enroll {c.slug}" for c in courses)
        raise Refused(
            f"To renew {badge.name}, complete its course again ({names}); "
            "the badge is renewed when you pass."
        )

    async def status(self, user_id: str, slug: str) -> BadgeStatus:
        """Whether the user holds the badge now (the badge.check answer)."""
        if await self.definitions.get(slug) is None:
            return BadgeStatus(valid=False, error=f"unknown badge {slug!r}")
        current = await self.awards.current(user_id, slug)
        if current is None or not current.is_current(datetime.now(UTC)):
            return BadgeStatus(valid=False)
        return BadgeStatus(valid=True, expires_at=current.expires_at)

    async def expire(self, award: Award) -> None:
        """Mark an award expired and emit badge.expired (the expiry scheduler calls this)."""
        async with self.db.transaction():
            if not await self.awards.mark_expired(award.id):
                return  # someone else got there first
            await self.events.emit(
                "badge.expired",
                {
                    "award_id": award.id,
                    "user_id": award.user_id,
                    "badge": award.badge_slug,
                    "expired_at": award.expires_at.isoformat() if award.expires_at else None,
                },
            )
        await self.audit.record(
            "system",
            "badge.expired",
            target=award.user_id,
            details={"badge": award.badge_slug, "award_id": award.id},
        )
