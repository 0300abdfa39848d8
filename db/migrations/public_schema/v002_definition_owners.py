"""Public v2: badge definitions are readable by every territory and written only by the
territory that defines them (row-level security; see global v3)."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        ALTER TABLE public.badge_definitions ENABLE ROW LEVEL SECURITY;
        CREATE POLICY definitions_read ON public.badge_definitions FOR SELECT USING (true);
        CREATE POLICY definitions_own_insert ON public.badge_definitions FOR INSERT
            WITH CHECK (defined_in = global.own_territory());
        CREATE POLICY definitions_own_update ON public.badge_definitions FOR UPDATE
            USING (defined_in = global.own_territory())
            WITH CHECK (defined_in = global.own_territory());
        """
    )
