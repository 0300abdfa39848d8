"""A Matrix user (matrix-nio) with a sync loop running, noting when each awaited event arrives.

Every timeline event that comes down ``/sync`` is noted under two keys: its own event id, and (when
it is a reply) its sender plus the event it replies to. The arrival time is taken when the sync
response is back, before any waiter wakes, so a reply that arrives before the sender's
``room_send`` has even returned is still timed correctly.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from nio import AsyncClient, AsyncClientConfig, JoinedMembersResponse, LoginResponse, SyncResponse

log = logging.getLogger("unityplan.bench.sync")

# The long-poll timeout: the server answers as soon as something new arrives.
SYNC_TIMEOUT_MS = 30_000


class SyncFailed(RuntimeError):
    """The sync loop stopped; nothing more will arrive."""


def event_key(event_id: str) -> str:
    return f"event {event_id}"


def reply_key(sender: str, in_reply_to: str) -> str:
    return f"reply {sender} {in_reply_to}"


def invite_key(room_id: str) -> str:
    return f"invite {room_id}"


def membership_key(room_id: str, user_id: str, membership: str) -> str:
    return f"member {room_id} {user_id} {membership}"


def keys_of(source: dict[str, Any]) -> list[str]:
    keys = [event_key(str(source.get("event_id")))]
    relates_to = (source.get("content") or {}).get("m.relates_to") or {}
    in_reply_to = (relates_to.get("m.in_reply_to") or {}).get("event_id")
    if in_reply_to:
        keys.append(reply_key(str(source.get("sender")), str(in_reply_to)))
    return keys


class SyncedUser:
    def __init__(self, homeserver_url: str, user_id: str, store: Path | None = None) -> None:
        """With ``store`` (a folder for its keys) the client encrypts: nio's own E2EE."""
        self.user_id = user_id
        self.encrypts = store is not None
        if store is not None:
            store.mkdir(parents=True, exist_ok=True)
            self.client = AsyncClient(
                homeserver_url,
                user_id,
                store_path=str(store),
                config=AsyncClientConfig(encryption_enabled=True, store_sync_tokens=False),
            )
        else:
            self.client = AsyncClient(homeserver_url, user_id)
        self._arrivals: dict[str, float] = {}
        self._waiters: dict[str, asyncio.Future[float]] = {}
        self._task: asyncio.Task[None] | None = None

    async def login(self, password: str) -> None:
        response = await self.client.login(password, device_name="bench")
        if not isinstance(response, LoginResponse):
            raise RuntimeError(f"{self.user_id} could not log in: {response}")

    async def start_syncing(self) -> None:
        """One initial sync for a since token, then the long-poll loop in the background."""
        first = await self.client.sync(timeout=0)
        if not isinstance(first, SyncResponse):
            raise RuntimeError(f"{self.user_id}: initial sync failed: {first}")
        self._task = asyncio.create_task(self._sync_forever(), name=f"sync {self.user_id}")
        self._task.add_done_callback(self._sync_stopped)

    async def _keys(self) -> None:
        """What an encrypting client does between syncs: upload, query and claim keys."""
        client = self.client
        if client.should_upload_keys:
            await client.keys_upload()
        if client.should_query_keys:
            await client.keys_query()
        if client.should_claim_keys:
            await client.keys_claim(client.get_users_for_key_claiming())

    async def _sync_forever(self) -> None:
        while True:
            if self.encrypts:
                await self._keys()
            response = await self.client.sync(timeout=SYNC_TIMEOUT_MS)
            arrived = time.perf_counter()
            if isinstance(response, SyncResponse):
                self._note(response, arrived)
            else:
                log.warning("%s: sync failed: %s", self.user_id, response)
                await asyncio.sleep(0.5)

    def _note(self, response: SyncResponse, arrived: float) -> None:
        keys: list[str] = []
        for rooms in (response.rooms.join, response.rooms.leave):
            for room_id, room in rooms.items():
                for event in room.timeline.events:
                    keys += keys_of(event.source)
                    if event.source.get("type") == "m.room.member":
                        membership = (event.source.get("content") or {}).get("membership")
                        keys.append(
                            membership_key(
                                room_id, str(event.source.get("state_key")), str(membership)
                            )
                        )
        keys += [invite_key(room_id) for room_id in response.rooms.invite]
        for key in keys:
            waiter = self._waiters.pop(key, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(arrived)
            elif key not in self._arrivals:
                self._arrivals[key] = arrived

    def _sync_stopped(self, task: asyncio.Task[None]) -> None:
        error = SyncFailed(f"the sync loop of {self.user_id} stopped")
        if not task.cancelled() and task.exception() is not None:
            error = SyncFailed(f"the sync loop of {self.user_id} failed: {task.exception()!r}")
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
        self._waiters.clear()

    def forget(self, key: str) -> None:
        """Drop an earlier arrival of ``key`` (keys that repeat, like a member's leave)."""
        self._arrivals.pop(key, None)

    async def arrival_of(self, key: str) -> float:
        """``time.perf_counter()`` at the sync that brought ``key``; waits for it if need be."""
        if key in self._arrivals:
            return self._arrivals.pop(key)
        if self._task is None or self._task.done():
            raise SyncFailed(f"{self.user_id} is not syncing")
        waiter = self._waiters.setdefault(key, asyncio.get_running_loop().create_future())
        try:
            return await waiter
        finally:
            self._waiters.pop(key, None)

    async def has_joined(self, room_id: str, user_id: str) -> bool:
        response = await self.client.joined_members(room_id)
        return isinstance(response, JoinedMembersResponse) and any(
            member.user_id == user_id for member in response.members
        )

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.close()
