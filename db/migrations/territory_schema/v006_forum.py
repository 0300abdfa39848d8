"""Territory v6: forum categories, topics (one room each), comments with revisions, votes."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.forum_categories (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            slug            text NOT NULL UNIQUE,
            name            text NOT NULL,
            description     text NOT NULL DEFAULT ''
        );
        INSERT INTO {schema}.forum_categories (slug, name, description)
            VALUES ('general', 'General', 'Everything else');
        CREATE TABLE {schema}.forum_topics (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            category_id     bigint NOT NULL REFERENCES {schema}.forum_categories (id),
            slug            text NOT NULL UNIQUE,
            title           text NOT NULL,
            matrix_room_id  text UNIQUE,
            created_by      text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            locked          boolean NOT NULL DEFAULT false
        );
        CREATE TABLE {schema}.forum_comments (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            topic_id        bigint NOT NULL REFERENCES {schema}.forum_topics (id),
            matrix_event_id text UNIQUE,
            author          text NOT NULL,
            parent_id       bigint REFERENCES {schema}.forum_comments (id),
            body            text NOT NULL,
            body_html       text,
            source          text NOT NULL CHECK (source IN ('matrix', 'api')),
            created_at      timestamptz NOT NULL DEFAULT now(),
            edited_at       timestamptz,
            deleted_at      timestamptz
        );
        CREATE INDEX forum_comments_topic ON {schema}.forum_comments (topic_id, id);
        CREATE TABLE {schema}.forum_comment_revisions (
            comment_id      bigint NOT NULL REFERENCES {schema}.forum_comments (id),
            revision        integer NOT NULL,
            body            text NOT NULL,
            body_html       text,
            matrix_event_id text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (comment_id, revision)
        );
        CREATE TABLE {schema}.forum_votes (
            comment_id      bigint NOT NULL REFERENCES {schema}.forum_comments (id),
            user_id         text NOT NULL,
            value           smallint NOT NULL CHECK (value IN (-1, 1)),
            matrix_event_id text,
            voted_at        timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (comment_id, user_id)
        );
        CREATE INDEX forum_votes_event ON {schema}.forum_votes (matrix_event_id);
        """
    )
