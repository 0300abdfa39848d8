"""Appservice transactions and the inbox of their events, kept durably per territory.

A transaction from the homeserver is recorded with its events in one database transaction. A replay
of the same (homeserver, txn_id) with the same events records nothing and so dispatches nothing.
(Synapse on SQLite reuses txn ids after a restart, so the key includes a digest of the event ids.)
Events stay ``pending`` until handled, so a crash before the reply makes the next start (and the
homeserver's retry) finish them. An event whose handling failed is ``failed`` with a time for its
next attempt (the sweeper's and the homeserver's retries take it again), and ``dead`` once given up.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema

InboxStatus = Literal["pending", "done", "failed", "dead", "keys"]

_EVENT = "event_id, homeserver, txn_id, txn_digest, seq, room_id, event::text, attempts"


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
    attempts: int = 0

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
            attempts=row["attempts"],
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
        # One statement, so one round trip and atomic: the transaction and its new events are
        # recorded together, or (a replay) neither.
        row = await self.db.fetchrow(
            f"""WITH txn AS (
                    INSERT INTO {self.schema}.as_transactions
                        (homeserver, txn_id, digest, event_count)
                    VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true),
                inbox AS (
                    INSERT INTO {self.schema}.as_inbox
                        (event_id, homeserver, txn_id, txn_digest, seq, room_id, event)
                    SELECT e.event_id, $1, $2, $3, e.seq, e.room_id, e.event
                    FROM unnest($5::text[], $6::int[], $7::text[], $8::jsonb[])
                         AS e(event_id, seq, room_id, event)
                    WHERE EXISTS (SELECT 1 FROM txn)
                    ORDER BY e.seq
                    ON CONFLICT (event_id) DO NOTHING
                    RETURNING event_id, seq, room_id, event, attempts)
                SELECT EXISTS (SELECT 1 FROM txn) AS recorded,
                       (SELECT coalesce(json_agg(inbox ORDER BY seq), '[]') FROM inbox)::text
                           AS fresh""",
            homeserver,
            txn_id,
            digest,
            len(events),
            [event["event_id"] for event in events],
            list(range(len(events))),
            [event.get("room_id") for event in events],
            [json.dumps(event) for event in events],
        )
        assert row is not None
        if not row["recorded"]:
            return None
        return [
            InboxEvent(
                event_id=item["event_id"],
                homeserver=homeserver,
                txn_id=txn_id,
                txn_digest=digest,
                seq=item["seq"],
                room_id=item["room_id"],
                event=item["event"],
                attempts=item["attempts"],
            )
            for item in json.loads(row["fresh"])
        ]

    async def mark(self, event_id: str, status: InboxStatus, error: str | None = None) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox SET status = $2, error = $3, handled_at = now()
                WHERE event_id = $1""",
            event_id,
            status,
            error,
        )

    async def mark_done(self, event_ids: list[str]) -> int:
        """Mark events handled, in one statement (a batch's, inside its transaction); how many
        of them were still unsettled."""
        if not event_ids:
            return 0
        status = await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox SET status = 'done', error = NULL,
                    handled_at = now()
                WHERE event_id = ANY($1::text[]) AND status IN ('pending', 'failed')""",
            event_ids,
        )
        return int(status.split()[-1])

    async def claim_many(self, event_ids: list[str]) -> set[str]:
        """In the handling transaction: lock the rows; those still to handle (not settled
        meanwhile by a concurrent retry of the same events)."""
        rows = await self.db.fetch(
            f"""SELECT event_id FROM {self.schema}.as_inbox
                WHERE event_id = ANY($1::text[]) AND status IN ('pending', 'failed')
                ORDER BY event_id FOR UPDATE""",
            event_ids,
        )
        return {row["event_id"] for row in rows}

    async def retry_later(self, event_id: str, attempts: int, seconds: float, error: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox
                SET status = 'failed', attempts = $2, error = $4, handled_at = now(),
                    next_attempt_at = now() + make_interval(secs => $3)
                WHERE event_id = $1""",
            event_id,
            attempts,
            seconds,
            error[:500],
        )

    async def give_up(self, event_id: str, attempts: int, error: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox
                SET status = 'dead', attempts = $2, error = $3, handled_at = now(),
                    next_attempt_at = NULL
                WHERE event_id = $1""",
            event_id,
            attempts,
            error[:500],
        )

    async def complete_if_settled(self, homeserver: str, txn_id: str, digest: str) -> int:
        """Mark the transaction complete when every event of it is done or dead-lettered, in one
        statement; the number of its events still unsettled (0: it was completed)."""
        return int(
            await self.db.fetchval(
                f"""WITH waiting AS (
                        SELECT count(*) AS n FROM {self.schema}.as_inbox
                        WHERE homeserver = $1 AND txn_id = $2 AND txn_digest = $3
                          AND status IN ('pending', 'failed')),
                    completed AS (
                        UPDATE {self.schema}.as_transactions SET completed_at = now()
                        WHERE homeserver = $1 AND txn_id = $2 AND digest = $3
                          AND completed_at IS NULL AND (SELECT n FROM waiting) = 0
                        RETURNING 1)
                    SELECT n FROM waiting""",
                homeserver,
                txn_id,
                digest,
            )
        )

    async def pending(self) -> list[InboxEvent]:
        """Events to handle now: never handled, or failed and due for another attempt."""
        rows = await self.db.fetch(
            f"""SELECT {_EVENT} FROM {self.schema}.as_inbox
                WHERE status = 'pending' OR (status = 'failed' AND next_attempt_at <= now())
                ORDER BY received_at, txn_id, seq"""
        )
        return [InboxEvent.from_row(row) for row in rows]

    async def unsettled(self, homeserver: str, txn_id: str, digest: str) -> list[InboxEvent]:
        """Events of one transaction that are neither done nor dead-lettered."""
        rows = await self.db.fetch(
            f"""SELECT {_EVENT} FROM {self.schema}.as_inbox
                WHERE homeserver = $1 AND txn_id = $2 AND txn_digest = $3
                  AND status IN ('pending', 'failed')
                ORDER BY seq""",
            homeserver,
            txn_id,
            digest,
        )
        return [InboxEvent.from_row(row) for row in rows]

    async def wait_for_keys(self, event_id: str, session_id: str) -> None:
        """An encrypted event whose room key has not arrived: settled for its transaction, tried
        again when keys come (``waiting_for_keys``)."""
        await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox
                SET status = 'keys', error = $2, handled_at = now(), next_attempt_at = NULL
                WHERE event_id = $1""",
            event_id,
            f"waiting for the room key of session {session_id}",
        )

    async def waiting_for_keys(self) -> list[InboxEvent]:
        rows = await self.db.fetch(
            f"""SELECT {_EVENT} FROM {self.schema}.as_inbox WHERE status = 'keys'
                ORDER BY received_at, txn_id, seq"""
        )
        return [InboxEvent.from_row(row) for row in rows]

    async def retry_with_keys(self, event_id: str) -> bool:
        """Its key arrived: the event is pending again (the sweeper handles it in order)."""
        status = await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox SET status = 'pending', error = NULL
                WHERE event_id = $1 AND status = 'keys'""",
            event_id,
        )
        return status.endswith(" 1")

    async def next_retry_in(self) -> float | None:
        """Seconds until the next failed event is due (None when none waits)."""
        value = await self.db.fetchval(
            f"""SELECT extract(epoch FROM min(next_attempt_at) - now())
                FROM {self.schema}.as_inbox WHERE status = 'failed'"""
        )
        return None if value is None else max(float(value), 0.0)

    async def counts(self) -> dict[str, int]:
        rows = await self.db.fetch(
            f"SELECT status, count(*) AS n FROM {self.schema}.as_inbox GROUP BY status"
        )
        return {r["status"]: r["n"] for r in rows}

    async def dead_letters(self, limit: int) -> list[tuple[InboxEvent, str | None]]:
        rows = await self.db.fetch(
            f"""SELECT {_EVENT}, error FROM {self.schema}.as_inbox WHERE status = 'dead'
                ORDER BY handled_at DESC LIMIT $1""",
            limit,
        )
        return [(InboxEvent.from_row(row), row["error"]) for row in rows]

    async def dead_since(self, seconds: float) -> int:
        return int(
            await self.db.fetchval(
                f"""SELECT count(*) FROM {self.schema}.as_inbox WHERE status = 'dead'
                    AND handled_at > now() - make_interval(secs => $1)""",
                seconds,
            )
        )

    async def revive(self, event_id: str) -> bool:
        """An operator's retry: the dead event is pending again (handled by the sweeper)."""
        status = await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox
                SET status = 'failed', attempts = 0, next_attempt_at = now()
                WHERE event_id = $1 AND status = 'dead'""",
            event_id,
        )
        return status.endswith(" 1")

    async def drop(self, event_id: str) -> bool:
        """An operator's verdict: the dead event stays recorded but is settled as done."""
        status = await self.db.execute(
            f"""UPDATE {self.schema}.as_inbox SET status = 'done', error = 'dropped: ' || error
                WHERE event_id = $1 AND status = 'dead'""",
            event_id,
        )
        return status.endswith(" 1")

    async def count(self, homeserver: str, txn_id: str | None = None) -> int:
        """Recorded transactions (one, or all of a homeserver): for tests and metrics."""
        return await self.db.fetchval(
            f"""SELECT count(*) FROM {self.schema}.as_transactions
                WHERE homeserver = $1 AND ($2::text IS NULL OR txn_id = $2)""",
            homeserver,
            txn_id,
        )
