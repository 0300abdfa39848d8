"""Room files → IPFS. A file message in a topic room is queued durably (in the event's own database
transaction); a worker downloads it from the homeserver (authenticated media), checks its size and
type, adds and pins it on IPFS, records it and attaches it to the topic's comments. While the IPFS node
is away the file waits in the queue and is retried with backoff: nothing is lost.

The same content posted twice is one IPFS object (same CID) with two uploads; a redacted upload is
unpinned once no other upload uses its CID.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import asyncpg
from mautrix.types import (
    Event,
    EventType,
    MediaMessageEventContent,
    MessageEvent,
    MessageType,
    RedactionEvent,
)

from core.background import wait_until_set
from core.effects import Effects
from core.encryption import was_encrypted
from core.errors import TooLarge
from core.events import EventEmitter
from core.html import escape
from core.matrix import MatrixConnection
from core.sniff import agrees, sniff
from db.database import Database
from db.repositories.forum import ForumRepository
from db.repositories.media import MediaRepository, QueuedFile

from .ipfs_client import IpfsClient

log = logging.getLogger("unityplan.media")

FILE_TYPES = {MessageType.IMAGE, MessageType.FILE, MessageType.AUDIO, MessageType.VIDEO}
MAX_BACKOFF = 60.0
SNIFF_BYTES = 4096  # what core.sniff looks at


def _size_text(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KB"


class MediaBridge:
    def __init__(
        self,
        *,
        db: Database,
        media: MediaRepository,
        forum: ForumRepository,
        ipfs: IpfsClient,
        effects: Effects,
        events: EventEmitter,
        matrix: MatrixConnection,
        max_bytes: int,
    ) -> None:
        self.db = db
        self.media = media
        self.forum = forum
        self.ipfs = ipfs
        self.effects = effects
        self.events = events
        self.matrix = matrix
        self.max_bytes = max_bytes
        self._wake = asyncio.Event()

    # --- the dispatcher's side ----------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if isinstance(event, RedactionEvent):
            await self._redaction(event)
            return
        if not (isinstance(event, MessageEvent) and event.type == EventType.ROOM_MESSAGE):
            return
        if was_encrypted(event):
            return  # encrypted files are never copied to IPFS
        content = event.content
        if not (isinstance(content, MediaMessageEventContent) and content.msgtype in FILE_TYPES):
            return
        if not content.url or await self.forum.topic_by_room(event.room_id) is None:
            return  # encrypted files and files outside bridged rooms are not stored
        declared = content.info.size if content.info and content.info.size else None
        filename = str(getattr(content, "filename", None) or content.body or "file")
        if declared and declared > self.max_bytes:
            await self._refuse(event.room_id, str(event.sender), filename, declared)
            return
        await self.media.enqueue(
            QueuedFile(
                matrix_event_id=str(event.event_id),
                room_id=str(event.room_id),
                uploader=str(event.sender),
                mxc_url=str(content.url),
                filename=filename,
                declared_mime=content.info.mimetype if content.info else None,
                declared_size=declared,
                attempts=0,
            )
        )  # the worker wakes on the commit's notification, once the row is visible

    async def _refuse(self, room_id: str, user_id: str, filename: str, size: int) -> None:
        await self.effects.dm(
            user_id,
            f"Your file {escape(filename)} ({_size_text(size)}) is larger than the "
            f"{_size_text(self.max_bytes)} this territory keeps, so it was not stored on the "
            "forum. It is still in the room.",
        )

    async def _redaction(self, event: RedactionEvent) -> None:
        redacts = str(getattr(event, "redacts", None) or "")
        upload = await self.media.upload_by_event(redacts) if redacts else None
        if upload is None:
            queued = await self.media.queued_item(redacts) if redacts else None
            if queued is not None and await self.matrix.may_redact(
                event.room_id, event.sender, queued.uploader
            ):
                await self.media.dequeue(redacts)  # redacted before it was stored
            return
        if not await self.matrix.may_redact(event.room_id, event.sender, upload.uploader):
            log.info("Ignoring %s's redaction of %s's file", event.sender, upload.uploader)
            return
        remaining = await self.media.redact_upload(upload.id)
        if remaining == 0:
            try:
                await self.ipfs.unpin(upload.cid)
                await self.media.set_unpinned(upload.cid)
            except Exception as exc:  # the node is away: the object stays pinned for now
                log.warning("Could not unpin %s: %s", upload.cid, exc)

    # --- the worker ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Work the queue until cancelled; wakes when a queued file commits (LISTEN/NOTIFY) and
        polls each second for retries that are due."""
        listener: asyncpg.Connection | None = None
        try:
            while True:
                if listener is None or listener.is_closed():
                    try:
                        listener = await asyncpg.connect(self.db.dsn)
                        await listener.add_listener(self.media.channel, self._notified)
                    except (OSError, asyncpg.PostgresError) as exc:
                        log.warning("Cannot LISTEN for queued files (%s); polling", exc)
                        listener = None
                self._wake.clear()
                try:
                    for item in await self.media.due():
                        await self._store(item)
                except Exception:
                    log.exception("The media queue could not be read")
                await wait_until_set(self._wake, 1.0)
        finally:
            if listener is not None:
                await listener.close()

    def _notified(self, *_: object) -> None:
        self._wake.set()

    async def _store(self, item: QueuedFile) -> None:
        """Stream the file from the homeserver into the IPFS node (never whole in memory), then
        record it. Too large: refused politely. Either side away: retried with backoff."""
        head = bytearray()  # the first bytes, to tell what the file really is
        size = 0
        download_error: Exception | None = None

        async def chunks() -> AsyncIterator[bytes]:
            nonlocal size, download_error
            try:
                async for chunk in self.matrix.stream_capped(item.mxc_url, self.max_bytes):
                    if len(head) < SNIFF_BYTES:
                        head.extend(chunk[: SNIFF_BYTES - len(head)])
                    size += len(chunk)
                    yield chunk
            except Exception as exc:
                download_error = exc
                raise

        try:
            cid = await self.ipfs.add_stream(chunks())
        except Exception as exc:
            if isinstance(download_error, TooLarge):  # larger than declared, and than we keep
                await self._refuse(item.room_id, item.uploader, item.filename, self.max_bytes + 1)
                await self.media.dequeue(item.matrix_event_id)
            elif download_error is not None:  # the homeserver refused or is away
                if item.attempts >= 5:
                    log.warning("Giving up on %s: %s", item.matrix_event_id, download_error)
                    await self.media.dequeue(item.matrix_event_id)
                else:
                    await self.media.retry_later(
                        item.matrix_event_id, 2.0**item.attempts, str(download_error)
                    )
            else:  # the IPFS node is down or failing: wait and retry
                delay = min(2.0**item.attempts, MAX_BACKOFF)
                log.warning(
                    "IPFS add of %s failed (%s); retrying in %.0f s", item.filename, exc, delay
                )
                await self.media.retry_later(
                    item.matrix_event_id, delay, f"{type(exc).__name__}: {exc}"
                )
            return
        mime = sniff(bytes(head))
        if not agrees(item.declared_mime, mime):
            log.info(
                "%s claims to be %s but is %s; recording %s",
                item.filename,
                item.declared_mime,
                mime,
                mime,
            )
        async with self.db.transaction():
            topic = await self.forum.topic_by_room(item.room_id)
            comment = None
            if topic is not None:
                comment = await self.forum.add_comment(
                    topic.id,
                    author=item.uploader,
                    body=item.filename,
                    body_html=None,
                    source="matrix",
                    matrix_event_id=item.matrix_event_id,
                    parent_id=None,
                ) or await self.forum.comment_by_event(item.matrix_event_id)
            await self.media.add_object(cid, size, mime)
            upload = await self.media.add_upload(
                cid=cid,
                filename=item.filename,
                mime=mime,
                size=size,
                uploader=item.uploader,
                room_id=item.room_id,
                event_id=item.matrix_event_id,
                comment_id=comment.id if comment else None,
            )
            await self.media.dequeue(item.matrix_event_id)
            if upload is not None:
                await self.events.emit(
                    "media.stored",
                    {
                        "cid": cid,
                        "filename": item.filename,
                        "mime": mime,
                        "size": size,
                        "room_id": item.room_id,
                        "event_id": item.matrix_event_id,
                    },
                    actor=item.uploader,
                )
        log.info("Stored %s (%s, %d bytes) as %s", item.filename, mime, size, cid)
