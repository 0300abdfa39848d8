"""Public v1: badge definitions and translations."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE public.badge_definitions (
            slug            text PRIMARY KEY CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
            name            text NOT NULL,
            description     text NOT NULL DEFAULT '',
            valid_days      double precision CHECK (valid_days IS NULL OR valid_days > 0),
            prerequisites   text[] NOT NULL DEFAULT '{}',
            defined_in      text NOT NULL,
            defined_by      text NOT NULL,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE public.translations (
            key             text NOT NULL,
            language        text NOT NULL,
            text            text NOT NULL,
            PRIMARY KEY (key, language)
        );
        """
    )
