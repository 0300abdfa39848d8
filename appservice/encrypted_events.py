"""Encrypted events between the homeserver's transactions and the handlers.

- A transaction's to-device messages, one-time key counts and device lists go to the bot's
  encryption first (before its events), so a room key that comes with a message decrypts it.
- ``decrypt`` gives the dispatcher the plaintext event (marked ``was_encrypted``). An event whose
  room key has not arrived waits in the inbox (status ``keys``) without holding up its
  transaction; when to-device messages arrive, and every few seconds, waiting events are tried
  again; after ``key_wait_seconds`` the sender is told the bot could not read it.
- With encryption off (or not available), the bot says once per room that it cannot read
  encrypted messages there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from mautrix.types import EncryptedEvent, Event, EventType, StateEvent

from core.background import wait_until_set
from core.effects import Effects
from core.encryption import BotEncryption, KeysMissing, Undecryptable
from core.html import escape
from core.matrix import MatrixConnection
from db.cache import LruCache
from db.repositories.transactions import InboxEvent, TransactionRepository

log = logging.getLogger("unityplan.encryption")

RETRY_SECONDS = 5.0
CANNOT_READ = (
    "I cannot read encrypted messages in this room: end-to-end encryption is switched off for me "
    "on this homeserver (ask its admin). Commands work in unencrypted rooms and in a DM with me."
)


class EncryptedEvents:
    def __init__(
        self,
        matrix: MatrixConnection,
        inbox: TransactionRepository,
        effects: Effects,
        *,
        enabled: bool,
        key_wait_seconds: float,
    ) -> None:
        self.matrix = matrix
        self.inbox = inbox
        self.effects = effects
        self.enabled = enabled
        self.key_wait_seconds = key_wait_seconds
        self._wake = asyncio.Event()
        self._waiting_since: dict[str, float] = {}  # event id -> when it first waited
        self._told_rooms: LruCache[str, bool] = LruCache(10_000)

    @property
    def encryption(self) -> BotEncryption | None:
        return self.matrix.encryption

    # --- the transaction's encryption parts ---------------------------------------------------

    async def handle_transaction(self, body: dict[str, Any]) -> None:
        encryption = self.encryption
        if encryption is None:
            return
        if await encryption.handle_transaction(body):
            self._wake.set()  # to-device messages may have brought room keys

    # --- for the dispatcher -------------------------------------------------------------------

    async def decrypt(self, item: InboxEvent, event: Event) -> Event | None:
        """The plaintext event, or None when it is settled without handlers (waiting for its
        key, or unreadable)."""
        encryption = self.encryption
        if not isinstance(event, EncryptedEvent):
            return event
        if encryption is None:
            if self.enabled:  # the device is not up yet: wait like for a key
                await self.inbox.wait_for_keys(item.event_id, "(the bot's device is starting)")
                self._waiting_since.setdefault(item.event_id, time.monotonic())
            else:
                await self._say_cannot_read(str(event.room_id))
                await self.inbox.mark(item.event_id, "done", "encrypted; encryption is off")
            return None
        try:
            decrypted = await encryption.decrypt(event)
        except KeysMissing as exc:
            log.info("No room key yet for %s (%s): it waits", item.event_id, exc.session_id)
            await self.inbox.wait_for_keys(item.event_id, exc.session_id)
            self._waiting_since.setdefault(item.event_id, time.monotonic())
            return None
        except Undecryptable as exc:
            log.warning("Cannot decrypt %s: %s", item.event_id, exc)
            await self.inbox.mark(item.event_id, "done", f"undecryptable: {exc}")
            return None
        self._waiting_since.pop(item.event_id, None)
        return decrypted

    async def member_changed(self, event: StateEvent) -> None:
        encryption = self.encryption
        if encryption is not None and event.type == EventType.ROOM_MEMBER:
            try:
                await encryption.handle_member_event(event)
            except Exception as exc:
                log.warning("Could not follow a membership change in %s: %s", event.room_id, exc)

    async def _say_cannot_read(self, room_id: str) -> None:
        if self._told_rooms.lookup(room_id)[0]:
            return
        self._told_rooms.put(room_id, True, self._told_rooms.generation)
        await self.effects.notice(room_id, escape(CANNOT_READ))

    # --- waiting events -----------------------------------------------------------------------

    async def run(self) -> None:
        """Try waiting events again when keys may have come; tell senders after the wait."""
        while True:
            await wait_until_set(self._wake, RETRY_SECONDS)
            self._wake.clear()
            try:
                await self._retry()
            except Exception:
                log.exception("Retrying events that wait for room keys failed")

    async def _retry(self) -> None:
        if self.encryption is None:
            return
        now = time.monotonic()
        for item in await self.inbox.waiting_for_keys():
            since = self._waiting_since.setdefault(item.event_id, now)
            if now - since > self.key_wait_seconds:
                self._waiting_since.pop(item.event_id, None)
                await self.inbox.give_up(item.event_id, item.attempts, "no room key arrived")
                sender = str(item.event.get("sender", ""))
                if sender and item.room_id:
                    await self.effects.dm(
                        sender,
                        "I could not read a message you sent in an encrypted room: your device "
                        "never shared its key with mine. Please send it again.",
                    )
                continue
            await self.inbox.retry_with_keys(item.event_id)
