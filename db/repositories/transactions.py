"""Appservice transactions and the inbox of their events, kept durably per territory.

A transaction from the homeserver is recorded with its events in one database transaction. A replay
of the same (homeserver, txn_id) with the same events records nothing and so dispatches nothing.
(Synapse on SQLite reuses txn ids after a restart, so the key includes a digest of the event ids.)
Events stay ``pending`` until handled, so a crash before the reply makes the next start (and the
homeserver's retry) finish them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema

InboxStatus = Literal["pending", "done", "failed"]


def transaction_digest(events: list[dict[str, Any]]) -> str:
    """What distinguishes a replay (same events) from a reused transaction id (other events)."""
    joined = "\n".join(str(event.get("event_id")) for event in events)
    return hashlib.sha256(joined.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class InboxEvent:
    event_id: str
    homeserver: str
    txn_id: str
    txn_digest: str
    seq: int
    room_id: str | None
    event: dict[str, Any]

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> InboxEvent:
        return cls(
            event_id=row["event_id"],
            homeserver=row["homeserver"],
            txn_id=row["txn_id"],
            txn_digest=row["txn_digest"],
            seq=row["seq"],
            room_id=row["room_id"],
            event=json.loads(row["event"]),
        )


class TransactionRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    async def record(
        self, homeserver: str, txn_id: str, events: list[dict[str, Any]]
    ) -> list[InboxEvent] | None:
        """Record a transaction; None when it was recorded before (a replay).

        Returns the events to dispatch: those with an event_id not already in the inbox.
        """
        digest = transaction_digest(events)
        async with self.db.transaction() as conn:
            inserted = await conn.fetchval(
                f"""INSERT INTO {self.schema}.as_transactions
                        (homeserver, txn_id, digest, event_count)
                    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
                homeserver,
                txn_id,
                digest,
                len(events),
            )
            if not inserted:
                return None
            fresh: list[InboxEvent] = []
            for seq, event in enumerate(events):
                row = await conn.fetchrow(
                    f"""INSERT INTO {self.schema}.as_inbox
                            (event_id, homeserver, txn_id, txn_digest, seq, room_id, event)
                        VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb)
                        ON CONFLICT (event_id) DO NOTHING
                        RETURNING event_id, homeserver, txn_id, txn_digest, seq, room_id,
                                  event::text""",
                    event["event_id"],
                    homeserver,
                    txn_id,
                    digest,
                    seq,
                    event.get("room_id"),
                    json.dumps(event),
                )
                if row is not None:
                    fresh.append(InboxEvent.from_row(row))
            return fresh

    async def mark(self, event_id: str, status: InboxStatus, error: str | None = None) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox SET status = $2, error = $3, handled_at = now()
                WHERE event_id = $1""",
            event_id,
            status,
            error,
        )

    async def complete(self, homeserver: str, txn_id: str, digest: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.as_transactions SET completed_at = now()
                WHERE homeserver = $1 AND txn_id = $2 AND digest = $3 AND completed_at IS NULL""",
            homeserver,
            txn_id,
            digest,
        )

    async def pending(self) -> list[InboxEvent]:
        rows = await self.db.fetch(
            f"""SELECT event_id, homeserver, txn_id, txn_digest, seq, room_id, event::text
                FROM {self.schema}.as_inbox WHERE status = 'pending'
                ORDER BY received_at, txn_id, seq"""
        )
        return [InboxEvent.from_row(row) for row in rows]

    async def count(self, homeserver: str, txn_id: str | None = None) -> int:
        """Recorded transactions (one, or all of a homeserver): for tests and metrics."""
        return await self.db.fetchval(
            f"""SELECT count(*) FROM {self.schema}.as_transactions
                WHERE homeserver = $1 AND ($2::text IS NULL OR txn_id = $2)""",
            homeserver,
            txn_id,
        )
