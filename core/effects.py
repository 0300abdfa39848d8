"""Effects: what a handler wants done in Matrix leaves only after its database transaction commits.

A handler records effects (send, notice, DM, invite, kick, state, …) in the durable queue inside its
own transaction (``Effects``); nothing talks to the homeserver while the transaction is open. After
commit the ``EffectSender`` delivers them, in order per room, each with a transaction id derived from
the event that caused it, so a retry (after a 502, a timeout or a crash) never sends twice: Synapse
answers a repeated ``PUT …/send/{type}/{txnId}`` with the first event. Transient failures (429, 5xx,
timeouts, connection errors) are retried with exponential backoff; effects that cannot succeed (403,
a room that is gone) are dead-lettered with their reason, and the room's later effects go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from mautrix.errors import IntentError, MatrixRequestError
from mautrix.types import (
    EventID,
    EventType,
    Format,
    MessageType,
    PowerLevelStateEventContent,
    RoomID,
    TextMessageEventContent,
    UserID,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from db.repositories.effects import EffectRepository, EffectRow

from .background import BackgroundTasks, wait_until_set
from .html import html_to_text
from .matrix import DirectMessenger, MatrixConnection
from .tracing import TRACE_KEY, current_context, span

log = logging.getLogger("unityplan.effects")

# The cause of the effects recorded now (an inbox event, a bus event, an API request) and how many
# it recorded so far: together they make each effect's transaction id.
_cause: ContextVar[tuple[str, list[int]] | None] = ContextVar(
    "unityplan_effect_cause", default=None
)

Executor = Callable[[EffectRow], Awaitable[dict[str, Any] | None]]


@contextmanager
def caused_by(cause: str) -> Iterator[None]:
    """Effects recorded inside get transaction ids derived from ``cause`` and their order."""
    token = _cause.set((cause, [0]))
    try:
        yield
    finally:
        _cause.reset(token)


def _next_txn_id() -> tuple[str, str | None]:
    current = _cause.get()
    if current is None:
        return f"up{uuid.uuid4().hex}", None
    cause, counter = current
    n = counter[0]
    counter[0] += 1
    digest = hashlib.sha256(f"{cause}\n{n}".encode()).hexdigest()[:40]
    return f"up{digest}", cause


class PermanentFailure(Exception):
    """An executor's verdict that its effect can never succeed (dead-letter it with this reason)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 12
    base_seconds: float = 0.5
    max_seconds: float = 60.0
    timeout_seconds: float = 30.0

    def delay(self, attempts: int) -> float:
        return float(min(self.base_seconds * 2 ** max(attempts - 1, 0), self.max_seconds))


