"""Territory v13: a member's pending `!me forget`: the confirmation word the bot asked for, until
it expires. Kept in the database so a restart between the question and the answer loses nothing."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        CREATE TABLE {schema}.erasure_requests (
            user_id     text PRIMARY KEY,
            word        text NOT NULL,
            asked_at    timestamptz NOT NULL DEFAULT now(),
            expires_at  timestamptz NOT NULL
        );
        """
    )
