"""Courses (versioned), their lessons and quiz questions, enrolments and quiz answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema


@dataclass(frozen=True)
class Lesson:
    position: int
    title: str
    body: str
    materials: tuple[str, ...]


@dataclass(frozen=True)
class Question:
    position: int
    question: str
    choices: tuple[str, ...]
    answer: int  # 1-based


@dataclass(frozen=True)
class Course:
    id: int
    slug: str
    version: int
    title: str
    description: str
    prerequisites: tuple[str, ...]
    awards: str
    pass_mark: float
    lesson_count: int
    question_count: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Course:
        return cls(
            id=row["id"],
            slug=row["slug"],
            version=row["version"],
            title=row["title"],
            description=row["description"],
            prerequisites=tuple(row["prerequisites"]),
            awards=row["awards"],
            pass_mark=row["pass_mark"],
            lesson_count=row["lesson_count"],
            question_count=row["question_count"],
        )


@dataclass(frozen=True)
class Enrollment:
    id: int
    user_id: str
    course_id: int
    course_slug: str
    enrolled_at: datetime
    lessons_done: int
    attempt: int
    questions_shown: int
    best_score: float | None
    completed_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Enrollment:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


_ENROLLMENT_COLUMNS = (
    "id, user_id, course_id, course_slug, enrolled_at, lessons_done, attempt, questions_shown, "
    "best_score, completed_at"
)


class CourseRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    def _course_select(self) -> str:
        s = self.schema
        return f"""SELECT c.id, c.slug, c.version, c.title, c.description, c.prerequisites,
                          c.awards, c.pass_mark,
                          (SELECT count(*) FROM {s}.lessons l WHERE l.course_id = c.id)
                              AS lesson_count,
                          (SELECT count(*) FROM {s}.quiz_questions q WHERE q.course_id = c.id)
                              AS question_count
                   FROM {s}.courses c"""

    async def add(
        self,
        *,
        slug: str,
        version: int,
        title: str,
        description: str,
        prerequisites: list[str],
        awards: str,
        pass_mark: float,
        lessons: list[Lesson],
        questions: list[Question],
        source: str,
        imported_by: str,
    ) -> int:
        async with self.db.transaction() as conn:
            course_id: int = await conn.fetchval(
                f"""INSERT INTO {self.schema}.courses (slug, version, title, description,
                        prerequisites, awards, pass_mark, source, imported_by)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
                slug,
                version,
                title,
                description,
                prerequisites,
                awards,
                pass_mark,
                source,
                imported_by,
            )
            await conn.executemany(
                f"""INSERT INTO {self.schema}.lessons (course_id, position, title, body, materials)
                    VALUES ($1, $2, $3, $4, $5)""",
                [(course_id, x.position, x.title, x.body, list(x.materials)) for x in lessons],
            )
            await conn.executemany(
                f"""INSERT INTO {self.schema}.quiz_questions
                        (course_id, position, question, choices, answer)
                    VALUES ($1, $2, $3, $4, $5)""",
                [(course_id, q.position, q.question, list(q.choices), q.answer) for q in questions],
            )
            return course_id

    async def latest_version(self, slug: str) -> int | None:
        return await self.db.fetchval(
            f"SELECT max(version) FROM {self.schema}.courses WHERE slug = $1", slug
        )

    async def latest(self, slug: str) -> Course | None:
        row = await self.db.fetchrow(
            f"{self._course_select()} WHERE c.slug = $1 ORDER BY c.version DESC LIMIT 1", slug
        )
        return Course.from_row(row) if row else None

    async def get(self, course_id: int) -> Course | None:
        row = await self.db.fetchrow(f"{self._course_select()} WHERE c.id = $1", course_id)
        return Course.from_row(row) if row else None

    async def list_latest(self) -> list[Course]:
        rows = await self.db.fetch(
            f"""{self._course_select()}
                WHERE c.version = (SELECT max(version) FROM {self.schema}.courses x
                                   WHERE x.slug = c.slug)
                ORDER BY c.slug"""
        )
        return [Course.from_row(row) for row in rows]

    async def awarding(self, badge_slug: str) -> list[Course]:
        rows = await self.db.fetch(
            f"""{self._course_select()}
                WHERE c.awards = $1 AND c.version = (SELECT max(version)
                    FROM {self.schema}.courses x WHERE x.slug = c.slug)
                ORDER BY c.slug""",
            badge_slug,
        )
        return [Course.from_row(row) for row in rows]

    async def lesson(self, course_id: int, position: int) -> Lesson | None:
        row = await self.db.fetchrow(
            f"""SELECT position, title, body, materials FROM {self.schema}.lessons
                WHERE course_id = $1 AND position = $2""",
            course_id,
            position,
        )
        return (
            Lesson(row["position"], row["title"], row["body"], tuple(row["materials"]))
            if row
            else None
        )

    async def question(self, course_id: int, position: int) -> Question | None:
        row = await self.db.fetchrow(
            f"""SELECT position, question, choices, answer FROM {self.schema}.quiz_questions
                WHERE course_id = $1 AND position = $2""",
            course_id,
            position,
        )
        if row is None:
            return None
        return Question(row["position"], row["question"], tuple(row["choices"]), row["answer"])

    # --- enrolments ---------------------------------------------------------------------------

    async def open_enrollment(self, user_id: str, slug: str) -> Enrollment | None:
        row = await self.db.fetchrow(
            f"""SELECT {_ENROLLMENT_COLUMNS} FROM {self.schema}.enrollments
                WHERE user_id = $1 AND course_slug = $2 AND completed_at IS NULL""",
            user_id,
            slug,
        )
        return Enrollment.from_row(row) if row else None

    async def enrollment(self, enrollment_id: int) -> Enrollment | None:
        row = await self.db.fetchrow(
            f"SELECT {_ENROLLMENT_COLUMNS} FROM {self.schema}.enrollments WHERE id = $1",
            enrollment_id,
        )
        return Enrollment.from_row(row) if row else None

    async def latest_enrollment(self, user_id: str, slug: str) -> Enrollment | None:
        row = await self.db.fetchrow(
            f"""SELECT {_ENROLLMENT_COLUMNS} FROM {self.schema}.enrollments
                WHERE user_id = $1 AND course_slug = $2 ORDER BY id DESC LIMIT 1""",
            user_id,
            slug,
        )
        return Enrollment.from_row(row) if row else None

    async def enrollments_of(self, user_id: str) -> list[Enrollment]:
        rows = await self.db.fetch(
            f"""SELECT DISTINCT ON (course_slug) {_ENROLLMENT_COLUMNS}
                FROM {self.schema}.enrollments WHERE user_id = $1
                ORDER BY course_slug, id DESC""",
            user_id,
        )
        return [Enrollment.from_row(row) for row in rows]

    async def enroll(self, user_id: str, course: Course) -> Enrollment:
        row = await self.db.fetchrow(
            f"""INSERT INTO {self.schema}.enrollments (user_id, course_id, course_slug)
                VALUES ($1, $2, $3) RETURNING {_ENROLLMENT_COLUMNS}""",
            user_id,
            course.id,
            course.slug,
        )
        assert row is not None
        return Enrollment.from_row(row)

    async def lock(self, enrollment_id: int) -> Enrollment:
        """Re-read an enrolment with a row lock (call inside a transaction)."""
        row = await self.db.fetchrow(
            f"""SELECT {_ENROLLMENT_COLUMNS} FROM {self.schema}.enrollments
                WHERE id = $1 FOR UPDATE""",
            enrollment_id,
        )
        assert row is not None
        return Enrollment.from_row(row)

    async def update_progress(
        self,
        enrollment_id: int,
        *,
        lessons_done: int,
        attempt: int,
        questions_shown: int,
        best_score: float | None,
        completed: bool = False,
    ) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.enrollments SET lessons_done = $2, attempt = $3,
                    questions_shown = $4, best_score = $5,
                    completed_at = CASE WHEN $6 THEN now() ELSE completed_at END
                WHERE id = $1""",
            enrollment_id,
            lessons_done,
            attempt,
            questions_shown,
            best_score,
            completed,
        )

    async def record_answer(
        self, enrollment_id: int, attempt: int, position: int, choice: int, correct: bool
    ) -> bool:
        """The first answer to a question in an attempt counts; False when one was recorded."""
        return bool(
            await self.db.fetchval(
                f"""INSERT INTO {self.schema}.quiz_answers
                        (enrollment_id, attempt, position, choice, correct)
                    VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
                enrollment_id,
                attempt,
                position,
                choice,
                correct,
            )
        )

    async def attempt_ended_at(self, enrollment_id: int, attempt: int) -> datetime | None:
        """When the attempt's last answer was given."""
        value = await self.db.fetchval(
            f"""SELECT max(answered_at) FROM {self.schema}.quiz_answers
                WHERE enrollment_id = $1 AND attempt = $2""",
            enrollment_id,
            attempt,
        )
        return value if isinstance(value, datetime) else None

    async def answered(self, enrollment_id: int, attempt: int) -> dict[int, bool]:
        rows = await self.db.fetch(
            f"""SELECT position, correct FROM {self.schema}.quiz_answers
                WHERE enrollment_id = $1 AND attempt = $2""",
            enrollment_id,
            attempt,
        )
        return {row["position"]: row["correct"] for row in rows}
