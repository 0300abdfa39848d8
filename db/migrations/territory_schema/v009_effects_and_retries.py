"""Territory v9: the durable effects queue (Matrix calls leave after commit), and inbox retries.

Inbox events whose handling failed for a transient reason are ``failed`` with a next attempt time
and retried by a sweeper; after the last attempt they are ``dead`` (dead-lettered). Rows that were
``failed`` under version 8 had been given up for good: they become ``dead``.
"""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.effects (
            id              bigserial PRIMARY KEY,
            txn_id          text NOT NULL UNIQUE,
            room_key        text NOT NULL,
            kind            text NOT NULL,
            payload         jsonb NOT NULL,
            cause           text,
            state           text NOT NULL DEFAULT 'pending'
                            CHECK (state IN ('pending', 'done', 'dead')),
            attempts        integer NOT NULL DEFAULT 0,
            next_attempt_at timestamptz NOT NULL DEFAULT now(),
            last_error      text,
            result          jsonb,
            created_at      timestamptz NOT NULL DEFAULT now(),
            done_at         timestamptz
        );
        CREATE INDEX effects_pending ON {schema}.effects (room_key, id) WHERE state = 'pending';
        CREATE INDEX effects_dead ON {schema}.effects (id) WHERE state = 'dead';

        ALTER TABLE {schema}.as_inbox DROP CONSTRAINT IF EXISTS as_inbox_status_check;
        UPDATE {schema}.as_inbox SET status = 'dead' WHERE status = 'failed';
        ALTER TABLE {schema}.as_inbox
            ADD CONSTRAINT as_inbox_status_check
                CHECK (status IN ('pending', 'done', 'failed', 'dead')),
            ADD COLUMN attempts integer NOT NULL DEFAULT 0,
            ADD COLUMN next_attempt_at timestamptz;
        CREATE INDEX as_inbox_retry ON {schema}.as_inbox (next_attempt_at)
            WHERE status = 'failed';
        """
    )
