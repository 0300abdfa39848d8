"""Territory v1: appservice transactions and inbox, user profiles."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.as_transactions (
            homeserver      text NOT NULL,
            txn_id          text NOT NULL,
            event_count     integer NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now(),
            completed_at    timestamptz,
            PRIMARY KEY (homeserver, txn_id)
        );
        CREATE TABLE {schema}.as_inbox (
            event_id        text PRIMARY KEY,
            homeserver      text NOT NULL,
            txn_id          text NOT NULL,
            seq             integer NOT NULL,
            room_id         text,
            event           jsonb NOT NULL,
            status          text NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'done', 'failed')),
            error           text,
            received_at     timestamptz NOT NULL DEFAULT now(),
            handled_at      timestamptz
        );
        CREATE INDEX as_inbox_pending ON {schema}.as_inbox (received_at, seq)
            WHERE status = 'pending';
        CREATE TABLE {schema}.user_profiles (
            matrix_user_id  text PRIMARY KEY,
            display_name    text,
            language        text,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        """
    )
