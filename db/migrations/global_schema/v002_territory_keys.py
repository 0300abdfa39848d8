"""Global v2: each territory's public signing key (Ed25519, base64url) in the registry. Consumers
verify bus messages against the key of the territory a message claims to come from."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE global.territories ADD COLUMN public_key text")
