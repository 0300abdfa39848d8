"""Durable consumers of the course and badge workflow.

- ``course.completed`` → award the course's badge (``badge.awarded``, or ``badge.renewed`` when the
  learner holds it already). Idempotent through the consumer's processed-event claim.
- ``badge.awarded`` / ``badge.renewed`` / ``badge.revoked`` / ``badge.expired`` → tell the holder by DM.

Both read the member from the row the event names (the enrolment, the award): the events of a
territory that keeps its members' data at home carry no member ids at all.
"""

from __future__ import annotations

import logging

from core.effects import Effects
from core.events import ConsumerSpec, EventEnvelope, event_subject
from core.html import code, escape
from db.repositories.badges import AwardRepository
from db.repositories.courses import CourseRepository, Enrollment

from .badges import BadgeService

log = logging.getLogger("unityplan.badges")


class CourseBadgeAwarder:
    """Awards a course's badge on ``course.completed`` — re-derived from this territory's own
    database: the learner's completed enrolment and the badge the course itself awards. The event
    only says whom to look at; a forged or stale payload awards nothing."""

    def __init__(self, badges: BadgeService, courses: CourseRepository, bot_user_id: str) -> None:
        self.badges = badges
        self.courses = courses
        self.bot_user_id = bot_user_id

    def spec(self, territory: str) -> ConsumerSpec:
        return ConsumerSpec(
            name=f"{territory}-course-badges",
            subjects=(event_subject(territory, "course.completed"),),
            handler=self.handle,
        )

    async def _enrollment(self, data: dict[str, object]) -> Enrollment | None:
        enrollment_id = data.get("enrollment_id")
        if isinstance(enrollment_id, int):
            return await self.courses.enrollment(enrollment_id)
        # Events queued before they named the enrolment.
        user_id, slug = str(data.get("user_id", "")), str(data.get("course", ""))
        return await self.courses.latest_enrollment(user_id, slug)

    async def handle(self, event: EventEnvelope) -> None:
        data = event.data
        enrollment = await self._enrollment(data)
        if enrollment is None or enrollment.completed_at is None:
            log.warning(
                "course.completed %s (%s) without a completed enrolment: ignored",
                event.id,
                data.get("course"),
            )
            return
        course = await self.courses.get(enrollment.course_id)
        if course is None:
            return
        await self.badges.award(
            enrollment.user_id,
            course.awards,
            by=self.bot_user_id,
            source=f"course:{course.slug}",
            room_id=data.get("room_id") if isinstance(data.get("room_id"), str) else None,
        )


class BadgeNotifier:
    TYPES = ("badge.awarded", "badge.renewed", "badge.revoked", "badge.expired")

    def __init__(self, effects: Effects, awards: AwardRepository, command_prefix: str) -> None:
        self.effects = effects
        self.awards = awards
        self.prefix = command_prefix

    def spec(self, territory: str) -> ConsumerSpec:
        return ConsumerSpec(
            name=f"{territory}-badge-notices",
            subjects=tuple(event_subject(territory, t) for t in self.TYPES),
            handler=self.handle,
        )

    async def handle(self, event: EventEnvelope) -> None:
        data = event.data
        award_id = data.get("award_id")
        award = await self.awards.get(award_id) if isinstance(award_id, int) else None
        if award is None:
            log.warning("%s %s names no award of ours: ignored", event.type, event.id)
            return
        if not award.user_id.startswith("@"):
            return  # its holder was erased: nobody to tell
        badge = code(award.badge_slug)
        name = escape(str(data.get("badge_name") or award.badge_slug))
        expiry = f" It is valid until {award.expires_at:%Y-%m-%d}." if award.expires_at else ""
        if event.type == "badge.awarded":
            text = f"🎉 You earned the badge <strong>{name}</strong> ({badge}).{expiry}"
        elif event.type == "badge.renewed":
            text = f"Your badge <strong>{name}</strong> ({badge}) was renewed.{expiry}"
        elif event.type == "badge.revoked":
            reason = f" Reason: {escape(award.revoke_reason)}" if award.revoke_reason else ""
            text = f"Your badge {badge} was revoked.{reason}"
        else:
            text = (
                f"Your badge {badge} has expired. Send <code>{escape(self.prefix)}badge renew "
                f"{escape(award.badge_slug)}"
                "</code> to see how to renew it."
            )
        await self.effects.dm(award.user_id, text)