class Effects:
    """Records effects in the caller's transaction; they leave after it commits."""

    def __init__(self, repo: EffectRepository) -> None:
        self.repo = repo
        self._wake: Callable[[], None] = lambda: None
        self._finished: dict[str, asyncio.Event] = {}

    def on_commit(self, wake: Callable[[], None]) -> None:
        self._wake = wake

    async def record(self, kind: str, payload: dict[str, Any], *, room_key: str) -> str:
        txn_id, cause = _next_txn_id()
        trace = current_context()
        if trace:  # the delivery, later, continues the trace of what queued it
            payload = {**payload, TRACE_KEY: trace}
        await self.repo.add(
            txn_id=txn_id, room_key=room_key, kind=kind, payload=payload, cause=cause
        )
        self.repo.db.after_commit(self._wake)
        return txn_id

    # --- waiting for one (for HTTP answers that must carry a result) -------------------------

    def finished(self, txn_id: str) -> None:
        event = self._finished.get(txn_id)
        if event is not None:
            event.set()

    async def result(self, txn_id: str, timeout: float = 10.0) -> dict[str, Any] | None:
        """The effect's result once delivered (None if not within ``timeout`` or it had none)."""
        event = self._finished.setdefault(txn_id, asyncio.Event())
        deadline = time.monotonic() + timeout
        try:
            while True:
                found = await self.repo.result_of(txn_id)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return found
                # Woken by this process's sender; polled too, for a sender in another process.
                await wait_until_set(event, min(left, 0.25))
        finally:
            self._finished.pop(txn_id, None)

    # --- Matrix effects -----------------------------------------------------------------------

    async def send(
        self,
        room_id: str,
        content: dict[str, Any],
        *,
        event_type: str = "m.room.message",
        sender: str | None = None,
    ) -> str:
        return await self.record(
            "matrix.send",
            {"room_id": room_id, "type": event_type, "content": content, "sender": sender},
            room_key=room_id,
        )

    async def notice(self, room_id: str, html: str, *, reply_to: str | None = None) -> str:
        content = notice_content(html)
        if reply_to:
            content["m.relates_to"] = {"m.in_reply_to": {"event_id": reply_to}}
        return await self.send(room_id, content)

    async def dm(self, user_id: str, html: str) -> str:
        """A notice in the user's DM room with the bot (created when needed)."""
        return await self.record(
            "matrix.dm", {"user_id": user_id, "html": html}, room_key=f"dm:{user_id}"
        )

    async def membership(
        self, action: str, room_id: str, user_id: str, reason: str | None = None
    ) -> str:
        """``invite``, ``kick``, ``ban`` or ``unban`` ``user_id`` by the bot."""
        if action not in ("invite", "kick", "ban", "unban"):
            raise ValueError(f"unknown membership action {action!r}")
        return await self.record(
            f"matrix.{action}",
            {"room_id": room_id, "user_id": user_id, "reason": reason},
            room_key=room_id,
        )

    async def join(self, room_id: str) -> str:
        return await self.record("matrix.join", {"room_id": room_id}, room_key=room_id)

    async def leave(self, room_id: str, reason: str | None = None) -> str:
        return await self.record(
            "matrix.leave", {"room_id": room_id, "reason": reason}, room_key=room_id
        )

    async def state(
        self, room_id: str, event_type: str, content: dict[str, Any], state_key: str = ""
    ) -> str:
        return await self.record(
            "matrix.state",
            {"room_id": room_id, "type": event_type, "content": content, "state_key": state_key},
            room_key=room_id,
        )

    async def power_levels(self, room_id: str, changes: dict[str, Any]) -> str:
        """Set top-level power-level keys (e.g. ``events_default``) on the room's current levels."""
        return await self.record(
            "matrix.power_levels", {"room_id": room_id, "changes": changes}, room_key=room_id
        )

    async def redact(
        self, room_id: str, event_id: str, *, sender: str | None = None, reason: str | None = None
    ) -> str:
        return await self.record(
            "matrix.redact",
            {"room_id": room_id, "event_id": event_id, "sender": sender, "reason": reason},
            room_key=room_id,
        )


def notice_content(html: str) -> dict[str, Any]:
    content: dict[str, Any] = TextMessageEventContent(
        msgtype=MessageType.NOTICE, body=html_to_text(html), format=Format.HTML, formatted_body=html
    ).serialize()
    return content


# --- delivery ---------------------------------------------------------------------------------


class EffectMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.delivered = Counter(
            "unityplan_effects_total",
            "Effects by kind and outcome (done, retried, dead)",
            ["kind", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "unityplan_effect_delay_seconds",
            "From an effect's commit to its delivery",
            registry=registry,
        )
        self.state = Gauge(
            "unityplan_effect_queue", "Effects in the queue by state", ["state"], registry=registry
        )


MEMBERSHIP_DONE = {
    # The homeserver says the effect has happened already: nothing to do.
    "invite": ("is already in the room", "already joined", "already in the room"),
    "kick": ("not in the room", "not joined"),
    "unban": ("not banned",),
}


class EffectSender:
    """Delivers committed effects: rooms concurrently, each room's effects in order."""

    KNOWN_KINDS = (
        "send",
        "dm",
        "invite",
        "kick",
        "ban",
        "unban",
        "join",
        "leave",
        "state",
        "power_levels",
        "redact",
    )

    def __init__(
        self,
        repo: EffectRepository,
        effects: Effects,
        matrix: MatrixConnection,
        messenger: DirectMessenger,
        metrics: EffectMetrics,
        *,
        policy: RetryPolicy | None = None,
        concurrency: int = 16,
    ) -> None:
        self.repo = repo
        self.effects = effects
        self.matrix = matrix
        self.messenger = messenger
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self._executors: dict[str, Executor] = {
            f"matrix.{kind}": getattr(self, f"_{kind}") for kind in self.KNOWN_KINDS
        }
        self._wake = asyncio.Event()
        self._active: set[str] = set()
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks = BackgroundTasks()
        effects.on_commit(self.wake)

    def register(self, kind: str, executor: Executor) -> None:
        if kind in self._executors:
            raise ValueError(f"effect kind {kind!r} registered twice")
        self._executors[kind] = executor

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, poll_seconds: float = 1.0) -> None:
        """The delivery loop (one per process): wakes on commit, polls for retries that come due."""
        while True:
            self._wake.clear()
            try:
                rooms = await self.repo.due_rooms(200)
            except Exception as exc:  # the database is down: wait, never lose the queue
                log.warning("Cannot read the effects queue (%s); retrying", exc)
                await asyncio.sleep(poll_seconds)
                continue
            for room in rooms:
                if room not in self._active:
                    self._active.add(room)
                    self._tasks.start(self._drain(room), name=f"effects:{room}")
            await wait_until_set(self._wake, poll_seconds)

    async def stop(self) -> None:
        await self._tasks.stop()

    async def _drain(self, room_key: str) -> None:
        try:
            while True:
                batch = await self.repo.pending_of_room(room_key, 50)
                if not batch:
                    return
                for effect in batch:
                    if not await self._deliver(effect):
                        return  # retried later: the room's later effects wait behind it
        except Exception:
            log.exception("Delivering the effects of %s failed", room_key)
        finally:
            self._active.discard(room_key)
            self.wake()  # more may have arrived meanwhile

    async def _deliver(self, effect: EffectRow) -> bool:
        """True when the effect is settled (done or dead), False when it waits for a retry."""
        if effect.next_attempt_at.timestamp() > time.time() + 0.001:
            return False
        executor = self._executors.get(effect.kind)
        try:
            if executor is None:
                raise PermanentFailure(f"no executor for effect kind {effect.kind!r}")
            async with self._slots:
                with span(f"effect {effect.kind}", parent=effect.payload.get(TRACE_KEY)):
                    result = await asyncio.wait_for(executor(effect), self.policy.timeout_seconds)
        except Exception as exc:
            permanent = _is_permanent(exc)
            reason = f"{type(exc).__name__}: {exc}"
            if permanent or effect.attempts + 1 >= self.policy.max_attempts:
                log.warning("Effect %d (%s) dead-lettered: %s", effect.id, effect.kind, reason)
                await self.repo.dead(effect.id, reason)
                self.metrics.delivered.labels(effect.kind, "dead").inc()
                self.effects.finished(effect.txn_id)
                return True
            delay = _retry_after(exc) or self.policy.delay(effect.attempts + 1)
            log.info(
                "Effect %d (%s) failed (%s); retry %d in %.1f s",
                effect.id,
                effect.kind,
                reason,
                effect.attempts + 1,
                delay,
            )
            await self.repo.retry_later(effect.id, delay, reason)
            self.metrics.delivered.labels(effect.kind, "retried").inc()
            return False
        await self.repo.done(effect.id, result)
        self.metrics.delivered.labels(effect.kind, "done").inc()
        self.metrics.latency.observe(max(time.time() - effect.created_at.timestamp(), 0.0))
        self.effects.finished(effect.txn_id)
        return True

    async def refresh_gauges(self) -> None:
        counts = await self.repo.counts()
        for state in ("pending", "done", "dead"):
            self.metrics.state.labels(state).set(counts.get(state, 0))

    # --- executors of the matrix.* kinds ------------------------------------------------------

    def _intent(self, sender: str | None) -> Any:
        return self.matrix.ghost(UserID(sender)) if sender else self.matrix.bot

    async def _send(self, effect: EffectRow) -> dict[str, Any]:
        p = effect.payload
        if p.get("sender"):
            await self._intent(p["sender"]).ensure_registered()
        event_id = await self.matrix.send_message_event(
            p["room_id"],
            EventType.find(p["type"], EventType.Class.MESSAGE),
            p["content"],
            txn_id=effect.txn_id,
            sender=p.get("sender"),
        )
        return {"event_id": str(event_id)}

    async def _dm(self, effect: EffectRow) -> dict[str, Any]:
        room_id = await self.messenger.send(
            effect.payload["user_id"], effect.payload["html"], txn_id=effect.txn_id
        )
        return {"room_id": str(room_id)}

    async def _membership(self, effect: EffectRow, action: str) -> None:
        p = effect.payload
        room, user, reason = RoomID(p["room_id"]), UserID(p["user_id"]), p.get("reason")
        bot = self.matrix.bot
        try:
            if action == "invite":
                await bot.invite_user(room, user, reason=reason)
            elif action == "kick":
                await bot.kick_user(room, user, reason=reason or "")
            elif action == "ban":
                await bot.ban_user(room, user, reason=reason or "")
            else:
                await bot.unban_user(room, user, reason=reason or "")
        except MatrixRequestError as exc:
            message = (exc.message or "").lower()
            if any(hint in message for hint in MEMBERSHIP_DONE.get(action, ())):
                return
            raise

    async def _invite(self, effect: EffectRow) -> None:
        await self._membership(effect, "invite")

    async def _kick(self, effect: EffectRow) -> None:
        await self._membership(effect, "kick")

    async def _ban(self, effect: EffectRow) -> None:
        await self._membership(effect, "ban")

    async def _unban(self, effect: EffectRow) -> None:
        await self._membership(effect, "unban")

    async def _join(self, effect: EffectRow) -> None:
        await self.matrix.bot.join_room_by_id(RoomID(effect.payload["room_id"]))

    async def _leave(self, effect: EffectRow) -> None:
        await self.matrix.bot.leave_room(
            RoomID(effect.payload["room_id"]), reason=effect.payload.get("reason")
        )

    async def _state(self, effect: EffectRow) -> dict[str, Any]:
        p = effect.payload
        event_id = await self.matrix.bot.send_state_event(
            RoomID(p["room_id"]),
            EventType.find(p["type"], EventType.Class.STATE),
            p["content"],
            state_key=p.get("state_key", ""),
        )
        return {"event_id": str(event_id)}

    async def _power_levels(self, effect: EffectRow) -> None:
        room = RoomID(effect.payload["room_id"])
        levels: PowerLevelStateEventContent = await self.matrix.bot.get_power_levels(
            room, ignore_cache=True
        )
        for key, value in effect.payload["changes"].items():
            setattr(levels, key, value)
        await self.matrix.bot.set_power_levels(room, levels)

    async def _redact(self, effect: EffectRow) -> None:
        p = effect.payload
        await self._intent(p.get("sender")).redact(
            RoomID(p["room_id"]), EventID(p["event_id"]), reason=p.get("reason")
        )


def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, PermanentFailure):
        return True
    if isinstance(exc, IntentError) and exc.__cause__ is not None:
        return _is_permanent(exc.__cause__)  # mautrix wraps the homeserver's answer
    if isinstance(exc, MatrixRequestError):
        status = getattr(exc, "http_status", 0) or 0
        return 400 <= status < 500 and status not in (408, 429)
    return False


def _retry_after(exc: BaseException) -> float | None:
    if isinstance(exc, MatrixRequestError) and getattr(exc, "http_status", 0) == 429:
        data = getattr(exc, "data", None)
        retry_ms = data.get("retry_after_ms") if isinstance(data, dict) else None
        if isinstance(retry_ms, int | float):
            return max(float(retry_ms) / 1000, 0.1)
    return None
