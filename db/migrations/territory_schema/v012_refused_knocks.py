"""Territory v12: knocks the gate refused, so that a member of a territory that says nothing about
its members on the bus (allow_cross_border: false) is still invited once their territory awards
the badge: the award names only the badge, and the gate asks again about those who knocked."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.refused_knocks (
            room_id     text NOT NULL,
            user_id     text NOT NULL,
            refused_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (room_id, user_id)
        );
        CREATE INDEX refused_knocks_user ON {schema}.refused_knocks (user_id);
        """
    )
