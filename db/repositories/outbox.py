"""The transactional outbox: events written in the same transaction as the change they describe.

``add`` also issues ``pg_notify`` in that transaction, so the relay wakes the moment it commits.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema


@dataclass(frozen=True)
class OutboxRow:
    seq: int
    event_id: uuid.UUID
    subject: str
    event_type: str
    payload: str
    created_at: datetime
    attempts: int
    trace_context: dict[str, str]  # W3C headers of what emitted it (core/tracing.py)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> OutboxRow:
        return cls(
            seq=row["seq"],
            event_id=row["event_id"],
            subject=row["subject"],
            event_type=row["event_type"],
            payload=row["payload"],
            created_at=row["created_at"],
            attempts=row["attempts"],
            trace_context=json.loads(row["trace_context"]),
        )


def notify_channel(territory: TerritoryCode) -> str:
    return f"unityplan_outbox_{territory}"


class OutboxRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)
        self.channel = notify_channel(territory)

    async def add(
        self,
        event_id: uuid.UUID,
        subject: str,
        event_type: str,
        payload: str,
        trace_context: dict[str, str] | None = None,
    ) -> None:
        """Queue an event. Inside a transaction it is written with the transaction's other
        events in one statement just before the commit; outside one, at once."""
        row = (event_id, subject, event_type, payload, json.dumps(trace_context or {}))
        if not self.db.write_later(f"outbox {self.schema}", row, self._write):
            await self._write([row])

    async def _write(self, rows: list[tuple[uuid.UUID, str, str, str, str]]) -> None:
        """The rows, in order, and the relay's wake-up (delivered at commit)."""
        await self.db.execute(
            f"""WITH queued AS (
                    INSERT INTO {self.schema}.outbox
                        (event_id, subject, event_type, payload, trace_context)
                    SELECT r.event_id, r.subject, r.event_type, r.payload, r.trace_context
                    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::jsonb[])
                         WITH ORDINALITY
                         AS r(event_id, subject, event_type, payload, trace_context, n)
                    ORDER BY r.n
                    RETURNING 1)
                SELECT pg_notify($6, '') WHERE EXISTS (SELECT 1 FROM queued)""",
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [row[3] for row in rows],
            [row[4] for row in rows],
            self.channel,
        )

    async def unpublished(self, limit: int = 100) -> list[OutboxRow]:
        rows = await self.db.fetch(
            f"""SELECT seq, event_id, subject, event_type, payload, created_at, attempts,
                       trace_context::text AS trace_context
                FROM {self.schema}.outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1""",
            limit,
        )
        return [OutboxRow.from_row(row) for row in rows]

    async def mark_published(self, acked: list[tuple[int, int]]) -> None:
        """Mark rows published: (outbox seq, stream seq) pairs."""
        await self.db.execute(
            f"""UPDATE {self.schema}.outbox AS o SET published_at = clock_timestamp(),
                    stream_seq = a.stream_seq, attempts = o.attempts + 1, last_error = NULL
                FROM unnest($1::bigint[], $2::bigint[]) AS a(seq, stream_seq)
                WHERE o.seq = a.seq""",
            [seq for seq, _ in acked],
            [stream_seq for _, stream_seq in acked],
        )

    async def mark_failed(self, seq: int, error: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.outbox SET attempts = attempts + 1, last_error = $2
                WHERE seq = $1""",
            seq,
            error[:500],
        )

    async def backlog(self) -> int:
        return await self.db.fetchval(
            f"SELECT count(*) FROM {self.schema}.outbox WHERE published_at IS NULL"
        )
