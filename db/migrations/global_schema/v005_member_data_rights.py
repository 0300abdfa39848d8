"""Global v5: members' data rights on the append-only audit log.

The log stays append-only for everyone: no territory role may UPDATE or DELETE it. Two functions,
owned by the schema's owner and run with its rights, are the only exceptions. Each acts only on
one territory's own entries: a territory role only on its own (its login role says which), the
owner of the shared schemas (one role for everything) on the territory it names.

- ``global.purge_audit_log(territory, keep_days)`` deletes entries older than ``keep_days`` days
  (the territory's ``audit_retention_days``) and returns how many;
- ``global.erase_member(territory, member, pseudonym, summary)`` replaces a member's Matrix ID by
  a pseudonym of the form ``former-member-<12 hex>`` in the territory's entries (actor, target,
  details), deletes the member's row in ``global.users``, and records ``member.erased`` under the
  pseudonym, once: run again with the same pseudonym it changes nothing.
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

        CREATE FUNCTION global.acting_territory(wanted text) RETURNS text
            LANGUAGE plpgsql STABLE AS $$
            DECLARE
                own text := (SELECT code FROM global.territory_roles
                             WHERE role_name = session_user);
            BEGIN
                IF own IS NOT NULL THEN
                    IF own IS DISTINCT FROM wanted THEN
                        RAISE EXCEPTION 'the role of territory % may not act for %', own, wanted;
                    END IF;
                    RETURN own;
                END IF;
                IF session_user::text = (SELECT nspowner::regrole::text FROM pg_namespace
                                         WHERE nspname = 'global')
                   OR (SELECT rolsuper FROM pg_roles WHERE rolname = session_user) THEN
                    RETURN wanted;
                END IF;
                RAISE EXCEPTION '% speaks for no territory', session_user;
            END $$;

        CREATE FUNCTION global.purge_audit_log(territory text, keep_days integer) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = global, pg_temp AS $$
            DECLARE
                code text := global.acting_territory(territory);
                purged bigint;
            BEGIN
                IF keep_days IS NULL OR keep_days < 1 THEN
                    RAISE EXCEPTION 'keep_days must be at least 1, not %', keep_days;
                END IF;
                PERFORM set_config('unityplan.audit_maintenance', 'on', true);
                DELETE FROM global.audit_log
                    WHERE territory_code = code
                      AND occurred_at < now() - make_interval(days => keep_days);
                GET DIAGNOSTICS purged = ROW_COUNT;
                PERFORM set_config('unityplan.audit_maintenance', 'off', true);
                RETURN purged;
            END $$;

        CREATE FUNCTION global.erase_member(
            territory text, member text, pseudonym text, summary jsonb
        ) RETURNS bigint
            LANGUAGE plpgsql SECURITY DEFINER SET search_path = global, pg_temp AS $$
            DECLARE
                code text := global.acting_territory(territory);
                changed bigint;
            BEGIN
                IF member IS NULL OR member !~ '^@[^:]+:.+$' THEN
                    RAISE EXCEPTION 'erase_member takes a Matrix user ID, not %', member;
                END IF;
                IF pseudonym IS NULL OR pseudonym !~ '^former-member-[0-9a-f]{12}$' THEN
                    RAISE EXCEPTION 'erase_member takes a pseudonym former-member-<12 hex>';
                END IF;
                PERFORM set_config('unityplan.audit_maintenance', 'on', true);
                UPDATE global.audit_log
                    SET actor = CASE WHEN actor = member THEN pseudonym ELSE actor END,
                        target = CASE WHEN target = member THEN pseudonym ELSE target END,
                        details = replace(details::text, to_json(member)::text,
                                          to_json(pseudonym)::text)::jsonb
                    WHERE territory_code = code
                      AND (actor = member OR target = member
                           OR strpos(details::text, to_json(member)::text) > 0);
                GET DIAGNOSTICS changed = ROW_COUNT;
                PERFORM set_config('unityplan.audit_maintenance', 'off', true);
                DELETE FROM global.users
                    WHERE matrix_user_id = member AND territory_code = code;
                IF NOT EXISTS (SELECT 1 FROM global.audit_log
                               WHERE territory_code = code AND action = 'member.erased'
                                 AND actor = pseudonym) THEN
                    INSERT INTO global.audit_log (territory_code, actor, action, target, details)
                        VALUES (code, pseudonym, 'member.erased', pseudonym,
                                coalesce(summary, '{}'::jsonb)
                                    || jsonb_build_object('audit_entries', changed));
                END IF;
                RETURN changed;
            END $$;

        REVOKE ALL ON FUNCTION global.purge_audit_log(text, integer) FROM PUBLIC;
        REVOKE ALL ON FUNCTION global.erase_member(text, text, text, jsonb) FROM PUBLIC;
        """
    )
