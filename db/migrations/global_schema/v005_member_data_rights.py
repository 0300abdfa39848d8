"""Global v5: members' data rights on the append-only audit log.

The log stays append-only for everyone: no territory role may UPDATE or DELETE it. Two functions,
owned by the schema's owner and run with its rights, are the only exceptions, and each acts only
on the calling territory's own entries (the login role says which territory that is):

- ``global.purge_audit_log(keep_days)`` deletes entries older than ``keep_days`` days (the
  territory's ``audit_retention_days``) and returns how many;
- ``global.erase_member(member, pseudonym)`` replaces a member's Matrix ID by a pseudonym in the
  territory's entries (actor, target, details) and deletes the member's row in ``global.users``.
"""

from __future__ import annotations

import asyncpg


async def upgrade(conn: asyncpg.Connection) -> None:
    await conn.execute(
        """
        CREATE OR REPLACE FUNCTION global.audit_log_append_only() RETURNS trigger
            LANGUAGE plpgsql AS $$
            BEGIN
                IF current_setting('unityplan.audit_maintenance', true) = 'on' THEN
                    IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
                    RETURN NEW;
                END IF;
                RAISE EXCEPTION 'audit_log is append-only';
            END $$;

        CREATE FUNCTION global.caller_territory() RETURNS text
            LANGUAGE sql STABLE
            AS $$ SELECT code FROM global.territory_roles WHERE role_name = session_user $$;

        CREATE FUNCTION global.purge_audit_log(keep_days integer) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = global, pg_temp AS $$
            DECLARE
                territory text := global.caller_territory();
                purged bigint;
            BEGIN
                IF territory IS NULL THEN
                    RAISE EXCEPTION 'purge_audit_log is for a territory role';
                END IF;
                IF keep_days IS NULL OR keep_days < 1 THEN
                    RAISE EXCEPTION 'keep_days must be at least 1, not %', keep_days;
                END IF;
                PERFORM set_config('unityplan.audit_maintenance', 'on', true);
                DELETE FROM global.audit_log
                    WHERE territory_code = territory
                      AND occurred_at < now() - make_interval(days => keep_days);
                GET DIAGNOSTICS purged = ROW_COUNT;
                PERFORM set_config('unityplan.audit_maintenance', 'off', true);
                RETURN purged;
            END $$;

        CREATE FUNCTION global.erase_member(member text, pseudonym text) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = global, pg_temp AS $$
            DECLARE
                territory text := global.caller_territory();
                changed bigint;
            BEGIN
                IF territory IS NULL THEN
                    RAISE EXCEPTION 'erase_member is for a territory role';
                END IF;
                IF member IS NULL OR member = '' OR pseudonym IS NULL OR pseudonym = '' THEN
                    RAISE EXCEPTION 'erase_member needs a member and a pseudonym';
                END IF;
                PERFORM set_config('unityplan.audit_maintenance', 'on', true);
                UPDATE global.audit_log
                    SET actor = CASE WHEN actor = member THEN pseudonym ELSE actor END,
                        target = CASE WHEN target = member THEN pseudonym ELSE target END,
                        details = replace(details::text, to_json(member)::text,
                                          to_json(pseudonym)::text)::jsonb
                    WHERE territory_code = territory
                      AND (actor = member OR target = member
                           OR strpos(details::text, to_json(member)::text) > 0);
                GET DIAGNOSTICS changed = ROW_COUNT;
                PERFORM set_config('unityplan.audit_maintenance', 'off', true);
                DELETE FROM global.users
                    WHERE matrix_user_id = member AND territory_code = territory;
                RETURN changed;
            END $$;

        REVOKE ALL ON FUNCTION global.purge_audit_log(integer) FROM PUBLIC;
        REVOKE ALL ON FUNCTION global.erase_member(text, text) FROM PUBLIC;
        """
    )
