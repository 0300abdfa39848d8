"""Global v3: least privilege. Each territory's processes log in as the territory's own role
(``global.territory_roles`` says which role speaks for which territory). The shared tables keep
row-level security: every territory reads the registry, but writes only its own registry row, its
own users and its own audit entries, and reads only its own audit entries. The admin role that owns
the schema (and migrates it) is not subject to these policies."""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE TABLE global.territory_roles (
            role_name   name PRIMARY KEY,
            code        text NOT NULL UNIQUE  -- the role may exist before its registry row
        );
        CREATE FUNCTION global.own_territory() RETURNS text
            LANGUAGE sql STABLE
            AS $$ SELECT code FROM global.territory_roles WHERE role_name = current_user $$;

        ALTER TABLE global.territories ENABLE ROW LEVEL SECURITY;
        CREATE POLICY registry_read ON global.territories FOR SELECT USING (true);
        CREATE POLICY registry_own_insert ON global.territories FOR INSERT
            WITH CHECK (code = global.own_territory());
        CREATE POLICY registry_own_update ON global.territories FOR UPDATE
            USING (code = global.own_territory()) WITH CHECK (code = global.own_territory());

        ALTER TABLE global.users ENABLE ROW LEVEL SECURITY;
        CREATE POLICY users_read ON global.users FOR SELECT USING (true);
        CREATE POLICY users_own_insert ON global.users FOR INSERT
            WITH CHECK (territory_code = global.own_territory());
        CREATE POLICY users_own_update ON global.users FOR UPDATE
            USING (territory_code = global.own_territory())
            WITH CHECK (territory_code = global.own_territory());

        ALTER TABLE global.audit_log ENABLE ROW LEVEL SECURITY;
        CREATE POLICY audit_own_read ON global.audit_log FOR SELECT
            USING (territory_code = global.own_territory());
        CREATE POLICY audit_own_insert ON global.audit_log FOR INSERT
            WITH CHECK (territory_code = global.own_territory());
        """
    )
