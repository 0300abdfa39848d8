"""Files on IPFS: objects by CID, uploads by Matrix event, and the durable queue between them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..database import Database
from ..territory import TerritoryCode, territory_schema


@dataclass(frozen=True)
class Material:
    """A course material: a file on IPFS (encrypted with ``key`` when the course is gated)."""

    name: str
    cid: str
    mime: str
    size: int
    key: bytes | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Material:
        return cls(row["name"], row["cid"], row["mime"], row["size"], row["key"])


@dataclass(frozen=True)
class QueuedFile:
    matrix_event_id: str
    room_id: str
    uploader: str
    mxc_url: str
    filename: str
    declared_mime: str | None
    declared_size: int | None
    attempts: int

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> QueuedFile:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Upload:
    id: int
    cid: str
    filename: str
    mime: str
    size: int
    uploader: str
    room_id: str | None
    matrix_event_id: str | None
    comment_id: int | None
    created_at: datetime
    redacted_at: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Upload:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


_UPLOAD = (
    "id, cid, filename, mime, size, uploader, room_id, matrix_event_id, comment_id, "
    "created_at, redacted_at"
)


class MediaRepository:
    def __init__(self, db: Database, territory: TerritoryCode) -> None:
        self.db = db
        self.schema = territory_schema(territory)

    # --- queue --------------------------------------------------------------------------------

    @property
    def channel(self) -> str:
        return f"unityplan_media_{self.schema}"

    async def enqueue(self, item: QueuedFile) -> bool:
        """Queue a file; the worker is notified when the caller's transaction commits."""
        async with self.db.transaction() as conn:
            queued = await conn.fetchval(
                f"""INSERT INTO {self.schema}.media_queue (matrix_event_id, room_id, uploader,
                        mxc_url, filename, declared_mime, declared_size)
                    VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING true""",
                item.matrix_event_id,
                item.room_id,
                item.uploader,
                item.mxc_url,
                item.filename,
                item.declared_mime,
                item.declared_size,
            )
            await conn.execute("SELECT pg_notify($1, '')", self.channel)
            return bool(queued)

    async def due(self, limit: int = 10) -> list[QueuedFile]:
        rows = await self.db.fetch(
            f"""SELECT matrix_event_id, room_id, uploader, mxc_url, filename, declared_mime,
                       declared_size, attempts
                FROM {self.schema}.media_queue WHERE next_attempt_at <= now()
                ORDER BY created_at LIMIT $1""",
            limit,
        )
        return [QueuedFile.from_row(row) for row in rows]

    async def retry_later(self, event_id: str, seconds: float, error: str) -> None:
        await self.db.execute(
            f"""UPDATE {self.schema}.media_queue SET attempts = attempts + 1, last_error = $3,
                    next_attempt_at = now() + make_interval(secs => $2)
                WHERE matrix_event_id = $1""",
            event_id,
            seconds,
            error[:500],
        )

    async def queued_item(self, event_id: str) -> QueuedFile | None:
        row = await self.db.fetchrow(
            f"""SELECT matrix_event_id, room_id, uploader, mxc_url, filename, declared_mime,
                       declared_size, attempts
                FROM {self.schema}.media_queue WHERE matrix_event_id = $1""",
            event_id,
        )
        return QueuedFile.from_row(row) if row else None

    async def dequeue(self, event_id: str) -> None:
        await self.db.execute(
            f"DELETE FROM {self.schema}.media_queue WHERE matrix_event_id = $1", event_id
        )

    async def queued(self) -> int:
        return await self.db.fetchval(f"SELECT count(*) FROM {self.schema}.media_queue")

    # --- objects and uploads ------------------------------------------------------------------

    async def add_object(self, cid: str, size: int, mime: str, *, encrypted: bool = False) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.media_objects (cid, size, mime, encrypted)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (cid) DO UPDATE SET pinned = true""",
            cid,
            size,
            mime,
            encrypted,
        )

    async def add_upload(
        self,
        *,
        cid: str,
        filename: str,
        mime: str,
        size: int,
        uploader: str,
        room_id: str | None,
        event_id: str | None,
        comment_id: int | None,
    ) -> Upload | None:
        row = await self.db.fetchrow(
            f"""INSERT INTO {self.schema}.file_uploads (cid, filename, mime, size, uploader,
                    room_id, matrix_event_id, comment_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                ON CONFLICT (matrix_event_id) DO NOTHING RETURNING {_UPLOAD}""",
            cid,
            filename,
            mime,
            size,
            uploader,
            room_id,
            event_id,
            comment_id,
        )
        return Upload.from_row(row) if row else None

    async def upload_by_event(self, event_id: str) -> Upload | None:
        row = await self.db.fetchrow(
            f"SELECT {_UPLOAD} FROM {self.schema}.file_uploads WHERE matrix_event_id = $1",
            event_id,
        )
        return Upload.from_row(row) if row else None

    async def latest_upload_of(self, cid: str) -> Upload | None:
        row = await self.db.fetchrow(
            f"""SELECT {_UPLOAD} FROM {self.schema}.file_uploads
                WHERE cid = $1 AND redacted_at IS NULL ORDER BY id DESC LIMIT 1""",
            cid,
        )
        return Upload.from_row(row) if row else None

    async def uploads_of_comments(self, comment_ids: list[int]) -> dict[int, list[Upload]]:
        rows = await self.db.fetch(
            f"""SELECT {_UPLOAD} FROM {self.schema}.file_uploads
                WHERE comment_id = ANY($1::bigint[]) AND redacted_at IS NULL ORDER BY id""",
            comment_ids,
        )
        result: dict[int, list[Upload]] = {}
        for row in rows:
            upload = Upload.from_row(row)
            result.setdefault(upload.comment_id or 0, []).append(upload)
        return result

    async def redact_upload(self, upload_id: int) -> int:
        """Mark an upload redacted; returns how many live uploads still use its CID."""
        async with self.db.transaction() as conn:
            cid = await conn.fetchval(
                f"""UPDATE {self.schema}.file_uploads SET redacted_at = now()
                    WHERE id = $1 AND redacted_at IS NULL RETURNING cid""",
                upload_id,
            )
            if cid is None:
                return -1
            return await conn.fetchval(
                f"""SELECT count(*) FROM {self.schema}.file_uploads
                    WHERE cid = $1 AND redacted_at IS NULL""",
                cid,
            )

    async def set_unpinned(self, cid: str) -> None:
        await self.db.execute(
            f"UPDATE {self.schema}.media_objects SET pinned = false WHERE cid = $1", cid
        )

    async def object(self, cid: str) -> tuple[int, str, bool, bool] | None:
        row = await self.db.fetchrow(
            f"SELECT size, mime, encrypted, pinned FROM {self.schema}.media_objects WHERE cid = $1",
            cid,
        )
        return (row["size"], row["mime"], row["encrypted"], row["pinned"]) if row else None

    # --- homeserver copies and course materials -----------------------------------------------

    async def mxc_of(self, cid: str) -> str | None:
        """The homeserver's copy of ``cid`` (uploaded once, reused for every later delivery)."""
        value = await self.db.fetchval(
            f"SELECT mxc_url FROM {self.schema}.media_objects WHERE cid = $1", cid
        )
        return str(value) if value is not None else None

    async def set_mxc(self, cid: str, size: int, mime: str, encrypted: bool, mxc: str) -> None:
        await self.db.execute(
            f"""INSERT INTO {self.schema}.media_objects (cid, size, mime, encrypted, mxc_url)
                VALUES ($1, $2, $3, $4, $5)
                ON CONFLICT (cid) DO UPDATE SET mxc_url = EXCLUDED.mxc_url""",
            cid,
            size,
            mime,
            encrypted,
            mxc,
        )

    async def add_materials(self, course_id: int, lesson: int, materials: list[Material]) -> None:
        async with self.db.transaction() as conn:
            for position, m in enumerate(materials, start=1):
                await conn.execute(
                    f"""INSERT INTO {self.schema}.course_materials
                            (course_id, lesson, position, name, cid, mime, size, key)
                        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
                    course_id,
                    lesson,
                    position,
                    m.name,
                    m.cid,
                    m.mime,
                    m.size,
                    m.key,
                )

    async def materials_of_lesson(self, course_id: int, lesson: int) -> list[Material]:
        rows = await self.db.fetch(
            f"""SELECT name, cid, mime, size, key FROM {self.schema}.course_materials
                WHERE course_id = $1 AND lesson = $2 ORDER BY position""",
            course_id,
            lesson,
        )
        return [Material.from_row(r) for r in rows]
