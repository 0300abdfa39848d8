"""A real Matrix user for tests: a matrix-nio client that registers, sends and reads through sync."""

from __future__ import annotations

import asyncio
import io
import secrets
import time
from collections.abc import Callable
from typing import Any

import aiohttp
from nio import (
    AsyncClient,
    LoginResponse,
    RoomCreateResponse,
    RoomSendResponse,
    SyncResponse,
    UploadResponse,
)

from appservice.stack.local import LocalStack, TerritoryNode

Event = dict[str, Any]


class MatrixUser:
    def __init__(
        self, client: AsyncClient, stack: LocalStack, node: TerritoryNode | None = None
    ) -> None:
        self.client = client
        self.stack = stack
        self.node = node or stack.first  # the territory whose homeserver the user is on
        self.user_id: str = client.user_id
        self.timeline: dict[str, list[Event]] = {}
        self.invites: set[str] = set()
        self._since: str | None = None

    @classmethod
    async def create(
        cls, stack: LocalStack, localpart: str | None = None, node: TerritoryNode | None = None
    ) -> MatrixUser:
        node = node or stack.first
        localpart = localpart or f"user_{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(12)
        user_id = await node.synapse.register_user(localpart, password)
        return await cls.login(stack, user_id, password, node=node)

    @classmethod
    async def login(
        cls, stack: LocalStack, user_id: str, password: str, node: TerritoryNode | None = None
    ) -> MatrixUser:
        node = node or stack.first
        client = AsyncClient(node.synapse.url, user_id)
        response = await client.login(password)
        assert isinstance(response, LoginResponse), response
        user = cls(client, stack, node)
        await user.sync(timeout_ms=0)
        return user

    async def close(self) -> None:
        await self.client.close()

    async def openid_token(self) -> str:
        """A Matrix OpenID token of this user (what a client hands a third party, like our API)."""
        response = await self.client.get_openid_token(self.user_id)
        token = getattr(response, "access_token", None)
        assert isinstance(token, str), response
        return token

    @property
    def bot(self) -> str:
        assert self.node.config is not None
        return self.node.config.bot_user_id

    async def sync(self, timeout_ms: int = 1000) -> None:
        response = await self.client.sync(timeout=timeout_ms, since=self._since, full_state=False)
        assert isinstance(response, SyncResponse), response
        self._since = response.next_batch
        for room_id, room in response.rooms.join.items():
            events = self.timeline.setdefault(room_id, [])
            events.extend(event.source for event in room.timeline.events)
        for room_id in response.rooms.invite:
            if room_id not in self.invites:
                self.invites.add(room_id)
                await self.client.join(room_id)  # e.g. the bot's DM with a reminder

    async def wait_for(
        self, room_id: str, predicate: Callable[[Event], bool], timeout: float = 20
    ) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            for event in self.timeline.get(room_id, []):
                if predicate(event):
                    return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching event in {room_id} within {timeout} s")
            await self.sync()

    async def room_with_bot(self, direct: bool = True) -> str:
        """A new room with the bot invited; returns once the bot has joined."""
        response = await self.client.room_create(invite=[self.bot], is_direct=direct)
        assert isinstance(response, RoomCreateResponse), response
        await self.bot_joined(response.room_id)
        return response.room_id

    async def send(self, room_id: str, body: str, msgtype: str = "m.text") -> str:
        response = await self.client.room_send(
            room_id, "m.room.message", {"msgtype": msgtype, "body": body}
        )
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    async def send_file(self, room_id: str, data: bytes, filename: str, mime: str) -> str:
        """Upload a file and post it as m.file; returns the event id."""
        upload, _ = await self.client.upload(
            io.BytesIO(data), content_type=mime, filename=filename, filesize=len(data)
        )
        assert isinstance(upload, UploadResponse), upload
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {
                "msgtype": "m.file",
                "body": filename,
                "url": upload.content_uri,
                "info": {"mimetype": mime, "size": len(data)},
            },
        )
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    async def command_replying(self, room_id: str, body: str, reply_to: str) -> Event:
        """Send a command as a reply to another event; return the bot's reply."""
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": body,
                "m.relates_to": {"m.in_reply_to": {"event_id": reply_to}},
            },
        )
        assert isinstance(response, RoomSendResponse), response
        return await self.wait_for(room_id, lambda e: replies_to(e, response.event_id, self.bot))

    async def dm_from_bot(
        self, predicate: Callable[[Event], bool], timeout: float = 30, bot: str | None = None
    ) -> Event:
        """A notice from the bot (of the user's own territory unless ``bot`` names another) in
        any room, matching ``predicate`` (DMs are joined on invite)."""
        sender = bot or self.bot
        deadline = time.monotonic() + timeout
        while True:
            for events in self.timeline.values():
                for event in events:
                    if event.get("sender") == sender and predicate(event):
                        return event
            if time.monotonic() > deadline:
                raise TimeoutError(f"no matching message from the bot within {timeout} s")
            await self.sync()

    async def bot_joined(self, room_id: str) -> Event:
        """The bot's join to a room the user invited it to."""
        return await self.wait_for(room_id, lambda e: _is_join(e, self.bot))

    async def command(self, room_id: str, body: str, timeout: float = 20) -> Event:
        """Send a command and return the bot's notice that replies to it."""
        event_id = await self.send(room_id, body)
        return await self.wait_for(room_id, lambda e: replies_to(e, event_id, self.bot), timeout)

    def replies(self, room_id: str, event_id: str) -> list[Event]:
        return [e for e in self.timeline.get(room_id, []) if replies_to(e, event_id, self.bot)]


def is_membership(event: Event, user_id: str, membership: str) -> bool:
    """Whether ``event`` is ``user_id``'s member event with this membership (join, leave...)."""
    return (
        event.get("type") == "m.room.member"
        and event.get("state_key") == user_id
        and event.get("content", {}).get("membership") == membership
    )


def _is_join(event: Event, user_id: str) -> bool:
    return is_membership(event, user_id, "join")


def replies_to(event: Event, event_id: str, sender: str) -> bool:
    content = event.get("content", {})
    return (
        event.get("sender") == sender
        and content.get("msgtype") == "m.notice"
        and content.get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id") == event_id
    )


def body(event: Event) -> str:
    return str(event.get("content", {}).get("body", ""))


def html(event: Event) -> str:
    return str(event.get("content", {}).get("formatted_body", ""))


async def gather_users(stack: LocalStack, count: int) -> list[MatrixUser]:
    return list(await asyncio.gather(*(MatrixUser.create(stack) for _ in range(count))))


async def password_login(homeserver_url: str, localpart: str, password: str) -> str:
    """An access token for ``localpart`` (a new device), by password."""
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{homeserver_url}/_matrix/client/v3/login",
            json={
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": localpart},
                "password": password,
            },
        ) as resp:
            return str((await resp.json())["access_token"])


async def download_media(homeserver_url: str, user: MatrixUser, mxc: str) -> bytes:
    """A file of the media repository, as ``user`` (authenticated media)."""
    server, media_id = mxc.removeprefix("mxc://").split("/", 1)
    async with aiohttp.ClientSession() as session:
        async with session.get(
            f"{homeserver_url}/_matrix/client/v1/media/download/{server}/{media_id}",
            headers={"Authorization": f"Bearer {user.client.access_token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.read()
