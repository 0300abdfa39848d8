"""Territory v3: a transaction is identified by (homeserver, txn_id, digest of its event ids).

Synapse on SQLite starts its transaction ids at 1 again after a restart, so a txn_id alone does not
identify a transaction forever. A replay carries the same events (same digest) and stays a no-op; a
reused id with other events is new work.
"""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection, schema: str) -> None:
    await conn.execute(
        f"""
        ALTER TABLE {schema}.as_transactions ADD COLUMN digest text NOT NULL DEFAULT '';
        ALTER TABLE {schema}.as_transactions DROP CONSTRAINT as_transactions_pkey;
        ALTER TABLE {schema}.as_transactions ADD PRIMARY KEY (homeserver, txn_id, digest);
        ALTER TABLE {schema}.as_inbox ADD COLUMN txn_digest text NOT NULL DEFAULT '';
        """
    )
