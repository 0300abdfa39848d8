"""Global v4: each territory's public URL (its appservice's API, where its credentials and issuer
profile live). With the public key it lets any territory verify another's credentials."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE global.territories ADD COLUMN public_url text")
