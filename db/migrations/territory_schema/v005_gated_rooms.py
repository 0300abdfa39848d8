"""Territory v5: badge-gated rooms."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.gated_rooms (
            room_id             text PRIMARY KEY,
            badges              text[] NOT NULL CHECK (cardinality(badges) > 0),
            mode                text NOT NULL CHECK (mode IN ('all', 'any')),
            previous_join_rule  text NOT NULL,
            set_by              text NOT NULL,
            set_at              timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX gated_rooms_badges ON {schema}.gated_rooms USING gin (badges);
        """
    )
