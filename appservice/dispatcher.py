"""From recorded transaction events to handlers: drop our own echoes, keep each room in order.

A room's consecutive events (split at state events, which change how later events are judged)
are handled in one transaction of the territory database together with marking them handled in
the inbox, so a handler's database effects (and the Matrix effects it queued) and "handled"
commit together, or none of them: one commit for a batch the homeserver pushed. When an event's
handling raises, the batch runs again with a savepoint per event, so that event alone is rolled
back and retried with backoff (by the sweeper and by the homeserver's retry of its transaction);
after ``max_attempts`` it is dead-lettered, and handlers that answer people say so (with a
reference number). The other events go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from mautrix.types import Event, StateEvent

from core.effects import caused_by
from core.ids import Namespace
from core.matrix import CachedStateStore
from core.tracing import span
from db.cache import KeyedLocks
from db.database import Database
from db.repositories.transactions import InboxEvent, TransactionRepository

from .metrics import Metrics

if TYPE_CHECKING:
    from .encrypted_events import EncryptedEvents

log = logging.getLogger("unityplan.dispatcher")


class _EventFailed(Exception):
    """A batch run without savepoints cannot commit as it is: an event's handlers raised
    (``error``), or an event was settled meanwhile by a concurrent retry (``error`` is None)."""

    def __init__(self, error: Exception | None) -> None:
        super().__init__(str(error) if error else "settled meanwhile")
        self.error = error


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
        max_attempts: int = 5,
        retry_base_seconds: float = 0.5,
        encrypted: EncryptedEvents | None = None,
    ) -> None:
        self.encrypted = encrypted
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
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
        async with self._room_locks.hold(room_id), self._slots:
            batch: list[tuple[InboxEvent, Event | None]] = []
            for item in items:
                if _is_state(item) and batch:
                    # A state event changes what later events are judged by (members, power
                    # levels): the events before it are handled first.
                    await self._handle_batch(batch)
                    batch = []
                prepared = await self._prepare(item)
                if prepared is not None:
                    batch.append(prepared)
            if batch:
                await self._handle_batch(batch)

    async def _prepare(self, item: InboxEvent) -> tuple[InboxEvent, Event | None] | None:
        """What to handle for an inbox event, outside any transaction: the event (decrypted), or
        None for our own echo (only marked done); None when it is settled or waits."""
        event_type = str(item.event.get("type", "?"))
        try:
            event = Event.deserialize(item.event)
        except Exception as exc:
            log.warning("Unreadable event %s: %s", item.event_id, exc)
            self.metrics.events.labels(_kind(event_type), "dead").inc()
            await self.inbox.give_up(item.event_id, item.attempts + 1, f"unreadable: {exc}")
            return None
        if isinstance(event, StateEvent):
            await self.state_store.update_state(event)
            if self.encrypted is not None:
                await self.encrypted.member_changed(event)
        if self.is_own(str(event.sender)):
            self.metrics.events.labels(_kind(event_type), "dropped_echo").inc()
            return item, None
        if self.encrypted is not None:
            # Outside the handling transaction: decryption may ask the homeserver for keys.
            decrypted = await self.encrypted.decrypt(item, event)
            if decrypted is None:
                self.metrics.events.labels(_kind(event_type), "waiting").inc()
                return None
            event = decrypted
        return item, event

    async def _handle_batch(
        self, batch: list[tuple[InboxEvent, Event | None]], *, savepoints: bool = False
    ) -> None:
        """One room's consecutive events in one database transaction.

        First without savepoints (one commit, nothing more, for a batch that goes well). When an
        event's handlers raise, that attempt is rolled back whole and the batch runs again with a
        savepoint per event: the failing event is rolled back alone and retried (or given up)
        after the commit, the others commit together. A batch of one needs no second run: its
        rollback already isolates it. Should the batch itself fail (the commit, or a lost
        connection), each event is handled again alone.
        """
        failed: list[tuple[InboxEvent, Event, Exception]] = []
        handled: list[str] = []
        try:
            async with self.db.transaction():
                done = [item.event_id for item, event in batch if event is None]  # our echoes
                to_handle = [(item, event) for item, event in batch if event is not None]
                # With savepoints the rows are locked first, and events settled meanwhile (by a
                # concurrent retry of the same events) are skipped. Without, that is checked at
                # the end, where marking them done must find every one still unsettled.
                claimed = (
                    await self.inbox.claim_many([item.event_id for item, _ in to_handle])
                    if savepoints
                    else {item.event_id for item, _ in to_handle}
                )
                for item, event in to_handle:
                    if item.event_id not in claimed:
                        continue  # settled meanwhile (a concurrent retry of the same event)
                    error = await self._handle_event(item, event, savepoint=savepoints)
                    if error is None:
                        done.append(item.event_id)
                        handled.append(str(item.event.get("type", "?")))
                    else:
                        failed.append((item, event, error))
                marked = await self.inbox.mark_done(done)
                if not savepoints and marked != len(done):
                    raise _EventFailed(None)
        except _EventFailed as failure:
            only, only_event = batch[0]
            if len(batch) == 1 and failure.error is not None and only_event is not None:
                await self._failed(only, only_event, failure.error)
            else:
                await self._handle_batch(batch, savepoints=True)
            return
        except Exception as exc:
            if len(batch) == 1:
                only, only_event = batch[0]
                if only_event is not None:
                    await self._failed(only, only_event, exc)
                return
            log.warning("A batch of %d events could not commit (%s); one by one", len(batch), exc)
            for single in batch:
                await self._handle_batch([single])
            return
        for event_type in handled:
            self.metrics.events.labels(_kind(event_type), "handled").inc()
        for item, event, error in failed:
            await self._failed(item, event, error)

    async def _handle_event(
        self, item: InboxEvent, event: Event, *, savepoint: bool
    ) -> Exception | None:
        """Run the handlers on one event inside the batch's transaction. In a savepoint: its
        error, if any, with its work rolled back. Without: ``_EventFailed`` for the batch."""
        with (
            span(
                "matrix.event",
                attributes={
                    "matrix.event_id": item.event_id,
                    "matrix.event_type": str(item.event.get("type", "?")),
                    "matrix.room_id": item.room_id,
                },
            ),
            caused_by(f"event:{item.event_id}"),
        ):
            try:
                async with self.db.transaction() if savepoint else contextlib.nullcontext():
                    for handler in self.handlers:
                        await handler.handle(event)
            except Exception as exc:
                if not savepoint:
                    raise _EventFailed(exc) from exc
                return exc
        return None

    async def _failed(self, item: InboxEvent, event: Event, exc: Exception) -> None:
        """Everything the handlers did was rolled back: retry later, or give up and say so."""
        event_type = _kind(str(item.event.get("type", "?")))
        attempts = item.attempts + 1
        reason = f"{type(exc).__name__}: {exc}"
        if attempts < self.max_attempts:
            delay = self.retry_delay(attempts)
            log.warning(
                "Handling %s %s in %s failed (attempt %d, retry in %.1f s): %s",
                event_type,
                item.event_id,
                item.room_id,
                attempts,
                delay,
                reason,
                exc_info=attempts == 1,
            )
            self.metrics.events.labels(event_type, "retried").inc()
            await self.inbox.retry_later(item.event_id, attempts, delay, reason)
            return
        ref = secrets.token_hex(3).upper()
        log.error(
            "Handling %s %s in %s failed %d times; giving up (ref %s)",
            event_type,
            item.event_id,
            item.room_id,
            attempts,
            ref,
            exc_info=exc,
        )
        self.metrics.events.labels(event_type, "dead").inc()
        async with self.db.transaction():
            await self.inbox.give_up(item.event_id, attempts, f"{reason} (ref {ref})")
            for handler in self.handlers:
                given_up = getattr(handler, "given_up", None)
                if given_up is not None:
                    await given_up(event, ref)

    def retry_delay(self, attempts: int) -> float:
        return float(min(self.retry_base_seconds * 2 ** (attempts - 1), 60.0))

    async def sweep(self, *, idle_seconds: float = 1.0) -> None:
        """Retry failed events when they come due (a background loop)."""
        while True:
            try:
                due = await self.inbox.pending()
                if due:
                    await self.dispatch(due)
                wait = await self.inbox.next_retry_in()
            except Exception as exc:
                log.warning("The inbox sweeper could not run (%s); trying again", exc)
                wait = None
            await asyncio.sleep(min(wait if wait is not None else idle_seconds, idle_seconds))


# Event types are chosen by senders: metrics label them from a fixed set.
_KNOWN_TYPES = frozenset(
    {
        "m.room.message",
        "m.room.member",
        "m.room.redaction",
        "m.reaction",
        "m.room.tombstone",
        "m.room.power_levels",
        "m.room.join_rules",
        "m.room.create",
        "m.room.name",
        "m.room.topic",
        "m.room.encrypted",
    }
)


def _is_state(item: InboxEvent) -> bool:
    return "state_key" in item.event


def _kind(event_type: str) -> str:
    return event_type if event_type in _KNOWN_TYPES else "other"
