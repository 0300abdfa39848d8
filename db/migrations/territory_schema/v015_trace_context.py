"""Territory v15: the trace context of what emitted an outbox event (W3C ``traceparent``), so the
relay's NATS message and every consumer continue the same trace (core/tracing.py)."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"ALTER TABLE {schema}.outbox ADD COLUMN trace_context jsonb NOT NULL DEFAULT '{{}}'"
    )
