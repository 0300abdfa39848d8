"""Territory v2: the transactional outbox, consumer-side idempotency and dead letters, per territory."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.outbox (
            seq             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id        uuid NOT NULL UNIQUE,
            subject         text NOT NULL,
            event_type      text NOT NULL,
            payload         text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
            published_at    timestamptz,
            stream_seq      bigint,
            attempts        integer NOT NULL DEFAULT 0,
            last_error      text
        );
        CREATE INDEX outbox_unpublished ON {schema}.outbox (seq) WHERE published_at IS NULL;
        CREATE TABLE {schema}.processed_events (
            consumer        text NOT NULL,
            event_id        uuid NOT NULL,
            processed_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        );
        CREATE TABLE {schema}.dead_letters (
            id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            consumer        text NOT NULL,
            event_id        uuid,
            subject         text NOT NULL,
            payload         text NOT NULL,
            deliveries      integer NOT NULL,
            error           text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX dead_letters_consumer ON {schema}.dead_letters (consumer, created_at);
        """
    )
