"""The bot's end-to-end encryption: its own device, Olm/Megolm sessions in PostgreSQL, decryption of
what members send in encrypted rooms and encryption of what the bot sends there.

The appservice way (docs/encryption.md): the device is made with the as_token (MSC4190,
``PUT /devices/{id}``; appservice login when the homeserver lacks it); to-device messages,
one-time key counts and device list changes arrive in the homeserver's transactions
(MSC2409/MSC3202) and are handed to ``handle_transaction`` before the transaction's events; key
claims and queries for the bot go through the appservice (MSC3983/MSC3984). mautrix-python's
OlmMachine (python-olm) does the cryptography; its store (``PgCryptoStore``) lives in the
territory's own schema, so a restart or a crash keeps every session.

The bot's device is signed by the bot's own cross-signing keys, made on first start; their recovery
key is written to a file beside the other secrets (``encryption.recovery_key``).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
from mautrix.appservice.state_store import ASStateStore
from mautrix.client import Client
from mautrix.crypto import OlmMachine, PgCryptoStore, RejectKeyShare
from mautrix.crypto import StateStore as CryptoStateStore
from mautrix.crypto.attachments import encrypt_attachment
from mautrix.errors import (
    DecryptionError,
    EncryptionError,
    MatrixRequestError,
    MNotFound,
    SessionNotFound,
)
from mautrix.types import (
    ASToDeviceEvent,
    DeviceID,
    DeviceIdentity,
    DeviceLists,
    DeviceOTKCount,
    EncryptedEvent,
    EncryptedFile,
    EncryptedMegolmEventContent,
    Event,
    EventType,
    LoginType,
    Membership,
    RequestedKeyInfo,
    RoomEncryptionStateEventContent,
    RoomID,
    RoomKeyWithheldCode,
    StateEvent,
    TrustState,
    UserID,
)
from mautrix.util.async_db import Database as MautrixDatabase
from mautrix.util.logging import TraceLogger

from db.cache import LruCache

log = logging.getLogger("unityplan.encryption")


class _Unsigned(logging.Filter):
    """Members' devices are rarely cross-signed: mautrix says so on every message, as a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not ("cross-signing key" in text or "isn't cross-signed" in text)


logging.getLogger("unityplan.encryption.olm").addFilter(_Unsigned())


def was_encrypted(event: Event) -> bool:
    """Whether the event reached the handlers decrypted (it came encrypted)."""
    marker = event.get("mautrix") if hasattr(event, "get") else None
    return bool(isinstance(marker, dict) and marker.get("was_encrypted"))


class KeysMissing(Exception):
    """The room key of an encrypted event has not arrived (yet): try again when it does."""

    def __init__(self, session_id: str) -> None:
        super().__init__(f"no room key for session {session_id} yet")
        self.session_id = session_id


class Undecryptable(Exception):
    """An encrypted event that will never decrypt (corrupt, replayed, wrong room)."""


@dataclass(frozen=True)
class EncryptionSettings:
    homeserver_url: str
    bot_user_id: str
    as_token: str
    database_url: str  # the territory's database, as its own role
    schema: str  # the territory's schema: the crypto store's tables live there
    pickle_key: str  # encrypts the Olm account and sessions at rest
    device_name: str = "UnityPlan bot"
    recovery_key_path: Path | None = None
    verify_ssl: bool = True


