"""Durable consumers of the course and badge workflow.

- ``course.completed`` → award the course's badge (``badge.awarded``, or ``badge.renewed`` when the
  learner holds it already). Idempotent through the consumer's processed-event claim.
- ``badge.awarded`` / ``badge.renewed`` / ``badge.revoked`` / ``badge.expired`` → tell the holder by DM.
"""

from __future__ import annotations

import logging

from core.effects import Effects
from core.events import ConsumerSpec, EventEnvelope, event_subject
from core.html import code, escape
from db.repositories.courses import CourseRepository

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

    async def handle(self, event: EventEnvelope) -> None:
        data = event.data
        user_id, slug = str(data.get("user_id", "")), str(data.get("course", ""))
        enrollment = await self.courses.latest_enrollment(user_id, slug)
        if enrollment is None or enrollment.completed_at is None:
            log.warning(
                "course.completed %s for %s in %s without a completed enrolment: ignored",
                event.id,
                user_id,
                slug,
            )
            return
        course = await self.courses.get(enrollment.course_id)
        if course is None:
            return
        await self.badges.award(
            user_id,
            course.awards,
            by=self.bot_user_id,
            source=f"course:{course.slug}",
            room_id=data.get("room_id") if isinstance(data.get("room_id"), str) else None,
        )


class BadgeNotifier:
    TYPES = ("badge.awarded", "badge.renewed", "badge.revoked", "badge.expired")

    def __init__(self, effects: Effects, command_prefix: str) -> None:
        self.effects = effects
        self.prefix = command_prefix

    def spec(self, territory: str) -> ConsumerSpec:
        return ConsumerSpec(
            name=f"{territory}-badge-notices",
            subjects=tuple(event_subject(territory, t) for t in self.TYPES),
            handler=self.handle,
        )

    async def handle(self, event: EventEnvelope) -> None:
        data = event.data
        badge = code(data["badge"])
        name = escape(str(data.get("badge_name") or data["badge"]))
        expiry = (
            f" It is valid until {escape(data['expires_at'][:10])}."
            if data.get("expires_at")
            else ""
        )
        if event.type == "badge.awarded":
            text = f"🎉 You earned the badge <strong>{name}</strong> ({badge}).{expiry}"
        elif event.type == "badge.renewed":
            text = f"Your badge <strong>{name}</strong> ({badge}) was renewed.{expiry}"
        elif event.type == "badge.revoked":
            reason = f" Reason: {escape(data['reason'])}" if data.get("reason") else ""
            text = f"Your badge {badge} was revoked.{reason}"
        else:
            text = (
                f"Your badge {badge} has expired. Send <code>{escape(self.prefix)}badge renew "
                f"{escape(data['badge'])}"
                "</code> to see how to renew it."
            )
        await self.effects.dm(data["user_id"], text)
