"""Territory v11: rooms other territories gate (from their signed gate.required events), so this
territory's homeserver module refuses its own members' joins to them before the host has to."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.remote_gates (
            room_id     text PRIMARY KEY,
            territory   text NOT NULL,
            badges      text[] NOT NULL,
            mode        text NOT NULL CHECK (mode IN ('all', 'any')),
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        """
    )
