"""From recorded transaction events to handlers: drop our own echoes, keep each room in order.

Each event runs in one database transaction of the territory database together with marking it
handled in the inbox, so a handler's database effects and "handled" commit together. One event
failing is logged and marked failed; the others go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Protocol

from mautrix.types import Event, StateEvent

from core.ids import Namespace
from core.matrix import CachedStateStore
from db.cache import KeyedLocks
from db.database import Database
from db.repositories.transactions import InboxEvent, TransactionRepository

from .metrics import Metrics

log = logging.getLogger("unityplan.dispatcher")


class EventHandler(Protocol):
    async def handle(self, event: Event) -> None: ...


class Dispatcher:
    def __init__(
        self,
        *,
        namespace: Namespace,
        handlers: list[EventHandler],
        inbox: TransactionRepository,
        db: Database,
        state_store: CachedStateStore,
        metrics: Metrics,
        max_concurrent: int,
    ) -> None:
        self.namespace = namespace
        self.handlers = handlers
        self.inbox = inbox
        self.db = db
        self.state_store = state_store
        self.metrics = metrics
        self._slots = asyncio.Semaphore(max_concurrent)
        self._room_locks: KeyedLocks[str] = KeyedLocks()  # kept only while a room is busy

    def is_own(self, sender: str) -> bool:
        return self.namespace.is_own_user(sender)

    async def dispatch(self, events: list[InboxEvent]) -> None:
        """Handle events: rooms concurrently, each room's events in order. Returns when all are done."""
        by_room: OrderedDict[str, list[InboxEvent]] = OrderedDict()
        for item in events:
            by_room.setdefault(item.room_id or "", []).append(item)
        await asyncio.gather(*(self._run_room(room, items) for room, items in by_room.items()))

    async def _run_room(self, room_id: str, items: list[InboxEvent]) -> None:
        async with self._room_locks.hold(room_id):
            for item in items:
                async with self._slots:
                    await self._run_one(item)

    async def _run_one(self, item: InboxEvent) -> None:
        event_type = str(item.event.get("type", "?"))
        try:
            event = Event.deserialize(item.event)
        except Exception as exc:
            log.warning("Unreadable event %s: %s", item.event_id, exc)
            self.metrics.events.labels(event_type, "failed").inc()
            await self.inbox.mark(item.event_id, "failed", f"unreadable: {exc}")
            return
        if isinstance(event, StateEvent):
            await self.state_store.update_state(event)
        if self.is_own(str(event.sender)):
            self.metrics.events.labels(event_type, "dropped_echo").inc()
            await self.inbox.mark(item.event_id, "done")
            return
        try:
            async with self.db.transaction():
                for handler in self.handlers:
                    await handler.handle(event)
                await self.inbox.mark(item.event_id, "done")
        except Exception as exc:
            log.exception("Handling %s %s in %s failed", event_type, item.event_id, item.room_id)
            self.metrics.events.labels(event_type, "failed").inc()
            await self.inbox.mark(item.event_id, "failed", f"{type(exc).__name__}: {exc}"[:500])
            return
        self.metrics.events.labels(event_type, "handled").inc()
