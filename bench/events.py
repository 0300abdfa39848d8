"""`python -m bench events`: outbox commit -> JetStream PubAck, against plain JetStream publishes.

On one local stack, interleaved, N times:
- ours:  commit a transaction that emits one event through the outbox; time until the relay has the
         PubAck for it (woken by the commit's NOTIFY, read from PostgreSQL, published, acknowledged);
- plain: one nats-py JetStream publish of a same-sized message, awaited (the floor).
Then a burst: B events committed in one transaction until the relay has published the last, against B
plain publishes awaited one after another (events per second).
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import nats
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appservice.app import Platform
from appservice.stack.local import LocalStack, StackOptions
from core.events import EventEnvelope
from core.signing import sign

from .report import table
from .stats import Ratio, Summary

EVENT_TYPE = "bench.ping"


@dataclass(frozen=True)
class EventsOptions:
    runs: int = 200
    warmup: int = 20
    burst: int = 500
    timeout_s: float = 10.0


@dataclass
class EventsResult:
    options: EventsOptions
    ours_ms: list[float] = field(default_factory=list)
    plain_ms: list[float] = field(default_factory=list)
    burst_ours_s: float | None = None
    burst_plain_s: float | None = None
    burst_pipelined_s: float | None = None  # the same burst with every publish in flight at once
    burst_signed_s: float | None = None  # the same, each message signed as our bus requires

    @property
    def burst_over_pipelined(self) -> float | None:
        """Our burst rate as a share of pipelined raw JetStream publishing (goal: >= 0.8)."""
        if self.burst_ours_s and self.burst_pipelined_s:
            return self.burst_pipelined_s / self.burst_ours_s
        return None

    def as_text(self) -> str:
        ours, plain = Summary.of(self.ours_ms), Summary.of(self.plain_ms)
        text = table(
            f"Event publishing on one local stack: {self.options.runs} interleaved iterations "
            f"after {self.options.warmup} warm-up, times in ms",
            [
                ("ours", "outbox commit -> PubAck", ours),
                ("plain", "nats-py JetStream publish", plain),
            ],
            {"ours/plain": Ratio.of(ours, plain)},
        )
        if self.burst_ours_s and self.burst_plain_s:
            n = self.options.burst
            text += (
                f"\n\nburst of {n}: outbox {n / self.burst_ours_s:,.0f} events/s "
                f"({self.burst_ours_s * 1000:.0f} ms), plain sequential publishes "
                f"{n / self.burst_plain_s:,.0f} msg/s ({self.burst_plain_s * 1000:.0f} ms), "
                f"ratio {self.burst_ours_s / self.burst_plain_s:.2f}x"
            )
        if self.burst_pipelined_s and self.burst_over_pipelined:
            n = self.options.burst
            text += (
                f"\npipelined raw publishes (all {n} in flight): "
                f"{n / self.burst_pipelined_s:,.0f} msg/s; outbox rate / pipelined rate "
                f"{self.burst_over_pipelined:.2f}x"
            )
        if self.burst_signed_s and self.burst_ours_s:
            n = self.options.burst
            text += (
                f"\npipelined raw publishes, each signed (Ed25519, as the bus requires): "
                f"{n / self.burst_signed_s:,.0f} msg/s; outbox rate / that "
                f"{self.burst_signed_s / self.burst_ours_s:.2f}x"
            )
        return text

    def as_json(self) -> dict[str, object]:
        return {
            "benchmark": "events",
            "burst": self.options.burst,
            "ours_ms": (s.as_dict() if (s := Summary.of(self.ours_ms)) else None),
            "plain_ms": (s.as_dict() if (s := Summary.of(self.plain_ms)) else None),
            "burst_ours_s": self.burst_ours_s,
            "burst_plain_s": self.burst_plain_s,
            "burst_pipelined_s": self.burst_pipelined_s,
            "burst_over_pipelined": self.burst_over_pipelined,
            "burst_signed_s": self.burst_signed_s,
        }


class AckWatcher:
    """Resolves a future when the relay reports the PubAck of an event id."""

    def __init__(self, platform: Platform) -> None:
        self.waiting: dict[uuid.UUID, asyncio.Future[float]] = {}
        platform.event_bus.relay.on_published = self._published

    def _published(self, event_id: uuid.UUID) -> None:
        future = self.waiting.pop(event_id, None)
        if future is not None and not future.done():
            future.set_result(time.perf_counter())

    def expect(self, event_id: uuid.UUID) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[event_id] = future
        return future


async def _ours(platform: Platform, watcher: AckWatcher, timeout: float) -> float:
    envelope = EventEnvelope(type=EVENT_TYPE, territory=platform.territory, data={"n": 0})
    acked = watcher.expect(envelope.id)
    async with platform.territory_db.transaction():
        await platform.outbox.add(
            envelope.id, envelope.subject, envelope.type, envelope.to_json().decode()
        )
        committing = time.perf_counter()  # the relay may see the commit before we resume
    return (await asyncio.wait_for(acked, timeout) - committing) * 1000


async def _plain(js: nats.js.JetStreamContext, subject: str, payload: bytes) -> float:
    started = time.perf_counter()
    await js.publish(subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
    return (time.perf_counter() - started) * 1000


async def _burst(platform: Platform, watcher: AckWatcher, count: int, timeout: float) -> float:
    envelopes = [
        EventEnvelope(type=EVENT_TYPE, territory=platform.territory, data={"n": i})
        for i in range(count)
    ]
    last = watcher.expect(envelopes[-1].id)
    async with platform.territory_db.transaction():
        for envelope in envelopes:
            await platform.outbox.add(
                envelope.id, envelope.subject, envelope.type, envelope.to_json().decode()
            )
        committing = time.perf_counter()
    return await asyncio.wait_for(last, timeout * 10) - committing


async def run(options: EventsOptions) -> EventsResult:
    result = EventsResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        stack = LocalStack(StackOptions(data_dir=Path(tmp), fast=True))
        await stack.start()
        try:
            platform = stack.platform
            assert platform is not None
            await asyncio.wait_for(platform.event_bus.stream_ready.wait(), 30)
            watcher = AckWatcher(platform)
            client = await nats.connect(
                stack.nats.url, **stack.nats.credentials(stack.options.territory)
            )
            try:
                js = client.jetstream()
                sample = EventEnvelope(type=EVENT_TYPE, territory=platform.territory, data={"n": 0})
                payload = sample.to_json()
                for i in range(options.warmup + options.runs):
                    ours = await _ours(platform, watcher, options.timeout_s)
                    plain = await _plain(js, sample.subject, payload)
                    if i >= options.warmup:
                        result.ours_ms.append(ours)
                        result.plain_ms.append(plain)
                result.burst_ours_s = await _burst(
                    platform, watcher, options.burst, options.timeout_s
                )
                started = time.perf_counter()
                for _ in range(options.burst):
                    await js.publish(
                        sample.subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())}
                    )
                result.burst_plain_s = time.perf_counter() - started
                started = time.perf_counter()
                acks = [
                    await js.publish_async(
                        sample.subject, payload, headers={"Nats-Msg-Id": str(uuid.uuid4())}
                    )
                    for _ in range(options.burst)
                ]
                await asyncio.gather(*acks)
                result.burst_pipelined_s = time.perf_counter() - started
                key = Ed25519PrivateKey.generate()
                started = time.perf_counter()
                acks = [
                    await js.publish_async(
                        sample.subject,
                        payload,
                        headers={
                            "Nats-Msg-Id": str(uuid.uuid4()),
                            "Unityplan-Signature": sign(key, sample.subject, payload),
                        },
                    )
                    for _ in range(options.burst)
                ]
                await asyncio.gather(*acks)
                result.burst_signed_s = time.perf_counter() - started
            finally:
                await client.close()
        finally:
            await stack.stop()
    return result
