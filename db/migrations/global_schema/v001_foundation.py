"""Global v1: the territory registry, users and the append-only audit log."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE global.territories (
            code            text PRIMARY KEY,
            name            text NOT NULL,
            server_name     text NOT NULL UNIQUE,
            homeserver_url  text NOT NULL,
            database_dsn    text NOT NULL,
            settings        jsonb NOT NULL DEFAULT '{}'::jsonb,
            created_at      timestamptz NOT NULL DEFAULT now(),
            updated_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE global.users (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            matrix_user_id  text NOT NULL UNIQUE,
            territory_code  text REFERENCES global.territories (code),
            created_at      timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE global.audit_log (
            id              bigint GENERATED ALWAYS AS IDENTITY,
            occurred_at     timestamptz NOT NULL DEFAULT now(),
            territory_code  text NOT NULL,
            actor           text NOT NULL,
            action          text NOT NULL,
            target          text,
            room_id         text,
            details         jsonb NOT NULL DEFAULT '{}'::jsonb,
            PRIMARY KEY (id, occurred_at)
        );
        CREATE INDEX audit_log_territory_time ON global.audit_log (territory_code, occurred_at DESC);
        CREATE FUNCTION global.audit_log_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only';
            END $$;
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON global.audit_log
            FOR EACH ROW EXECUTE FUNCTION global.audit_log_append_only();
        """
    )
    has_timescale = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    )
    if has_timescale:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        await conn.execute(
            "SELECT create_hypertable('global.audit_log', 'occurred_at', migrate_data => true)"
        )
