"""Territory v14: encrypted events waiting for their room key.

A member's message in an encrypted room can arrive before the key that decrypts it (their device
sends it to the bot's device as a to-device message, which may come in a later transaction). Such
an event is settled for its transaction (the homeserver is not held up) with the status ``keys``;
when keys arrive it is tried again, and after ``encryption.key_wait_seconds`` its sender is told.
"""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        ALTER TABLE {schema}.as_inbox DROP CONSTRAINT IF EXISTS as_inbox_status_check;
        ALTER TABLE {schema}.as_inbox
            ADD CONSTRAINT as_inbox_status_check
                CHECK (status IN ('pending', 'done', 'failed', 'dead', 'keys'));
        CREATE INDEX as_inbox_waiting_keys ON {schema}.as_inbox (received_at)
            WHERE status = 'keys';
        """
    )
