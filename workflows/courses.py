"""Courses: import (versioned), enrol, next lesson or question, answer, progress, completion.

A learner's enrolment is pinned to the course version they enrolled in; importing a new version
changes what new enrolments get, never a running one. ``next`` delivers the lessons in order, then
the quiz questions in order, and shows the open question again while it is unanswered. An attempt's
score is the share of its questions answered right (the first answer to each counts). Passing
completes the course and emits ``course.completed`` in the same transaction; the badge follows from
the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.errors import Conflict, Forbidden, NotFound, Refused, Unavailable
from core.events import EventEmitter
from core.progress import Progress as ProgressBar
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.badges import BadgeDefinition, BadgeDefinitionRepository
from db.repositories.courses import Course, CourseRepository, Enrollment, Lesson, Question
from db.repositories.media import Material
from db.territory import TerritoryCode

from .badges import BadgeService
from .course_file import CourseFile
from .materials import MaterialStore


@dataclass(frozen=True)
class ImportOutcome:
    course: Course
    badge_created: bool


@dataclass(frozen=True)
class LessonStep:
    course: Course
    lesson: Lesson


@dataclass(frozen=True)
class QuestionStep:
    course: Course
    question: Question
    attempt: int
    repeated: bool  # shown again because it is still unanswered


@dataclass(frozen=True)
class Finished:
    course: Course
    completed_now: bool = False  # a course without a quiz completes with its last lesson


Step = LessonStep | QuestionStep | Finished


@dataclass(frozen=True)
class AnswerOutcome:
    course: Course
    correct: bool  # never which choice was right: the next attempt must not be a lookup
    attempt_finished: bool
    score: float | None  # when the attempt finished
    passed: bool
    already_answered: bool = False


@dataclass(frozen=True)
class Progress:
    course: Course
    enrollment: Enrollment


class CourseService:
    def __init__(
        self,
        *,
        db: Database,
        courses: CourseRepository,
        definitions: BadgeDefinitionRepository,
        badges: BadgeService,
        events: EventEmitter,
        audit: AuditLog,
        territory: TerritoryCode,
        command_prefix: str,
        materials: MaterialStore | None = None,
        max_attempts: int = 0,
        cooldown_seconds: float = 0,
    ) -> None:
        self.max_attempts = max_attempts  # 0: unlimited
        self.cooldown_seconds = cooldown_seconds
        self.prefix = command_prefix  # sentences that name a command use the configured prefix
        self.materials = materials
        self.db = db
        self.courses = courses
        self.definitions = definitions
        self.badges = badges
        self.events = events
        self.audit = audit
        self.territory = territory

    async def import_course(
        self,
        spec: CourseFile,
        *,
        actor: str,
        source: str,
        base_dir: Path | None = None,
        show: bool = False,
    ) -> ImportOutcome:
        """Import a course; materials (paths relative to ``base_dir``, or CIDs) are pinned on
        IPFS first, encrypted when the course is badge-gated (has prerequisites). ``show``: the
        command line's progress on the materials."""
        latest = await self.courses.latest_version(spec.slug)
        if latest is not None and spec.version <= latest:
            raise Conflict(
                f"{spec.slug} version {spec.version} cannot be imported: version {latest} exists; "
                "raise `version` in the file."
            )
        for prerequisite in spec.prerequisites:
            if await self.definitions.get(prerequisite) is None:
                raise NotFound(f"The prerequisite badge {prerequisite!r} does not exist.")
        awarded = await self.definitions.get(spec.awards)
        if awarded is not None and awarded.defined_in != self.territory:
            raise Forbidden(
                f"A course of {self.territory} awards only badges {self.territory} defines; "
                f"{spec.awards} belongs to {awarded.defined_in}."
            )
        pinned: dict[int, list[Material]] = {}
        count = sum(len(lesson.materials) for lesson in spec.lessons)
        bar = ProgressBar("Storing materials on IPFS", count) if count and show else None
        for number, lesson in enumerate(spec.lessons, start=1):
            if lesson.materials:
                if self.materials is None:
                    raise Unavailable("This course has materials, but no IPFS node is configured.")
                pinned[number] = []
                for ref in lesson.materials:
                    material = await self.materials.pin(
                        ref, base_dir=base_dir, encrypted=bool(spec.prerequisites)
                    )
                    pinned[number].append(material)
                    if bar is not None:
                        bar.advance(note=f"{material.name} ({material.size:,} bytes)")
        async with self.db.transaction():
            badge_created = await self.definitions.create_if_missing(
                BadgeDefinition(
                    slug=spec.awards,
                    name=spec.title,
                    description=f"Awarded for completing the course {spec.title}.",
                    valid_days=None,
                    prerequisites=(),
                    defined_in=self.territory,
                    defined_by=actor,
                )
            )
            course_id = await self.courses.add(
                slug=spec.slug,
                version=spec.version,
                title=spec.title,
                description=spec.description,
                prerequisites=list(spec.prerequisites),
                awards=spec.awards,
                pass_mark=spec.pass_mark,
                lessons=[
                    Lesson(i, lesson.title, lesson.body, lesson.materials)
                    for i, lesson in enumerate(spec.lessons, start=1)
                ],
                questions=[
                    Question(i, q.question, q.choices, q.answer)
                    for i, q in enumerate(spec.quiz, start=1)
                ],
                source=source,
                imported_by=actor,
            )
            for number, materials in pinned.items():
                assert self.materials is not None
                await self.materials.record(course_id, number, materials)
            await self.events.emit(
                "course.imported",
                {"course": spec.slug, "version": spec.version, "awards": spec.awards},
                actor=actor,
            )
        course = await self.courses.get(course_id)
        assert course is not None
        await self.audit.record(
            actor,
            "course.imported",
            target=spec.slug,
            details={"version": spec.version, "source": source},
        )
        return ImportOutcome(course, badge_created)

    async def course(self, slug: str) -> Course:
        course = await self.courses.latest(slug)
        if course is None:
            raise NotFound(
                f"There is no course {slug!r}. Send {self.prefix}course list to see them."
            )
        return course

    async def enroll(self, user_id: str, slug: str) -> tuple[Course, bool]:
        """Returns the course enrolled in and whether this is a re-enrolment to renew a badge."""
        course = await self.course(slug)
        if await self.courses.open_enrollment(user_id, slug) is not None:
            raise Conflict(
                f"You are already enrolled in {course.title}. Send {self.prefix}course next {slug} to go on."
            )
        missing = await self.badges.missing_prerequisites(user_id, course.prerequisites)
        if missing:
            raise Forbidden(
                f"You cannot enrol in {course.title} yet: it requires the badge"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)}."
            )
        previous = await self.courses.latest_enrollment(user_id, slug)
        async with self.db.transaction():
            enrollment = await self.courses.enroll(user_id, course)
            await self.events.emit(
                "course.enrolled",
                {
                    "enrollment_id": enrollment.id,
                    "user_id": user_id,
                    "course": slug,
                    "version": course.version,
                },
                actor=user_id,
            )
        return course, previous is not None

    async def _open(self, user_id: str, slug: str) -> tuple[Enrollment, Course]:
        enrollment = await self.courses.open_enrollment(user_id, slug)
        if enrollment is None:
            latest = await self.courses.latest_enrollment(user_id, slug)
            if latest is not None and latest.completed_at is not None:
                raise Conflict(f"You have completed {slug} already.")
            await self.course(slug)  # a clear error for an unknown course
            raise Refused(
                f"You are not enrolled in {slug}. Send {self.prefix}course enroll {slug} first."
            )
        course = await self.courses.get(enrollment.course_id)
        assert course is not None
        return enrollment, course

    async def next(self, user_id: str, slug: str) -> Step:
        async with self.db.transaction():
            enrollment, course = await self._open(user_id, slug)
            enrollment = await self.courses.lock(enrollment.id)
            if enrollment.lessons_done < course.lesson_count:
                lesson = await self.courses.lesson(course.id, enrollment.lessons_done + 1)
                assert lesson is not None
                await self.courses.update_progress(
                    enrollment.id,
                    lessons_done=enrollment.lessons_done + 1,
                    attempt=enrollment.attempt,
                    questions_shown=enrollment.questions_shown,
                    best_score=enrollment.best_score,
                )
                return LessonStep(course, lesson)
            if course.question_count == 0:
                await self.courses.update_progress(
                    enrollment.id,
                    lessons_done=enrollment.lessons_done,
                    attempt=enrollment.attempt,
                    questions_shown=0,
                    best_score=1.0,
                    completed=True,
                )
                await self._completed(
                    user_id, course, enrollment.id, score=1.0, attempt=1, room_id=None
                )
                return Finished(course, completed_now=True)
            answered = await self.courses.answered(enrollment.id, enrollment.attempt)
            shown = enrollment.questions_shown
            if shown and shown not in answered:
                question = await self.courses.question(course.id, shown)
                assert question is not None
                return QuestionStep(course, question, enrollment.attempt, repeated=True)
            attempt = enrollment.attempt
            if shown >= course.question_count:  # the last attempt failed: start a new one
                await self._may_try_again(enrollment, course)
                attempt, shown = attempt + 1, 0
            question = await self.courses.question(course.id, shown + 1)
            assert question is not None
            await self.courses.update_progress(
                enrollment.id,
                lessons_done=enrollment.lessons_done,
                attempt=attempt,
                questions_shown=shown + 1,
                best_score=enrollment.best_score,
            )
            return QuestionStep(course, question, attempt, repeated=False)

    async def _may_try_again(self, enrollment: Enrollment, course: Course) -> None:
        """Attempts are limited and spaced, so a quiz cannot be solved by trying every choice."""
        if self.max_attempts and enrollment.attempt >= self.max_attempts:
            raise Refused(
                f"You have used all {self.max_attempts} attempts at the quiz of {course.title}; "
                "ask a course admin if you want another chance."
            )
        if self.cooldown_seconds:
            ended = await self.courses.attempt_ended_at(enrollment.id, enrollment.attempt)
            if ended is not None:
                wait = self.cooldown_seconds - (datetime.now(UTC) - ended).total_seconds()
                if wait > 0:
                    raise Refused(
                        f"Take a break: your next attempt at {course.title} can start in "
                        f"{_duration(wait)}."
                    )

    async def answer(
        self, user_id: str, slug: str, choice: int, *, room_id: str | None = None
    ) -> AnswerOutcome:
        async with self.db.transaction():
            enrollment, course = await self._open(user_id, slug)
            enrollment = await self.courses.lock(enrollment.id)
            shown = enrollment.questions_shown
            answered = await self.courses.answered(enrollment.id, enrollment.attempt)
            if enrollment.lessons_done < course.lesson_count or shown == 0 or shown in answered:
                raise Refused(
                    f"There is no open question in {course.title}. "
                    f"Send {self.prefix}course next {slug} for the next step."
                )
            question = await self.courses.question(course.id, shown)
            assert question is not None
            if not 1 <= choice <= len(question.choices):
                raise Refused(f"Choose a number from 1 to {len(question.choices)}.")
            correct = choice == question.answer
            await self.courses.record_answer(
                enrollment.id, enrollment.attempt, shown, choice, correct
            )
            answered[shown] = correct
            if shown < course.question_count:
                return AnswerOutcome(course, correct, False, None, False)
            score = sum(answered.values()) / course.question_count
            passed = score >= course.pass_mark
            best = max(score, enrollment.best_score or 0.0)
            await self.courses.update_progress(
                enrollment.id,
                lessons_done=enrollment.lessons_done,
                attempt=enrollment.attempt,
                questions_shown=shown,
                best_score=best,
                completed=passed,
            )
            if passed:
                await self._completed(
                    user_id,
                    course,
                    enrollment.id,
                    score=score,
                    attempt=enrollment.attempt,
                    room_id=room_id,
                )
            return AnswerOutcome(course, correct, True, score, passed)

    async def _completed(
        self,
        user_id: str,
        course: Course,
        enrollment_id: int,
        *,
        score: float,
        attempt: int,
        room_id: str | None,
    ) -> None:
        await self.events.emit(
            "course.completed",
            {
                "enrollment_id": enrollment_id,
                "user_id": user_id,
                "course": course.slug,
                "version": course.version,
                "awards": course.awards,
                "score": score,
                "attempt": attempt,
                "room_id": room_id,
            },
            actor=user_id,
        )

    async def progress(self, user_id: str, slug: str | None) -> list[Progress]:
        if slug is not None:
            enrollment = await self.courses.latest_enrollment(user_id, slug)
            if enrollment is None:
                await self.course(slug)
                raise NotFound(f"You are not enrolled in {slug}.")
            enrollments = [enrollment]
        else:
            enrollments = await self.courses.enrollments_of(user_id)
        result = []
        for enrollment in enrollments:
            course = await self.courses.get(enrollment.course_id)
            assert course is not None
            result.append(Progress(course, enrollment))
        return result


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.0f} hours"
    if seconds >= 60:
        return f"{seconds / 60:.0f} minutes"
    return f"{max(seconds, 1):.0f} seconds"
