"""Badge-gated rooms: which badges a room requires (all of them, or any one)."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Literal

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema

Mode = Literal["all", "any"]


@dataclass(frozen=True)
class Gate:
    room_id: str
    badges: tuple[str, ...]
    mode: Mode
    previous_join_rule: str
    set_by: str

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Gate:
        return cls(
            row["room_id"],
            tuple(row["badges"]),
            row["mode"],
            row["previous_join_rule"],
            row["set_by"],
        )

    def missing(self, held: AbstractSet[str]) -> list[str]:
        """The badges still needed: for "any", all of them when none is held."""
        if self.mode == "any":
            return [] if any(badge in held for badge in self.badges) else list(self.badges)
        return [badge for badge in self.badges if badge not in held]


@dataclass(frozen=True)
class GateCheck:
    gate: Gate
    held: frozenset[str]  # the gate's badges the member holds in this territory
    earned_with: dict[str, str | None]  # badge -> the slug of a course that awards it


_COLUMNS = "room_id, badges, mode, previous_join_rule, set_by"


class GateRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    async def get(self, room_id: str) -> Gate | None:
        row = await self.db.fetchrow(
            f"SELECT {_COLUMNS} FROM {self.schema}.gated_rooms WHERE room_id = $1", room_id
        )
        return Gate.from_row(row) if row else None

    async def set(self, gate: Gate) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.gated_rooms
                    (room_id, badges, mode, previous_join_rule, set_by)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (room_id) DO UPDATE SET badges = EXCLUDED.badges,
                    mode = EXCLUDED.mode, set_by = EXCLUDED.set_by, set_at = now()""",
            gate.room_id,
            list(gate.badges),
            gate.mode,
            gate.previous_join_rule,
            gate.set_by,
        )

    async def remove(self, room_id: str) -> Gate | None:
        row = await self.db.fetchrow(
            f"DELETE FROM {self.schema}.gated_rooms WHERE room_id = $1 RETURNING {_COLUMNS}",
            room_id,
        )
        return Gate.from_row(row) if row else None

    async def check(self, room_id: str, user_id: str, *, remote_too: bool) -> GateCheck | None:
        """The room's gate (ours first; another territory's when ``remote_too``), which of its
        badges ``user_id`` holds here now, and a course that awards each: one indexed query.
        None when the room is not gated."""
        row = await self.db.fetchrow(
            f"""SELECT g.room_id, g.badges, g.mode, g.previous_join_rule, g.set_by,
                       ARRAY(SELECT a.badge_slug FROM {self.schema}.user_badges a
                             WHERE a.user_id = $2 AND a.badge_slug = ANY(g.badges)
                               AND a.revoked_at IS NULL AND a.expired_at IS NULL
                               AND (a.expires_at IS NULL OR a.expires_at > now())) AS held,
                       ARRAY(SELECT coalesce(
                                 (SELECT c.slug FROM {self.schema}.courses c
                                  WHERE c.awards = b AND c.version = (
                                      SELECT max(x.version) FROM {self.schema}.courses x
                                      WHERE x.slug = c.slug)
                                  ORDER BY c.slug LIMIT 1), '')
                             FROM unnest(g.badges) WITH ORDINALITY AS u(b, n)
                             ORDER BY u.n) AS courses
                FROM (SELECT room_id, badges, mode, previous_join_rule, set_by, 0 AS rank
                      FROM {self.schema}.gated_rooms WHERE room_id = $1
                      UNION ALL
                      SELECT room_id, badges, mode, '', territory, 1
                      FROM {self.schema}.remote_gates WHERE room_id = $1 AND $3) AS g
                ORDER BY g.rank LIMIT 1""",
            room_id,
            user_id,
            remote_too,
        )
        if row is None:
            return None
        gate = Gate.from_row(row)
        earned_with = {b: c or None for b, c in zip(gate.badges, row["courses"], strict=True)}
        return GateCheck(gate, frozenset(row["held"]), earned_with)

    # --- other territories' gated rooms -----------------------------------------------------

    async def get_remote(self, room_id: str) -> Gate | None:
        """A room another territory gates (``set_by`` is that territory's code)."""
        row = await self.db.fetchrow(
            f"""SELECT room_id, badges, mode, '' AS previous_join_rule, territory AS set_by
                FROM {self.schema}.remote_gates WHERE room_id = $1""",
            room_id,
        )
        return Gate.from_row(row) if row else None

    async def set_remote(self, room_id: str, territory: str, badges: list[str], mode: Mode) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.remote_gates (room_id, territory, badges, mode)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (room_id) DO UPDATE SET badges = EXCLUDED.badges,
                    mode = EXCLUDED.mode, updated_at = now()
                WHERE {self.schema}.remote_gates.territory = EXCLUDED.territory""",
            room_id,
            territory,
            badges,
            mode,
        )

    async def remove_remote(self, room_id: str, territory: str) -> None:
        """Only the territory that gated the room ungates it."""
        await self.db.execute(
            f"DELETE FROM {self.schema}.remote_gates WHERE room_id = $1 AND territory = $2",
            room_id,
            territory,
        )

    async def remember_refused_knock(self, room_id: str, user_id: str) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.refused_knocks (room_id, user_id) VALUES ($1, $2)
                ON CONFLICT (room_id, user_id) DO UPDATE SET refused_at = now()""",
            room_id,
            user_id,
        )

    async def forget_knock(self, room_id: str, user_id: str) -> None:
        await self.db.execute(
            f"DELETE FROM {self.schema}.refused_knocks WHERE room_id = $1 AND user_id = $2",
            room_id,
            user_id,
        )

    async def refused_knockers(self, room_id: str, server_name: str) -> list[str]:
        """Who of ``server_name`` knocked on ``room_id`` and was refused (newest first)."""
        rows = await self.db.fetch(
            f"""SELECT user_id FROM {self.schema}.refused_knocks
                WHERE room_id = $1 AND right(user_id, length($2) + 1) = ':' || $2
                ORDER BY refused_at DESC""",
            room_id,
            server_name,
        )
        return [row["user_id"] for row in rows]

    async def requiring(self, badge: str) -> list[Gate]:
        rows = await self.db.fetch(
            f"SELECT {_COLUMNS} FROM {self.schema}.gated_rooms WHERE $1 = ANY(badges)", badge
        )
        return [Gate.from_row(row) for row in rows]
