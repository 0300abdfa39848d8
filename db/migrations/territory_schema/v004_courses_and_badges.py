"""Territory v4: badge awards, courses, lessons, quizzes, enrolments, quiz answers, direct rooms."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.user_badges (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id         text NOT NULL,
            badge_slug      text NOT NULL,
            awarded_at      timestamptz NOT NULL DEFAULT now(),
            awarded_by      text NOT NULL,
            source          text NOT NULL,
            expires_at      timestamptz,
            renewed_at      timestamptz,
            reminder_sent_at timestamptz,
            expired_at      timestamptz,
            revoked_at      timestamptz,
            revoked_by      text,
            revoke_reason   text
        );
        CREATE UNIQUE INDEX user_badges_one_current ON {schema}.user_badges (user_id, badge_slug)
            WHERE revoked_at IS NULL AND expired_at IS NULL;
        CREATE INDEX user_badges_expiring ON {schema}.user_badges (expires_at)
            WHERE revoked_at IS NULL AND expired_at IS NULL AND expires_at IS NOT NULL;

        CREATE TABLE {schema}.courses (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            slug            text NOT NULL CHECK (slug ~ '^[a-z0-9-]+$'),
            version         integer NOT NULL CHECK (version > 0),
            title           text NOT NULL,
            description     text NOT NULL DEFAULT '',
            prerequisites   text[] NOT NULL DEFAULT '{{}}',
            awards          text NOT NULL,
            pass_mark       double precision NOT NULL CHECK (pass_mark >= 0 AND pass_mark <= 1),
            source          text NOT NULL,
            imported_by     text NOT NULL,
            imported_at     timestamptz NOT NULL DEFAULT now(),
            UNIQUE (slug, version)
        );
        CREATE TABLE {schema}.lessons (
            course_id       bigint NOT NULL REFERENCES {schema}.courses (id),
            position        integer NOT NULL,
            title           text NOT NULL,
            body            text NOT NULL,
            materials       text[] NOT NULL DEFAULT '{{}}',
            PRIMARY KEY (course_id, position)
        );
        CREATE TABLE {schema}.quiz_questions (
            course_id       bigint NOT NULL REFERENCES {schema}.courses (id),
            position        integer NOT NULL,
            question        text NOT NULL,
            choices         text[] NOT NULL,
            answer          integer NOT NULL,
            PRIMARY KEY (course_id, position)
        );
        CREATE TABLE {schema}.enrollments (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id         text NOT NULL,
            course_id       bigint NOT NULL REFERENCES {schema}.courses (id),
            course_slug     text NOT NULL,
            enrolled_at     timestamptz NOT NULL DEFAULT now(),
            lessons_done    integer NOT NULL DEFAULT 0,
            attempt         integer NOT NULL DEFAULT 1,
            questions_shown integer NOT NULL DEFAULT 0,
            best_score      double precision,
            completed_at    timestamptz
        );
        CREATE UNIQUE INDEX enrollments_one_open ON {schema}.enrollments (user_id, course_slug)
            WHERE completed_at IS NULL;
        CREATE TABLE {schema}.quiz_answers (
            enrollment_id   bigint NOT NULL REFERENCES {schema}.enrollments (id),
            attempt         integer NOT NULL,
            position        integer NOT NULL,
            choice          integer NOT NULL,
            correct         boolean NOT NULL,
            answered_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (enrollment_id, attempt, position)
        );
        CREATE TABLE {schema}.direct_rooms (
            user_id         text PRIMARY KEY,
            room_id         text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        """
    )