def load_or_create_secret(path: Path) -> str:
    """A random secret kept in a file of mode 0600 (created on first use)."""
    if path.exists():
        return path.read_text("utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(secret + "\n")
    return secret


class RoomCryptoState(CryptoStateStore):
    """What the OlmMachine asks about rooms, from the appservice's state cache; what the cache does
    not know is asked of the homeserver (never inside a database transaction: the callers are
    decryption and sending, which run outside them)."""

    def __init__(self, cache: ASStateStore, client: Client) -> None:
        self.cache = cache
        self.client = client
        # Rooms the homeserver said are not encrypted. Switching encryption on is a state event
        # the transactions bring into the cache, which is asked first.
        self._plain: LruCache[RoomID, bool] = LruCache(10_000)

    async def get_encryption_info(self, room_id: RoomID) -> RoomEncryptionStateEventContent | None:
        cached = await self.cache.get_encryption_info(room_id)
        if cached is not None:
            return cached
        if self._plain.lookup(room_id)[0]:
            return None
        try:
            content = await self.client.get_state_event(room_id, EventType.ROOM_ENCRYPTION)
        except MNotFound:
            self._plain.put(room_id, True, self._plain.generation)
            return None
        except MatrixRequestError as exc:
            log.warning("Cannot read the encryption state of %s: %s", room_id, exc)
            return None
        info = cast(RoomEncryptionStateEventContent, content)
        await self.cache.set_encryption_info(room_id, info)
        return info

    async def is_encrypted(self, room_id: RoomID) -> bool:
        info = await self.get_encryption_info(room_id)
        return bool(info and info.algorithm)

    async def find_shared_rooms(self, user_id: UserID) -> list[RoomID]:
        members: dict[RoomID, dict[UserID, Any]] = getattr(self.cache, "members", {})
        shared = []
        for room_id, users in members.items():
            member = users.get(user_id)
            joined = member is not None and member.membership == Membership.JOIN
            if joined and await self.is_encrypted(room_id):
                shared.append(room_id)
        return shared


class BotEncryption:
    def __init__(
        self,
        settings: EncryptionSettings,
        state_cache: ASStateStore,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.settings = settings
        self.state_cache = state_cache
        self._session = session
        self._db: MautrixDatabase | None = None
        self._store: PgCryptoStore | None = None
        self._client: Client | None = None
        self._machine: OlmMachine | None = None
        self.rooms: RoomCryptoState | None = None
        self.keys_shared = 0  # room keys forwarded on request (unityplan_encryption_keys_shared)

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        self._db = MautrixDatabase.create(
            s.database_url,
            upgrade_table=PgCryptoStore.upgrade_table,
            db_args={
                "min_size": 1,
                "max_size": 4,
                "server_settings": {"search_path": s.schema},
                # A dropped connection is retried like any other, not a reason to exit the process.
                "meow_exit_on_ice": False,
            },
            log=cast(TraceLogger, logging.getLogger("unityplan.encryption.db")),
        )
        await self._db.start()
        self._store = PgCryptoStore(s.bot_user_id, s.pickle_key, self._db)
        await self._store.open()
        device_id = await self._store.get_device_id()
        client = Client(
            mxid=UserID(s.bot_user_id),
            base_url=s.homeserver_url,
            token=s.as_token,
            client_session=self._session,
            # What it reads (joined members, encryption state) fills the appservice's cache, so
            # a member's new device makes the bot renew its session in the rooms they share.
            state_store=cast(Any, self.state_cache),
            log=cast(TraceLogger, logging.getLogger("unityplan.encryption.api")),
            default_retry_count=0,
        )
        self._client = client
        await self._create_device(client, device_id)
        self.rooms = RoomCryptoState(self.state_cache, client)
        machine = OlmMachine(
            client,
            self._store,
            self.rooms,
            log=cast(TraceLogger, logging.getLogger("unityplan.encryption.olm")),
        )
        # Members' devices are rarely verified: share with and accept keys from any device of a
        # member who is in the room (allow_key_share checks that), refuse blacklisted ones.
        machine.share_keys_min_trust = TrustState.UNVERIFIED
        machine.send_keys_min_trust = TrustState.UNVERIFIED
        machine.allow_key_share = self._allow_key_share
        self._machine = machine
        await machine.load()
        if not device_id:
            await self._store.put_device_id(client.device_id)
            await machine.share_keys()
            log.info("The bot's new device %s has its keys on the homeserver", client.device_id)
        else:
            shared = machine.account is not None and machine.account.shared
            if not shared or not await self._keys_on_server():
                await machine.share_keys()
        await self._cross_sign()

    async def _create_device(self, client: Client, device_id: DeviceID | None) -> None:
        try:
            await client.create_device_msc4190(
                device_id=device_id or "", initial_display_name=self.settings.device_name
            )
            return
        except MatrixRequestError as exc:
            if exc.errcode not in ("M_UNRECOGNIZED", "M_UNKNOWN", "M_FORBIDDEN"):
                raise
            log.info("No MSC4190 device creation (%s); logging in as the appservice", exc.errcode)
        await client.login(
            login_type=LoginType.APPSERVICE,
            device_name=self.settings.device_name,
            device_id=device_id,
            store_access_token=True,
            update_hs_url=False,
        )

    async def _keys_on_server(self) -> bool:
        assert self._client is not None
        me = self._client.mxid
        found = await self._client.query_keys([me])
        return bool(found.device_keys.get(me, {}).get(self._client.device_id))

    async def _cross_sign(self) -> None:
        machine = self._machine
        assert machine is not None
        try:
            trust = await machine.resolve_trust(machine.own_identity)
            if trust >= TrustState.CROSS_SIGNED_UNTRUSTED:
                return
            recovery_key = await machine.generate_recovery_key()
        except Exception as exc:  # clients still talk to an unsigned device, with a warning
            log.warning("Could not cross-sign the bot's device: %s", exc)
            return
        path = self.settings.recovery_key_path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(recovery_key + "\n")
        log.info("The bot's device is signed by its new cross-signing keys")

    async def stop(self) -> None:
        if self._client is not None and self._session is None:
            await self._client.api.session.close()  # the session mautrix made for itself
        if self._store is not None:
            await self._store.close()
        if self._db is not None:
            await self._db.stop()
        self._machine = None

    @property
    def device_id(self) -> str:
        return str(self._client.device_id) if self._client else ""

    @property
    def machine(self) -> OlmMachine:
        if self._machine is None:
            raise RuntimeError("encryption is not started")
        return self._machine

    # --- what the homeserver sends ------------------------------------------------------------

    async def handle_transaction(self, body: dict[str, Any]) -> int:
        """The encryption parts of a transaction; returns how many room keys it may have brought
        (to-device messages), so the caller knows when to retry waiting events."""
        machine = self.machine
        to_device = _either(body, "to_device", "de.sorunome.msc2409.to_device") or []
        for raw in to_device:
            try:
                event = cast(ASToDeviceEvent, ASToDeviceEvent.deserialize(raw))
                await machine.handle_as_to_device_event(event)
            except Exception:
                log.exception("Could not handle a to-device event of type %s", raw.get("type"))
        lists = _either(body, "device_lists", "org.matrix.msc3202.device_lists")
        if lists:
            await machine.handle_as_device_lists(DeviceLists.deserialize(lists))
        counts = _either(
            body, "device_one_time_keys_count", "org.matrix.msc3202.device_one_time_keys_count"
        )
        # Only our device's count: Synapse lists the cross-signing keys as devices too (empty).
        own = (counts or {}).get(self.settings.bot_user_id, {}).get(self.device_id)
        if own is not None:
            await machine.handle_as_otk_counts(
                {UserID(self.settings.bot_user_id): {DeviceID(self.device_id): own_count(own)}}
            )
        return len(to_device)

    async def knows_device(self, user_id: str, device_id: str) -> bool:
        """Whether the bot has fetched this device's keys (it encrypts for it from now on)."""
        devices = await self.machine.crypto_store.get_devices(UserID(user_id))
        return bool(devices and DeviceID(device_id) in devices)

    async def handle_member_event(self, event: StateEvent) -> None:
        """A member left or joined: the room's outgoing session is replaced before the next send."""
        await self.machine.handle_member_event(event)

    async def decrypt(self, event: EncryptedEvent) -> Event:
        try:
            return await self.machine.decrypt_megolm_event(event)
        except SessionNotFound as exc:
            raise KeysMissing(str(exc.session_id)) from exc
        except DecryptionError as exc:
            raise Undecryptable(str(exc)) from exc

    # --- what the bot sends -------------------------------------------------------------------

    async def is_encrypted(self, room_id: str) -> bool:
        assert self.rooms is not None
        return await self.rooms.is_encrypted(RoomID(room_id))

    async def encrypt(
        self, room_id: str, event_type: EventType, content: Any
    ) -> EncryptedMegolmEventContent:
        machine, room = self.machine, RoomID(room_id)
        try:
            return await machine.encrypt_megolm_event(room, event_type, content)
        except EncryptionError:
            assert self._client is not None
            members = list((await self._client.get_joined_members(room)).keys())
            await machine.share_group_session(room, members)
            return await machine.encrypt_megolm_event(room, event_type, content)

    @staticmethod
    def encrypt_file(data: bytes) -> tuple[bytes, EncryptedFile]:
        """An attachment for an encrypted room: the ciphertext to upload, and the key that goes
        (encrypted) in the event."""
        return encrypt_attachment(data)

    # --- key requests -------------------------------------------------------------------------

    async def _allow_key_share(self, device: DeviceIdentity, request: RequestedKeyInfo) -> bool:
        """A member's new device asks for a room key: share it when they are in the room."""
        if device.trust == TrustState.BLACKLISTED:
            raise RejectKeyShare(
                f"{device.user_id}/{device.device_id} is blacklisted",
                code=RoomKeyWithheldCode.BLACKLISTED,
                reason="Your device is blacklisted",
            )
        assert self._client is not None
        try:
            members = await self._client.get_joined_members(request.room_id)
        except MatrixRequestError:
            members = {}
        if device.user_id not in members:
            raise RejectKeyShare(
                f"{device.user_id} asked for a key of {request.room_id} without being in it",
                code=RoomKeyWithheldCode.UNAUTHORIZED,
                reason="You are not in that room",
            )
        log.info("Sharing a room key of %s with %s/%s", request.room_id, *_device(device))
        self.keys_shared += 1
        return True


def own_count(raw: dict[str, Any]) -> DeviceOTKCount:
    return cast(DeviceOTKCount, DeviceOTKCount.deserialize(cast(Any, raw)))


def _device(device: DeviceIdentity) -> tuple[str, str]:
    return str(device.user_id), str(device.device_id)


def _either(body: dict[str, Any], stable: str, unstable: str) -> Any:
    value = body.get(stable)
    return value if value is not None else body.get(unstable)
