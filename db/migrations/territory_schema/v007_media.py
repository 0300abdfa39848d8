"""Territory v7: files on IPFS: content objects (one per CID), uploads (one per Matrix event), a durable queue."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.media_objects (
            cid             text PRIMARY KEY,
            size            bigint NOT NULL,
            mime            text NOT NULL,
            encrypted       boolean NOT NULL DEFAULT false,
            pinned          boolean NOT NULL DEFAULT true,
            mxc_url         text,
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE {schema}.file_uploads (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            cid             text NOT NULL REFERENCES {schema}.media_objects (cid),
            filename        text NOT NULL,
            mime            text NOT NULL,
            size            bigint NOT NULL,
            uploader        text NOT NULL,
            room_id         text,
            matrix_event_id text UNIQUE,
            comment_id      bigint REFERENCES {schema}.forum_comments (id),
            created_at      timestamptz NOT NULL DEFAULT now(),
            redacted_at     timestamptz
        );
        CREATE INDEX file_uploads_cid ON {schema}.file_uploads (cid) WHERE redacted_at IS NULL;
        CREATE TABLE {schema}.media_queue (
            matrix_event_id text PRIMARY KEY,
            room_id         text NOT NULL,
            uploader        text NOT NULL,
            mxc_url         text NOT NULL,
            filename        text NOT NULL,
            declared_mime   text,
            declared_size   bigint,
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error      text,
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        """
    )
