"""Forum categories, topics, comments (with revisions) and votes of a territory."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..cache import LruCache
from ..database import Database
from ..territory import TerritoryCode, territory_schema


@dataclass(frozen=True)
class Category:
    id: int
    slug: str
    name: str
    description: str


@dataclass(frozen=True)
class Topic:
    id: int
    category: str
    slug: str
    title: str
    matrix_room_id: str | None
    created_by: str
    created_at: datetime
    locked: bool

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Topic:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Comment:
    id: int
    topic_id: int
    matrix_event_id: str | None
    author: str
    parent_id: int | None
    body: str
    body_html: str | None
    source: str
    created_at: datetime
    edited_at: datetime | None
    deleted_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Comment:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Revision:
    revision: int
    body: str
    body_html: str | None
    created_at: datetime


@dataclass(frozen=True)
class NewComment:
    topic_id: int
    author: str
    body: str
    body_html: str | None
    source: str
    matrix_event_id: str | None
    parent_id: int | None


def storable(text: str) -> str:
    """Matrix text may hold NUL characters, PostgreSQL text may not: they become U+FFFD."""
    return text.replace("\x00", "\ufffd")


TOPIC_CACHE_SIZE = 10_000  # rooms remembered as "a topic room" or "not one"

_TOPIC = """SELECT t.id, c.slug AS category, t.slug, t.title, t.matrix_room_id, t.created_by,
                   t.created_at, t.locked
            FROM {s}.forum_topics t JOIN {s}.forum_categories c ON c.id = t.category_id"""
_COMMENT = """SELECT id, topic_id, matrix_event_id, author, parent_id, body, body_html, source,
                     created_at, edited_at, deleted_at FROM {s}.forum_comments"""


class ForumRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)
        self._topic = _TOPIC.format(s=self.schema)
        self._comment = _COMMENT.format(s=self.schema)
        # Every event of every room asks "is this a topic room?": remembered here (bounded), forgotten
        # after any change to a topic commits (one process per territory writes topics).
        self._by_room: LruCache[str, Topic | None] = LruCache(TOPIC_CACHE_SIZE)

    # --- categories and topics ----------------------------------------------------------------

    async def categories(self) -> list[Category]:
        rows = await self.db.fetch(
            f"SELECT id, slug, name, description FROM {self.schema}.forum_categories ORDER BY slug"
        )
        return [Category(r["id"], r["slug"], r["name"], r["description"]) for r in rows]

    async def category_id(self, slug: str) -> int | None:
        return await self.db.fetchval(
            f"SELECT id FROM {self.schema}.forum_categories WHERE slug = $1", slug
        )

    async def add_topic(self, category_id: int, slug: str, title: str, created_by: str) -> Topic:
        topic_id = await self.db.fetchval(
            f"""INSERT INTO {self.schema}.forum_topics (category_id, slug, title, created_by)
                VALUES ($1, $2, $3, $4) RETURNING id""",
            category_id,
            slug,
            title,
            created_by,
        )
        topic = await self.topic(topic_id)
        assert topic is not None
        return topic

    async def slug_taken(self, slug: str) -> bool:
        return bool(
            await self.db.fetchval(
                f"SELECT true FROM {self.schema}.forum_topics WHERE slug = $1", slug
            )
        )

    async def set_room(self, topic_id: int, room_id: str) -> None:
        await self.db.execute(
            f"UPDATE {self.schema}.forum_topics SET matrix_room_id = $2 WHERE id = $1",
            topic_id,
            room_id,
        )
        self.db.after_commit(self._by_room.invalidate)

    async def set_locked(self, topic_id: int, locked: bool) -> None:
        await self.db.execute(
            f"UPDATE {self.schema}.forum_topics SET locked = $2 WHERE id = $1", topic_id, locked
        )
        self.db.after_commit(self._by_room.invalidate)

    async def topic(self, topic_id: int) -> Topic | None:
        row = await self.db.fetchrow(f"{self._topic} WHERE t.id = $1", topic_id)
        return Topic.from_row(row) if row else None

    async def topic_by_slug(self, slug: str) -> Topic | None:
        row = await self.db.fetchrow(f"{self._topic} WHERE t.slug = $1", slug)
        return Topic.from_row(row) if row else None

    async def topic_by_room(self, room_id: str) -> Topic | None:
        found, cached = self._by_room.lookup(room_id)
        if found:
            return cached
        generation = self._by_room.generation
        row = await self.db.fetchrow(f"{self._topic} WHERE t.matrix_room_id = $1", room_id)
        topic = Topic.from_row(row) if row else None
        self._by_room.put(room_id, topic, generation)
        return topic

    async def topics(self, limit: int, before: int | None) -> list[Topic]:
        rows = await self.db.fetch(
            f"""{self._topic} WHERE ($2::bigint IS NULL OR t.id < $2)
                ORDER BY t.id DESC LIMIT $1""",
            limit,
            before,
        )
        return [Topic.from_row(row) for row in rows]

    # --- comments -----------------------------------------------------------------------------

    async def add_comment(
        self,
        topic_id: int,
        *,
        author: str,
        body: str,
        body_html: str | None,
        source: str,
        matrix_event_id: str | None,
        parent_id: int | None,
    ) -> Comment | None:
        """None when a comment for this Matrix event exists already (a replayed event)."""
        draft = NewComment(topic_id, author, body, body_html, source, matrix_event_id, parent_id)
        return (await self.add_comments([draft]))[0]

    async def add_comments(self, drafts: list[NewComment]) -> list[Comment | None]:
        """Many comments in one statement; for each draft its comment, or None when one for its
        Matrix event exists already (a replayed event)."""
        rows = await self.db.fetch(
            f"""INSERT INTO {self.schema}.forum_comments
                    (topic_id, matrix_event_id, author, parent_id, body, body_html, source)
                SELECT d.topic_id, d.matrix_event_id, d.author, d.parent_id, d.body, d.body_html,
                       d.source
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[],
                            $6::text[], $7::text[]) WITH ORDINALITY
                     AS d(topic_id, matrix_event_id, author, parent_id, body, body_html, source, n)
                ORDER BY d.n
                ON CONFLICT (matrix_event_id) DO NOTHING
                RETURNING id, topic_id, matrix_event_id, author, parent_id, body, body_html,
                          source, created_at, edited_at, deleted_at""",
            [d.topic_id for d in drafts],
            [d.matrix_event_id for d in drafts],
            [d.author for d in drafts],
            [d.parent_id for d in drafts],
            [storable(d.body) for d in drafts],
            [storable(d.body_html) if d.body_html is not None else None for d in drafts],
            [d.source for d in drafts],
        )
        comments = [Comment.from_row(row) for row in rows]
        by_event = {c.matrix_event_id: c for c in comments if c.matrix_event_id is not None}
        without_event = iter(c for c in comments if c.matrix_event_id is None)
        return [
            by_event.pop(d.matrix_event_id, None)
            if d.matrix_event_id is not None
            else next(without_event, None)
            for d in drafts
        ]

    async def set_comment_event(self, comment_id: int, event_id: str) -> None:
        await self.db.execute(
            f"UPDATE {self.schema}.forum_comments SET matrix_event_id = $2 WHERE id = $1",
            comment_id,
            event_id,
        )

    async def comment(self, comment_id: int) -> Comment | None:
        await self.db.flush_pending()  # comments kept for the commit count too
        row = await self.db.fetchrow(f"{self._comment} WHERE id = $1", comment_id)
        return Comment.from_row(row) if row else None

    async def comment_by_event(self, event_id: str) -> Comment | None:
        await self.db.flush_pending()  # comments kept for the commit count too
        row = await self.db.fetchrow(f"{self._comment} WHERE matrix_event_id = $1", event_id)
        return Comment.from_row(row) if row else None

    async def comments(self, topic_id: int, limit: int, after: int | None) -> list[Comment]:
        await self.db.flush_pending()  # comments kept for the commit count too
        rows = await self.db.fetch(
            # One shape for the first page and the next ones (ids start at 1), so the plan
            # stays a walk of the (topic_id, id) index at any number of comments.
            f"""{self._comment} WHERE topic_id = $1 AND id > $3 ORDER BY id LIMIT $2""",
            topic_id,
            limit,
            after or 0,
        )
        return [Comment.from_row(row) for row in rows]

    async def revise(
        self, comment_id: int, body: str, body_html: str | None, event_id: str | None
    ) -> bool:
        """Keep the current text as a revision and replace it; False if already applied."""
        body = storable(body)
        body_html = storable(body_html) if body_html is not None else None
        async with self.db.transaction() as conn:
            if event_id and await conn.fetchval(
                f"""SELECT true FROM {self.schema}.forum_comment_revisions
                    WHERE matrix_event_id = $1""",
                event_id,
            ):
                return False
            current = await conn.fetchrow(
                f"SELECT body, body_html, coalesce(edited_at, created_at) AS at "
                f"FROM {self.schema}.forum_comments WHERE id = $1 FOR UPDATE",
                comment_id,
            )
            number = await conn.fetchval(
                f"""SELECT coalesce(max(revision), 0) + 1 FROM {self.schema}.forum_comment_revisions
                    WHERE comment_id = $1""",
                comment_id,
            )
            await conn.execute(
                f"""INSERT INTO {self.schema}.forum_comment_revisions
                        (comment_id, revision, body, body_html, matrix_event_id, created_at)
                    VALUES ($1, $2, $3, $4, $5, $6)""",
                comment_id,
                number,
                current["body"],
                current["body_html"],
                event_id,
                current["at"],
            )
            await conn.execute(
                f"""UPDATE {self.schema}.forum_comments SET body = $2, body_html = $3,
                        edited_at = now() WHERE id = $1""",
                comment_id,
                body,
                body_html,
            )
            return True

    async def revisions(self, comment_ids: list[int]) -> dict[int, list[Revision]]:
        """The revisions of many comments in one query, each comment's in order."""
        rows = await self.db.fetch(
            f"""SELECT comment_id, revision, body, body_html, created_at
                FROM {self.schema}.forum_comment_revisions
                WHERE comment_id = ANY($1::bigint[]) ORDER BY comment_id, revision""",
            comment_ids,
        )
        found: dict[int, list[Revision]] = {}
        for r in rows:
            found.setdefault(r["comment_id"], []).append(
                Revision(r["revision"], r["body"], r["body_html"], r["created_at"])
            )
        return found

    async def soft_delete(self, comment_id: int) -> bool:
        return bool(
            await self.db.fetchval(
                f"""UPDATE {self.schema}.forum_comments SET deleted_at = now()
                WHERE id = $1 AND deleted_at IS NULL RETURNING true""",
                comment_id,
            )
        )

    # --- votes --------------------------------------------------------------------------------

    async def vote(self, comment_id: int, user_id: str, value: int, event_id: str | None) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.forum_votes (comment_id, user_id, value, matrix_event_id)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (comment_id, user_id) DO UPDATE SET value = EXCLUDED.value,
                    matrix_event_id = EXCLUDED.matrix_event_id, voted_at = now()""",
            comment_id,
            user_id,
            value,
            event_id,
        )

    async def unvote_by_event(self, event_id: str) -> bool:
        return bool(
            await self.db.fetchval(
                f"DELETE FROM {self.schema}.forum_votes WHERE matrix_event_id = $1 RETURNING true",
                event_id,
            )
        )

    async def vote_counts(self, comment_ids: list[int]) -> dict[int, tuple[int, int]]:
        rows = await self.db.fetch(
            f"""SELECT comment_id, count(*) FILTER (WHERE value = 1) AS up,
                       count(*) FILTER (WHERE value = -1) AS down
                FROM {self.schema}.forum_votes WHERE comment_id = ANY($1::bigint[])
                GROUP BY comment_id""",
            comment_ids,
        )
        return {r["comment_id"]: (r["up"], r["down"]) for r in rows}
