"""The appservice's side of the client-server API: mautrix AppServiceAPI, the bot intent, ping, the
state store, and direct messages from the bot. Built from explicit settings, not the whole config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote

import aiohttp
from mautrix.api import Method
from mautrix.api import Path as ClientPath
from mautrix.appservice import AppServiceAPI, IntentAPI
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store import MemoryStateStore
from mautrix.errors import MatrixConnectionError, MatrixError, MatrixRequestError
from mautrix.types import (
    EventID,
    EventType,
    Format,
    MessageType,
    PowerLevelStateEventContent,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)
from mautrix.util.logging import TraceLogger

from core.errors import Refused, TooLarge
from core.html import html_to_text
from db.cache import LruCache
from db.repositories.direct_rooms import DirectRoomRepository

if TYPE_CHECKING:
    from core.encryption import BotEncryption

log = logging.getLogger("unityplan.matrix")
dm_log = logging.getLogger("unityplan.dm")


class CachedStateStore(MemoryStateStore, ASStateStore):
    """Membership and power levels as a cache, fed by the transactions' own state events.

    Nothing here must survive a restart: a miss is answered by asking the homeserver.
    """

    def __init__(self) -> None:
        MemoryStateStore.__init__(self)
        ASStateStore.__init__(self)


@dataclass(frozen=True)
class MatrixSettings:
    homeserver_url: str
    bot_user_id: str
    appservice_id: str
    as_token: str
    bot_displayname: str | None = None
    verify_ssl: bool = True


class MatrixConnection:
    def __init__(self, settings: MatrixSettings) -> None:
        self.settings = settings
        self.state_store = CachedStateStore()
        self.bot_user_id = UserID(settings.bot_user_id)
        self._session: aiohttp.ClientSession | None = None
        # Create events never change: a bounded memory of each room's creators.
        self._creators_cache: LruCache[RoomID, tuple[UserID, ...]] = LruCache(10_000)
        self._api: AppServiceAPI | None = None
        # The bot's end-to-end encryption, once its device is up (None: off or not available).
        self.encryption: BotEncryption | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=100, ssl=self.settings.verify_ssl)
        self._session = aiohttp.ClientSession(connector=connector)
        self._api = AppServiceAPI(
            base_url=self.settings.homeserver_url,
            bot_mxid=self.bot_user_id,
            token=self.settings.as_token,
            log=cast(TraceLogger, logging.getLogger("unityplan.matrix.api")),
            state_store=self.state_store,
            client_session=self._session,
            # No retries inside mautrix (it sleeps 4 s, 8 s …): effects and events are retried by
            # their own queues, with backoff that does not hold a handler or a connection.
            default_retry_count=0,
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._api = None

    @property
    def api(self) -> AppServiceAPI:
        if self._api is None:
            raise RuntimeError("the Matrix connection is not started")
        return self._api

    @property
    def bot(self) -> IntentAPI:
        return self.api.bot_intent()

    def ghost(self, user_id: UserID) -> IntentAPI:
        return self.api.intent(user_id)

    async def is_encrypted(self, room_id: str) -> bool:
        return self.encryption is not None and await self.encryption.is_encrypted(room_id)

    async def send_message_event(
        self,
        room_id: str,
        event_type: EventType,
        content: Any,
        *,
        txn_id: str | None = None,
        sender: str | None = None,
    ) -> EventID:
        """Send as the bot (or a ghost): in an encrypted room the bot's message is encrypted for
        the members' devices. The one way the appservice sends room messages."""
        intent = self.ghost(UserID(sender)) if sender else self.bot
        if sender is None and await self.is_encrypted(room_id):
            assert self.encryption is not None
            content = await self.encryption.encrypt(room_id, event_type, content)
            event_type = EventType.ROOM_ENCRYPTED
        return await intent.send_message_event(RoomID(room_id), event_type, content, txn_id=txn_id)

    async def upload_for(
        self, room_id: str, data: bytes, *, mime: str, filename: str
    ) -> dict[str, Any]:
        """Upload a file for a media message in ``room_id``: ``{"url": mxc}``, or in an encrypted
        room ``{"file": …}`` (the ciphertext uploaded, its key and hash for the event)."""
        if self.encryption is not None and await self.encryption.is_encrypted(room_id):
            ciphertext, file = self.encryption.encrypt_file(data)
            file.url = await self.bot.upload_media(ciphertext, mime_type="application/octet-stream")
            return {"file": file.serialize()}
        return {"url": await self.bot.upload_media(data, mime_type=mime, filename=filename)}

    async def effective_power_levels(self, room_id: RoomID) -> PowerLevelStateEventContent:
        """The room's power levels as decisions need them: from room version 12 on, the room's
        creators outrank everyone without appearing in ``users``; they are added at 2**53-1."""
        levels = await self.bot.get_power_levels(room_id, ensure_joined=False)
        creators = await self._creators(room_id)
        if not creators:
            return levels
        effective = PowerLevelStateEventContent.deserialize(levels.serialize())
        for creator in creators:
            effective.users[creator] = 2**53 - 1
        return effective

    async def stream_capped(self, mxc: str, limit: int) -> AsyncIterator[bytes]:
        """A file from the homeserver's media repository, in chunks as they arrive (never the
        whole file in memory); ``TooLarge`` as soon as the declared length or the bytes so far
        pass ``limit``, whatever the uploader declared."""
        if not mxc.startswith("mxc://") or mxc.count("/") != 3:
            raise Refused(f"{mxc!r} is not an mxc:// URI")
        server, media_id = mxc.removeprefix("mxc://").split("/")
        url = (
            f"{self.settings.homeserver_url.rstrip('/')}/_matrix/client/v1/media/download/"
            f"{quote(server, safe='')}/{quote(media_id, safe='')}"
        )
        if self._session is None:
            raise RuntimeError("the Matrix connection is not started")
        headers = {"Authorization": f"Bearer {self.settings.as_token}"}
        async with self._session.get(url, headers=headers) as resp:
            if resp.status != 200:
                raise MatrixConnectionError(f"media download answered {resp.status}")
            declared = resp.content_length
            if declared is not None and declared > limit:
                raise TooLarge(f"the file is {declared} bytes, more than {limit}")
            size = 0
            async for chunk in resp.content.iter_chunked(256 * 1024):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"the file is more than {limit} bytes")
                yield chunk

    async def may_redact(self, room_id: str, sender: str, author: str) -> bool:
        """Matrix lets a redaction into the room before deciding whether it applies: it does when
        the sender wrote the event, or holds the room's redact power level."""
        if sender == author:
            return True
        levels = await self.effective_power_levels(RoomID(room_id))
        return bool(levels.get_user_level(UserID(sender)) >= levels.redact)

    async def _creators(self, room_id: RoomID) -> tuple[UserID, ...]:
        """Creators with implicit power (room version 12+); cached, as create events never change."""
        found, known = self._creators_cache.lookup(room_id)
        if found and known is not None:
            return known
        generation = self._creators_cache.generation
        event = await self.bot.get_state_event(room_id, EventType.ROOM_CREATE, format="event")
        raw: dict[str, Any] = event.serialize()
        content: dict[str, Any] = raw.get("content", {})
        version = str(content.get("room_version", "1"))
        creators: tuple[UserID, ...] = ()
        if version.isdigit() and int(version) >= 12:
            additional = content.get("additional_creators", [])
            creators = (UserID(raw["sender"]), *(UserID(u) for u in additional))
        self._creators_cache.put(room_id, creators, generation)
        return creators

    async def check_reachable(self) -> None:
        """Raises unless the homeserver answers /versions now (for /health)."""
        await self.bot.versions(no_cache=True)

    async def connect_to_homeserver(self, *, retry_seconds: float = 0.2) -> None:
        """Wait for the homeserver, ping it (so it sends its backlog at once), set the bot's name.

        Runs in the background at start-up: the homeserver may come up after the appservice.
        """
        delay = retry_seconds
        while True:
            try:
                # Our own backoff, not mautrix's retries (which wait 4 s after the first failure).
                await self.bot.api.request(
                    Method.POST,
                    ClientPath.v1.appservice[self.settings.appservice_id].ping,
                    content={},
                    retry_count=0,
                )
                break
            except (TimeoutError, MatrixError, aiohttp.ClientError, OSError) as exc:
                # The homeserver usually starts alongside us: only repeated failures are news.
                level = logging.DEBUG if delay < 5 else logging.WARNING
                log.log(
                    level,
                    "Homeserver not reachable for a ping yet (%s); retrying in %.1f s",
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        log.info("Homeserver answered the appservice ping")
        try:
            await self.bot.ensure_registered()
            if self.settings.bot_displayname:
                await self.bot.set_displayname(self.settings.bot_displayname)
        except MatrixError:
            log.warning("Could not set the bot's profile", exc_info=True)


class DirectMessenger:
    """Delivers the bot's notices to one user in their DM room, created when needed. Runs as the
    executor of ``matrix.dm`` effects (after commit), never inside a database transaction."""

    def __init__(self, matrix: MatrixConnection, rooms: DirectRoomRepository) -> None:
        self.matrix = matrix
        self.rooms = rooms

    async def remember(self, user_id: str, room_id: str) -> None:
        """A DM the user opened with the bot (an invite with is_direct)."""
        await self.rooms.set(user_id, room_id)

    async def send(self, user_id: str, html: str, *, txn_id: str | None = None) -> RoomID:
        room_id = await self.rooms.get(user_id)
        if room_id is not None:
            try:
                await self._notice(RoomID(room_id), html, txn_id)
                return RoomID(room_id)
            except MatrixRequestError as exc:
                if not 400 <= (exc.http_status or 0) < 500 or exc.http_status == 429:
                    raise  # the homeserver is struggling: retry later, in the same room
                dm_log.info(
                    "DM room %s with %s is unusable (%s); opening a new one", room_id, user_id, exc
                )
        new_room = await self._open(user_id)
        await self._notice(new_room, html, txn_id)
        return new_room

    async def room_for(self, user_id: str) -> RoomID:
        """The user's DM room with the bot, opened when there is none yet."""
        known = await self.rooms.get(user_id)
        return RoomID(known) if known is not None else await self._open(user_id)

    async def _open(self, user_id: str) -> RoomID:
        new_room = await self.matrix.bot.create_room(
            preset=RoomCreatePreset.TRUSTED_PRIVATE,
            is_direct=True,
            invitees=[UserID(user_id)],
            name=None,
        )
        await self.rooms.set(user_id, new_room)
        return new_room

    async def _notice(self, room_id: RoomID, html: str, txn_id: str | None) -> None:
        await self.matrix.send_message_event(
            room_id,
            EventType.ROOM_MESSAGE,
            TextMessageEventContent(
                msgtype=MessageType.NOTICE,
                body=html_to_text(html),
                format=Format.HTML,
                formatted_body=html,
            ),
            txn_id=txn_id,
        )
