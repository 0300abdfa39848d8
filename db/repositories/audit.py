"""The append-only audit log (global.audit_log)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from ..database import Database
from ..territory import TerritoryCode


@dataclass(frozen=True)
class AuditEntry:
    id: int
    occurred_at: datetime
    territory_code: str
    actor: str
    action: str
    target: str | None
    room_id: str | None
    details: dict[str, Any]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> AuditEntry:
        return cls(
            id=row["id"],
            occurred_at=row["occurred_at"],
            territory_code=row["territory_code"],
            actor=row["actor"],
            action=row["action"],
            target=row["target"],
            room_id=row["room_id"],
            details=json.loads(row["details"]),
        )


class AuditLog:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.territory = territory

    async def record(
        self,
        actor: str,
        action: str,
        *,
        target: str | None = None,
        room_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        return await self.db.fetchval(
            """INSERT INTO global.audit_log (territory_code, actor, action, target, room_id, details)
               VALUES ($1, $2, $3, $4, $5, $6::jsonb) RETURNING id""",
            self.territory,
            actor,
            action,
            target,
            room_id,
            json.dumps(details or {}),
        )

    async def recent(self, limit: int = 20, room_id: str | None = None) -> list[AuditEntry]:
        rows = await self.db.fetch(
            """SELECT id, occurred_at, territory_code, actor, action, target, room_id,
                      details::text AS details
               FROM global.audit_log
               WHERE territory_code = $1 AND ($2::text IS NULL OR room_id = $2)
               ORDER BY occurred_at DESC, id DESC LIMIT $3""",
            self.territory,
            room_id,
            limit,
        )
        return [AuditEntry.from_row(row) for row in rows]

    async def search(
        self, *, about: str | None = None, action: str | None = None, limit: int = 50
    ) -> list[AuditEntry]:
        """This territory's entries, newest first: those by or about ``about``, of ``action``
        (a prefix such as ``personal_data.`` matches a family)."""
        rows = await self.db.fetch(
            """SELECT id, occurred_at, territory_code, actor, action, target, room_id,
                      details::text AS details
               FROM global.audit_log
               WHERE territory_code = $1
                 AND ($2::text IS NULL OR actor = $2 OR target = $2)
                 AND ($3::text IS NULL OR action = $3
                      OR (right($3, 1) = '.' AND starts_with(action, $3)))
               ORDER BY occurred_at DESC, id DESC LIMIT $4""",
            self.territory,
            about,
            action,
            limit,
        )
        return [AuditEntry.from_row(row) for row in rows]
