"""Badge definitions (public schema, shared by territories) and awards (territory schema)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema


@dataclass(frozen=True)
class BadgeDefinition:
    slug: str
    name: str
    description: str
    valid_days: float | None
    prerequisites: tuple[str, ...]
    defined_in: str
    defined_by: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> BadgeDefinition:
        return cls(
            slug=row["slug"],
            name=row["name"],
            description=row["description"],
            valid_days=row["valid_days"],
            prerequisites=tuple(row["prerequisites"]),
            defined_in=row["defined_in"],
            defined_by=row["defined_by"],
        )


@dataclass(frozen=True)
class Award:
    id: int
    user_id: str
    badge_slug: str
    awarded_at: datetime
    awarded_by: str
    source: str
    expires_at: datetime | None
    renewed_at: datetime | None
    reminder_sent_at: datetime | None
    expired_at: datetime | None
    revoked_at: datetime | None
    revoked_by: str | None
    revoke_reason: str | None
    credential_id: str  # random: the credential's public URL names it, not the sequential id

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Award:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def is_current(self, now: datetime) -> bool:
        """Held now: not revoked, not marked expired, not past its expiry."""
        return (
            self.revoked_at is None
            and self.expired_at is None
            and (self.expires_at is None or self.expires_at > now)
        )


_AWARD_COLUMNS = (
    "id, user_id, badge_slug, awarded_at, awarded_by, source, expires_at, renewed_at, "
    "reminder_sent_at, expired_at, revoked_at, revoked_by, revoke_reason, credential_id"
)
_DEFINITION_COLUMNS = "slug, name, description, valid_days, prerequisites, defined_in, defined_by"


class BadgeDefinitionRepository:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, slug: str) -> BadgeDefinition | None:
        row = await self.db.fetchrow(
            f"SELECT {_DEFINITION_COLUMNS} FROM public.badge_definitions WHERE slug = $1", slug
        )
        return BadgeDefinition.from_row(row) if row else None

    async def define(self, badge: BadgeDefinition) -> bool | None:
        """Create or update; True when it was created, None when the slug belongs to another
        territory (only the territory that defined a badge changes it; row-level security refuses
        the write to any other, so it is not attempted)."""
        owner = await self.db.fetchval(
            "SELECT defined_in FROM public.badge_definitions WHERE slug = $1", badge.slug
        )
        if owner is not None and owner != badge.defined_in:
            return None
        created = await self.db.fetchval(
            """INSERT INTO public.badge_definitions
                   (slug, name, description, valid_days, prerequisites, defined_in, defined_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name,
                   description = EXCLUDED.description, valid_days = EXCLUDED.valid_days,
                   prerequisites = EXCLUDED.prerequisites, updated_at = now()
               WHERE public.badge_definitions.defined_in = EXCLUDED.defined_in
               RETURNING (xmax = 0)""",
            badge.slug,
            badge.name,
            badge.description,
            badge.valid_days,
            list(badge.prerequisites),
            badge.defined_in,
            badge.defined_by,
        )
        return None if created is None else bool(created)

    async def create_if_missing(self, badge: BadgeDefinition) -> bool:
        return bool(
            await self.db.fetchval(
                """INSERT INTO public.badge_definitions
                       (slug, name, description, valid_days, prerequisites, defined_in, defined_by)
                   VALUES ($1, $2, $3, $4, $5, $6, $7)
                   ON CONFLICT (slug) DO NOTHING RETURNING true""",
                badge.slug,
                badge.name,
                badge.description,
                badge.valid_days,
                list(badge.prerequisites),
                badge.defined_in,
                badge.defined_by,
            )
        )


class AwardRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    async def current(self, user_id: str, badge_slug: str) -> Award | None:
        """The award not revoked and not marked expired (it may be past expires_at)."""
        row = await self.db.fetchrow(
            f"""SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges
                WHERE user_id = $1 AND badge_slug = $2
                  AND revoked_at IS NULL AND expired_at IS NULL""",
            user_id,
            badge_slug,
        )
        return Award.from_row(row) if row else None

    async def latest(self, user_id: str, badge_slug: str) -> Award | None:
        """The most recent award of a badge to a user, whatever its state."""
        row = await self.db.fetchrow(
            f"""SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges
                WHERE user_id = $1 AND badge_slug = $2 ORDER BY id DESC LIMIT 1""",
            user_id,
            badge_slug,
        )
        return Award.from_row(row) if row else None

    async def get(self, award_id: int) -> Award | None:
        row = await self.db.fetchrow(
            f"SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges WHERE id = $1", award_id
        )
        return Award.from_row(row) if row else None

    async def by_credential_id(self, credential_id: str) -> Award | None:
        row = await self.db.fetchrow(
            f"SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges WHERE credential_id = $1",
            credential_id,
        )
        return Award.from_row(row) if row else None

    async def held_by(self, user_id: str) -> list[Award]:
        rows = await self.db.fetch(
            f"""SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges
                WHERE user_id = $1 AND revoked_at IS NULL AND expired_at IS NULL
                  AND (expires_at IS NULL OR expires_at > now())
                ORDER BY badge_slug""",
            user_id,
        )
        return [Award.from_row(row) for row in rows]

    async def holds(self, user_id: str, badge_slug: str) -> bool:
        return bool(
            await self.db.fetchval(
                f"""SELECT true FROM {self.schema}.user_badges
                    WHERE user_id = $1 AND badge_slug = $2 AND revoked_at IS NULL
                      AND expired_at IS NULL AND (expires_at IS NULL OR expires_at > now())""",
                user_id,
                badge_slug,
            )
        )

    async def insert(
        self,
        user_id: str,
        badge_slug: str,
        *,
        awarded_by: str,
        source: str,
        expires_at: datetime | None,
    ) -> Award:
        row = await self.db.fetchrow(
            f"""INSERT INTO {self.schema}.user_badges
                    (user_id, badge_slug, awarded_by, source, expires_at)
                VALUES ($1, $2, $3, $4, $5) RETURNING {_AWARD_COLUMNS}""",
            user_id,
            badge_slug,
            awarded_by,
            source,
            expires_at,
        )
        assert row is not None
        return Award.from_row(row)

    async def renew(self, award_id: int, expires_at: datetime | None) -> Award:
        row = await self.db.fetchrow(
            f"""UPDATE {self.schema}.user_badges
                SET expires_at = $2, renewed_at = now(), reminder_sent_at = NULL
                WHERE id = $1 RETURNING {_AWARD_COLUMNS}""",
            award_id,
            expires_at,
        )
        assert row is not None
        return Award.from_row(row)

    async def revoke(self, award_id: int, by: str, reason: str | None) -> Award:
        row = await self.db.fetchrow(
            f"""UPDATE {self.schema}.user_badges
                SET revoked_at = now(), revoked_by = $2, revoke_reason = $3
                WHERE id = $1 RETURNING {_AWARD_COLUMNS}""",
            award_id,
            by,
            reason,
        )
        assert row is not None
        return Award.from_row(row)

    async def due_reminders(self, lead_seconds: float, limit: int = 100) -> list[Award]:
        rows = await self.db.fetch(
            f"""SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges
                WHERE revoked_at IS NULL AND expired_at IS NULL AND reminder_sent_at IS NULL
                  AND expires_at IS NOT NULL AND expires_at > now()
                  AND expires_at <= now() + make_interval(secs => $1)
                ORDER BY expires_at LIMIT $2
                FOR UPDATE SKIP LOCKED""",
            lead_seconds,
            limit,
        )
        return [Award.from_row(row) for row in rows]

    async def mark_reminded(self, award_id: int) -> None:
        await self.db.execute(
            f"UPDATE {self.schema}.user_badges SET reminder_sent_at = now() WHERE id = $1",
            award_id,
        )

    async def due_expiries(self, limit: int = 100) -> list[Award]:
        rows = await self.db.fetch(
            f"""SELECT {_AWARD_COLUMNS} FROM {self.schema}.user_badges
                WHERE revoked_at IS NULL AND expired_at IS NULL
                  AND expires_at IS NOT NULL AND expires_at <= now()
                ORDER BY expires_at LIMIT $1
                FOR UPDATE SKIP LOCKED""",
            limit,
        )
        return [Award.from_row(row) for row in rows]

    async def mark_expired(self, award_id: int) -> bool:
        """True when this call marked it (it was not marked before)."""
        return bool(
            await self.db.fetchval(
                f"""UPDATE {self.schema}.user_badges SET expired_at = now()
                    WHERE id = $1 AND expired_at IS NULL RETURNING true""",
                award_id,
            )
        )
