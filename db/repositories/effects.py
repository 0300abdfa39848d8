"""The durable effects queue: what a handler wants done in Matrix, recorded in its transaction and
delivered after commit, in order per room, until done or dead-lettered."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema

EffectState = Literal["pending", "done", "dead"]

_COLUMNS = """id, txn_id, room_key, kind, payload::text AS payload, cause, state, attempts,
              next_attempt_at, last_error, created_at"""


@dataclass(frozen=True)
class EffectRow:
    id: int
    txn_id: str
    room_key: str
    kind: str
    payload: dict[str, Any]
    cause: str | None
    state: EffectState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> EffectRow:
        return cls(
            id=row["id"],
            txn_id=row["txn_id"],
            room_key=row["room_key"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            cause=row["cause"],
            state=row["state"],
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"],
            last_error=row["last_error"],
            created_at=row["created_at"],
        )


class EffectRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    async def add(
        self, *, txn_id: str, room_key: str, kind: str, payload: dict[str, Any], cause: str | None
    ) -> None:
        """Queue an effect. Inside a transaction it is written with the transaction's other
        effects in one statement just before the commit; outside one, at once. A txn_id queued
        already is kept as it was."""
        row = (txn_id, room_key, kind, json.dumps(payload), cause)
        if not self.db.write_later(f"effects {self.schema}", row, self._write):
            await self._write([row])

    async def _write(self, rows: list[tuple[str, str, str, str, str | None]]) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.effects (txn_id, room_key, kind, payload, cause)
                SELECT r.txn_id, r.room_key, r.kind, r.payload, r.cause
                FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[], $5::text[])
                     WITH ORDINALITY AS r(txn_id, room_key, kind, payload, cause, n)
                ORDER BY r.n
                ON CONFLICT (txn_id) DO NOTHING""",
            [row[0] for row in rows],
            [row[1] for row in rows],
            [row[2] for row in rows],
            [row[3] for row in rows],
            [row[4] for row in rows],
        )

    async def due_rooms(self, limit: int) -> list[str]:
        """Rooms whose oldest pending effect is due now (a room waits behind its own head)."""
        rows = await self.db.fetch(
            f"""SELECT room_key FROM (
                    SELECT DISTINCT ON (room_key) room_key, id, next_attempt_at
                    FROM {self.schema}.effects WHERE state = 'pending'
                    ORDER BY room_key, id) heads
                WHERE next_attempt_at <= now() ORDER BY id LIMIT $1""",
            limit,
        )
        return [r["room_key"] for r in rows]

    async def pending_of_room(self, room_key: str, limit: int) -> list[EffectRow]:
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS} FROM {self.schema}.effects
                WHERE room_key = $1 AND state = 'pending' ORDER BY id LIMIT $2""",
            room_key,
            limit,
        )
        return [EffectRow.from_row(r) for r in rows]

    async def done(self, effect_id: int, result: dict[str, Any] | None) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.effects
                SET state = 'done', done_at = now(), result = $2::jsonb, last_error = NULL
                WHERE id = $1""",
            effect_id,
            json.dumps(result) if result is not None else None,
        )

    async def retry_later(self, effect_id: int, seconds: float, error: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.effects
                SET attempts = attempts + 1, last_error = $3,
                    next_attempt_at = now() + make_interval(secs => $2)
                WHERE id = $1""",
            effect_id,
            seconds,
            error[:1000],
        )

    async def dead(self, effect_id: int, error: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.effects
                SET state = 'dead', attempts = attempts + 1, last_error = $2, done_at = now()
                WHERE id = $1""",
            effect_id,
            error[:1000],
        )

    async def result_of(self, txn_id: str) -> dict[str, Any] | None:
        raw = await self.db.fetchval(
            f"SELECT result::text FROM {self.schema}.effects WHERE txn_id = $1 AND state = 'done'",
            txn_id,
        )
        return json.loads(raw) if raw else None

    async def counts(self) -> dict[str, int]:
        rows = await self.db.fetch(
            f"SELECT state, count(*) AS n FROM {self.schema}.effects GROUP BY state"
        )
        return {r["state"]: r["n"] for r in rows}

    async def dead_since(self, seconds: float) -> int:
        return int(
            await self.db.fetchval(
                f"""SELECT count(*) FROM {self.schema}.effects WHERE state = 'dead'
                    AND done_at > now() - make_interval(secs => $1)""",
                seconds,
            )
        )

    async def dead_letters(self, limit: int) -> list[EffectRow]:
        rows = await self.db.fetch(
            f"""SELECT {_COLUMNS} FROM {self.schema}.effects WHERE state = 'dead'
                ORDER BY id DESC LIMIT $1""",
            limit,
        )
        return [EffectRow.from_row(r) for r in rows]

    async def revive(self, effect_id: int) -> bool:
        """An operator's retry of a dead effect: pending again, due now."""
        status = await self.db.execute(
            f"""UPDATE {self.schema}.effects
                SET state = 'pending', attempts = 0, next_attempt_at = now(), done_at = NULL
                WHERE id = $1 AND state = 'dead'""",
            effect_id,
        )
        return status.endswith(" 1")

    async def drop(self, effect_id: int) -> bool:
        status = await self.db.execute(
            f"DELETE FROM {self.schema}.effects WHERE id = $1 AND state = 'dead'", effect_id
        )
        return status.endswith(" 1")
