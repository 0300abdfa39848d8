"""`python -m bench backlog`: a backlog drained after an outage, against the echo appservice.

On one local stack, for each bot in turn:
- ours:  UnityPlan's appservice is stopped; alice sends N messages into a forum topic room (the
         homeserver cannot deliver them and queues them); the appservice is started again; time from
         its start until all N are comments in the database (each handled and committed);
- floor: the minimal echo appservice is stopped; alice sends N messages into her room with it; it is
         started and pings the homeserver; time until it has received all N.

A started appservice pings the homeserver, which makes it retry its queued transactions at once
(up to 100 events each, one transaction at a time): both drains begin the same way.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from nio import RoomSendResponse
from prometheus_client import Counter, Histogram

from .environment import Environment, running_environment
from .forum import _comment_count, _setup
from .roundtrip import progress
from .synced_user import SyncedUser

POLL_S = 0.01
SENDERS = 8  # messages sent side by side while the bot is away


@dataclass(frozen=True)
class BacklogOptions:
    messages: int = 1000
    timeout_s: float = 300.0


@dataclass
class BacklogResult:
    options: BacklogOptions
    ours_s: float | None = None
    ours_start_s: float | None = None  # of it: Platform.start() until it listens and was pinged
    ours_transactions: int = 0  # the homeserver's transactions that carried the backlog
    ours_handling_s: float = 0.0  # of it: the time our appservice spent answering them
    floor_s: float | None = None
    floor_transactions: int = 0
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        return self.ours_s / self.floor_s if self.ours_s and self.floor_s else None

    def as_text(self) -> str:
        n = self.options.messages
        lines = [f"Backlog of {n} room messages drained after an outage, on one local stack"]
        if self.ours_s is not None:
            lines.append(
                f"ours   until all are comments      {self.ours_s * 1000:8.0f} ms "
                f"({n / self.ours_s:,.0f} events/s; start-up {self.ours_start_s or 0:.2f} s; "
                f"{self.ours_transactions} transactions, "
                f"{self.ours_handling_s * 1000 / max(self.ours_transactions, 1):.1f} ms each to "
                "answer)"
            )
        if self.floor_s is not None:
            lines.append(
                f"floor  echo appservice received all {self.floor_s * 1000:8.0f} ms "
                f"({n / self.floor_s:,.0f} events/s; {self.floor_transactions} transactions)"
            )
        if self.ratio is not None:
            lines.append(f"\nours/floor  {self.ratio:.2f}x")
        if self.error:
            lines.append(f"\nFAILED: {self.error}")
        return "\n".join(lines)

    def as_json(self) -> dict[str, object]:
        return {
            "benchmark": "backlog",
            "messages": self.options.messages,
            "ours_s": self.ours_s,
            "ours_start_s": self.ours_start_s,
            "ours_transactions": self.ours_transactions,
            "ours_handling_s": self.ours_handling_s,
            "floor_s": self.floor_s,
            "floor_transactions": self.floor_transactions,
            "ratio": self.ratio,
            "error": self.error,
        }


async def _send_many(sender: SyncedUser, room_id: str, count: int) -> None:
    numbers = iter(range(count))

    async def worker() -> None:
        for n in numbers:
            sent = await sender.client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": f"backlog {n}"}
            )
            if not isinstance(sent, RoomSendResponse):
                raise RuntimeError(f"sending backlog message {n} failed: {sent}")

    await asyncio.gather(*(worker() for _ in range(SENDERS)))


async def _wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> float:
    """Poll ``predicate`` until true; the time it became so."""
    deadline = time.perf_counter() + timeout_s
    while not await predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{what} not within {timeout_s:g} s")
        await asyncio.sleep(POLL_S)
    return time.perf_counter()


def _total(metric: Counter | Histogram, suffix: str) -> float:
    """A Prometheus metric's samples ending in ``suffix`` (``_total``, ``_sum``) over its labels."""
    return sum(
        sample.value
        for family in metric.collect()
        for sample in family.samples
        if sample.name.endswith(suffix)
    )


async def _ours(
    env: Environment, session: aiohttp.ClientSession, options: BacklogOptions, result: BacklogResult
) -> float:
    topic = await _setup(env, session)
    assert env.stack.platform is not None
    before = await _comment_count(env.stack.platform, topic.topic_id)
    await env.stack.stop_platform()
    progress(f"ours: the appservice is stopped; sending {options.messages} messages...")
    await _send_many(env.alice, topic.room_id, options.messages)
    started = time.perf_counter()
    platform = await env.stack.start_platform()
    result.ours_start_s = time.perf_counter() - started

    async def drained() -> bool:
        return await _comment_count(platform, topic.topic_id) - before >= options.messages

    done = await _wait_for(drained, options.timeout_s, "ours: all comments") - started
    result.ours_transactions = int(_total(platform.metrics.transactions, "_total"))
    result.ours_handling_s = _total(platform.metrics.transaction_seconds, "_sum")
    return done


async def _floor(env: Environment, options: BacklogOptions, result: BacklogResult) -> float:
    echo, room = env.echo, env.echo_room
    before = echo.messages[room]
    transactions_before = echo.transactions
    await echo.stop()
    progress(f"floor: the echo appservice is stopped; sending {options.messages} messages...")
    await _send_many(env.alice, room, options.messages)
    started = time.perf_counter()
    await echo.start()
    for attempt in range(5):  # Synapse may answer a ping 502 while it retries on its own
        try:
            await echo.ping_homeserver()
            break
        except RuntimeError:
            if attempt == 4:
                raise
            await asyncio.sleep(0.2)

    async def drained() -> bool:
        return echo.messages[room] - before >= options.messages

    done = await _wait_for(drained, options.timeout_s, "floor: all messages") - started
    result.floor_transactions = echo.transactions - transactions_before
    return done


async def run(options: BacklogOptions) -> BacklogResult:
    result = BacklogResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack and the echo appservice...")
        async with running_environment(Path(tmp)) as env, aiohttp.ClientSession() as session:
            try:
                result.floor_s = await _floor(env, options, result)
                result.ours_s = await _ours(env, session, options, result)
            except (TimeoutError, RuntimeError) as exc:
                result.error = str(exc)
            progress("Stopping the stack...")
    return result
