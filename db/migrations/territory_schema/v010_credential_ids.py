"""Territory v10: each award's credential gets a random, unguessable id (its public URL), instead
of the award's sequential database id."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        ALTER TABLE {schema}.user_badges
            ADD COLUMN credential_id text NOT NULL
                DEFAULT replace(gen_random_uuid()::text, '-', '');
        CREATE UNIQUE INDEX user_badges_credential_id ON {schema}.user_badges (credential_id);
        """
    )
