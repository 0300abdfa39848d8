"""Consumer-side idempotency (processed events) and dead letters, per territory."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema


@dataclass(frozen=True)
class DeadLetter:
    id: int
    consumer: str
    event_id: uuid.UUID | None
    subject: str
    payload: str
    deliveries: int
    error: str
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> DeadLetter:
        return cls(**{key: row[key] for key in cls.__dataclass_fields__})


class ConsumedEventsRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    async def claim(self, consumer: str, event_id: uuid.UUID) -> bool:
        """Record the event as processed by ``consumer``; False if it already was.

        Call inside the transaction that applies the event's effect: if that transaction rolls back,
        the claim goes with it. A concurrent claim of the same event waits for this one to finish.
        """
        claimed = await self.db.fetchval(
            f"""INSERT INTO {self.schema}.processed_events (consumer, event_id) VALUES ($1, $2)
                ON CONFLICT DO NOTHING RETURNING true""",
            consumer,
            event_id,
        )
        return bool(claimed)

    async def is_processed(self, consumer: str, event_id: uuid.UUID) -> bool:
        return bool(
            await self.db.fetchval(
                f"""SELECT true FROM {self.schema}.processed_events
                    WHERE consumer = $1 AND event_id = $2""",
                consumer,
                event_id,
            )
        )

    async def add_dead_letter(
        self,
        consumer: str,
        event_id: uuid.UUID | None,
        subject: str,
        payload: str,
        deliveries: int,
        error: str,
    ) -> int:
        return await self.db.fetchval(
            f"""INSERT INTO {self.schema}.dead_letters
                    (consumer, event_id, subject, payload, deliveries, error)
                VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
            consumer,
            event_id,
            subject,
            payload,
            deliveries,
            error[:2000],
        )

    async def dead_letters(self, consumer: str | None = None) -> list[DeadLetter]:
        rows = await self.db.fetch(
            f"""SELECT id, consumer, event_id, subject, payload, deliveries, error, created_at
                FROM {self.schema}.dead_letters WHERE ($1::text IS NULL OR consumer = $1)
                ORDER BY id""",
            consumer,
        )
        return [DeadLetter.from_row(row) for row in rows]
