"""A Matrix user whose client encrypts: matrix-nio with its own E2EE (vodozemac), an implementation
independent of the bot's (mautrix-python on python-olm)."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from nio import (
    AsyncClient,
    AsyncClientConfig,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomSendResponse,
    SyncResponse,
    ToDeviceError,
)

from appservice.stack.local import LocalStack, TerritoryNode
from tests.matrix_user import Event, MatrixUser

ENCRYPTION_STATE = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


class E2EEUser(MatrixUser):
    """Events in ``timeline`` are what the device could read: decrypted ones carry
    ``"decrypted": True``; those it could not decrypt stay ``m.room.encrypted``."""

    @classmethod
    async def create_encrypted(
        cls,
        stack: LocalStack,
        localpart: str | None = None,
        node: TerritoryNode | None = None,
        password: str | None = None,
    ) -> E2EEUser:
        node = node or stack.first
        localpart = localpart or f"e2ee_{secrets.token_hex(4)}"
        password = password or secrets.token_urlsafe(12)
        user_id = await node.synapse.register_user(localpart, password)
        user = await cls.login_device(stack, user_id, password, node=node)
        user.password = password
        return user

    @classmethod
    async def login_device(
        cls, stack: LocalStack, user_id: str, password: str, node: TerritoryNode | None = None
    ) -> E2EEUser:
        """A new device of ``user_id``, with its own keys."""
        node = node or stack.first
        store = Path(tempfile.mkdtemp(prefix="nio-store-"))
        client = AsyncClient(
            node.synapse.url,
            user_id,
            store_path=str(store),
            config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
        )
        response = await client.login(password, device_name="test device")
        assert isinstance(response, LoginResponse), response
        user = cls(client, stack, node)
        user.password = password
        user.store = store
        await user.sync(timeout_ms=0)
        return user

    password: str = ""
    store: Path | None = None

    async def close(self) -> None:
        await super().close()
        if self.store is not None:
            shutil.rmtree(self.store, ignore_errors=True)

    async def sync(self, timeout_ms: int = 1000) -> None:
        client = self.client
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())
        response = await client.sync(timeout=timeout_ms, since=self._since, full_state=False)
        assert isinstance(response, SyncResponse), response
        self._since = response.next_batch
        for room_id, room in response.rooms.join.items():
            events = self.timeline.setdefault(room_id, [])
            for event in room.timeline.events:
                source: dict[str, Any] = dict(event.source)
                if getattr(event, "decrypted", False) and not isinstance(event, MegolmEvent):
                    source = {**source, "decrypted": True}
                events.append(source)
        for room_id in response.rooms.invite:
            if room_id not in self.invites:
                self.invites.add(room_id)
                await client.join(room_id)
        for event in response.to_device_events:
            del event  # nio handles key shares itself; nothing to record

    async def encrypted_room_with_bot(
        self, *, direct: bool = True, moderator_bot: bool = False
    ) -> str:
        """A new encrypted room with the bot invited (as a moderator when asked)."""
        response = await self.client.room_create(
            invite=[self.bot],
            is_direct=direct,
            initial_state=[ENCRYPTION_STATE],
            power_level_override={"users": {self.bot: 50}} if moderator_bot else None,
        )
        assert isinstance(response, RoomCreateResponse), response
        await self.bot_joined(response.room_id)
        return response.room_id

    async def send(self, room_id: str, body: str, msgtype: str = "m.text") -> str:
        await self.sync(timeout_ms=0)  # the room's members and their devices
        response = await self.client.room_send(
            room_id,
            "m.room.message",
            {"msgtype": msgtype, "body": body},
            ignore_unverified_devices=True,
        )
        assert isinstance(response, RoomSendResponse), response
        return response.event_id

    async def history(self, room_id: str, limit: int = 50) -> list[Event]:
        """The room's latest events as the server has them (encrypted ones still sealed)."""
        response = await self.client.room_messages(room_id, start="", limit=limit)
        return [dict(e.source) for e in getattr(response, "chunk", [])]

    async def request_keys(self, event: Event, sender: str, sender_device: str) -> None:
        """Ask the sender's device for the room key of an event this device cannot read (nio
        itself asks only the user's own devices)."""
        sealed = MegolmEvent.from_dict(event)
        if sealed.session_id in self.client.outgoing_key_requests:
            return

        await self.client.request_room_key(sealed)  # remembered: the answer will be accepted
        message = sealed.as_key_request(
            sender, self.client.device_id, request_id=sealed.session_id, device_id=sender_device
        )
        response = await self.client.to_device(message)
        assert not isinstance(response, ToDeviceError), response
