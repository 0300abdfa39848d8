"""The event spine against the real nats-server process and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType

from appservice.app import Platform
from appservice.stack.local import LocalStack
from bridges.events.consumers import ConsumerSettings, DurableConsumer
from bridges.events.stream import ensure_stream
from core.events import ConsumerSpec, EventEnvelope, event_subject
from core.ports import BadgeCheckError


@pytest_asyncio.fixture
async def effects(platform: Platform) -> Any:
    """A table the test consumers write their effects to, in the consumer's transaction."""
    await platform.territory_db.execute(
        "CREATE TABLE IF NOT EXISTS territory_dk.test_effects (consumer text, event_id uuid, n int)"
    )
    yield
    await platform.territory_db.execute("DROP TABLE IF EXISTS territory_dk.test_effects")


def _event_type(label: str) -> str:
    return f"spine.{label}_{uuid.uuid4().hex[:8]}"


async def _eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 60, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)


async def _stream_events(nc: Client, stream: str, subject: str) -> list[EventEnvelope]:
    """Every message the stream holds on ``subject``, in stream order."""
    js = nc.jetstream()
    subscription = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE, inactive_threshold=10
        ),
    )
    found: list[EventEnvelope] = []
    while True:
        try:
            batch = await subscription.fetch(500, timeout=1)
        except (NatsTimeoutError, TimeoutError):
            break
        found.extend(EventEnvelope.from_json(m.data) for m in batch)
    await subscription.unsubscribe()
    return found


async def _emit(platform: Platform, event_type: str, data: dict[str, Any]) -> EventEnvelope:
    async with platform.territory_db.transaction():
        return await platform.events.emit(event_type, data, actor="@tester:dk.localhost")


async def _backlog_empty(platform: Platform) -> bool:
    return await platform.outbox.backlog() == 0


async def _effect_count(platform: Platform, consumer: str) -> int:
    return await platform.territory_db.fetchval(
        "SELECT count(*) FROM territory_dk.test_effects WHERE consumer = $1", consumer
    )


def _consumer(
    platform: Platform,
    name: str,
    subject: str,
    handler: Callable[[EventEnvelope], Awaitable[None]],
    *,
    max_deliver: int = 5,
    ack_wait: float = 30,
) -> DurableConsumer:
    return DurableConsumer(
        ConsumerSpec(name=name, subjects=(subject,), handler=handler),
        ConsumerSettings(
            stream=platform.config.nats.stream, max_deliver=max_deliver, ack_wait=ack_wait
        ),
        nats=platform.nats,
        db=platform.territory_db,
        consumed=platform.consumed,
        publisher=platform.events,
        metrics=platform.event_metrics,
        trust=platform.bus_trust,
    )


def _recording_handler(platform: Platform, name: str) -> Callable[[EventEnvelope], Awaitable[None]]:
    async def record(envelope: EventEnvelope) -> None:
        await platform.territory_db.execute(
            "INSERT INTO territory_dk.test_effects (consumer, event_id, n) VALUES ($1, $2, $3)",
            name,
            envelope.id,
            envelope.data.get("n"),
        )

    return record


def _metric(platform: Platform, name: str, labels: dict[str, str]) -> float:
    return platform.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_envelope_is_published_on_its_subject(
    stack: LocalStack, platform: Platform, nc: Client
) -> None:
    event_type = _event_type("hello")
    sent = await _emit(platform, event_type, {"greeting": "hej"})
    await _eventually(lambda: _backlog_empty(platform), what="outbox drained")
    subject = event_subject("dk", event_type)
    assert subject == f"unityplan.dk.{event_type}"
    [received] = await _stream_events(nc, platform.config.nats.stream, subject)
    assert received == sent
    assert received.actor == "@tester:dk.localhost" and received.territory == "dk"


async def test_events_survive_a_nats_outage(
    stack: LocalStack, platform: Platform, nc: Client
) -> None:
    event_type = _event_type("outage")
    total, stop_after = 300, 80
    produced = asyncio.Event()
    count = 0

    async def produce() -> None:
        nonlocal count
        for i in range(total):
            await _emit(platform, event_type, {"n": i})
            count += 1
            if count == stop_after:
                produced.set()
            await asyncio.sleep(0.005)

    producer = asyncio.create_task(produce())
    await produced.wait()
    await stack.nats.stop()  # the server process goes away while events are being produced
    await asyncio.sleep(1.5)
    await stack.nats.start()
    await producer
    await _eventually(lambda: _backlog_empty(platform), what="outbox drained after the outage")

    await nc.close()
    reader = await nats.connect(stack.nats.url)
    try:
        events = await _stream_events(
            reader, platform.config.nats.stream, event_subject("dk", event_type)
        )
    finally:
        await reader.close()
    numbers = [e.data["n"] for e in events]
    assert len(events) == total, "every event arrives, none twice"
    assert sorted(numbers) == list(range(total))
    assert numbers == sorted(numbers), "published in commit order"
    assert len({e.id for e in events}) == total


async def test_unpublished_outbox_rows_are_published_after_a_restart(
    stack: LocalStack, nc: Client
) -> None:
    assert stack.platform is not None
    event_type = _event_type("restart")
    await stack.nats.stop()
    try:
        sent = [await _emit(stack.platform, event_type, {"n": i}) for i in range(20)]
        await asyncio.sleep(0.5)
        assert await stack.platform.outbox.backlog() >= 20
        platform = await stack.restart_platform()  # NATS still down: nothing may be lost
        assert await platform.outbox.backlog() >= 20
    finally:
        await stack.nats.start()
    await _eventually(lambda: _backlog_empty(platform), what="outbox drained after restart")
    reader = await nats.connect(stack.nats.url)
    try:
        events = await _stream_events(
            reader, platform.config.nats.stream, event_subject("dk", event_type)
        )
    finally:
        await reader.close()
    assert [e.id for e in events] == [e.id for e in sent]


async def test_consumer_killed_before_ack_applies_the_effect_once(
    platform: Platform, nc: Client, effects: None
) -> None:
    event_type = _event_type("killed")
    subject = event_subject("dk", event_type)
    name = f"test-killed-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(platform, name, subject, _recording_handler(platform, name), ack_wait=1.0)
    sent = await _emit(platform, event_type, {"n": 1})
    await _eventually(lambda: _backlog_empty(platform))

    # First life: the event is fetched and its effect committed, then the consumer dies: no ack.
    js = nc.jetstream()
    stream = platform.config.nats.stream
    await js.add_consumer(stream, config=consumer.consumer_config())
    first_life = await js.pull_subscribe_bind(durable=name, stream=stream)
    [message] = await first_life.fetch(1, timeout=5)
    assert await consumer.apply(EventEnvelope.from_json(message.data)) is True
    await first_life.unsubscribe()
    assert await _effect_count(platform, name) == 1

    # Second life: JetStream redelivers after ack_wait; the effect is not applied again.
    task = asyncio.create_task(consumer.run())
    try:
        await _eventually(
            lambda: _async(
                _metric(
                    platform,
                    "unityplan_events_consumed_total",
                    {"consumer": name, "result": "already_processed"},
                )
                == 1
            ),
            what="redelivery acknowledged",
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await _effect_count(platform, name) == 1
    assert await platform.consumed.is_processed(name, sent.id)
    assert _metric(platform, "unityplan_consumer_redeliveries_total", {"consumer": name}) >= 1
    info = await js.consumer_info(stream, name)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_handler_failure_rolls_back_and_the_retry_applies_once(
    platform: Platform, effects: None
) -> None:
    event_type = _event_type("flaky")
    name = f"test-flaky-{uuid.uuid4().hex[:6]}"
    record = _recording_handler(platform, name)
    attempts = 0

    async def flaky(envelope: EventEnvelope) -> None:
        nonlocal attempts
        attempts += 1
        await record(envelope)  # written, then rolled back by the failure below
        if attempts == 1:
            raise ConnectionError("the database of a dependency went away")

    consumer = _consumer(platform, name, event_subject("dk", event_type), flaky)
    task = asyncio.create_task(consumer.run())
    try:
        await _emit(platform, event_type, {"n": 7})
        await _eventually(lambda: _async(attempts >= 2), what="retried")
        await _eventually(lambda: _effect_count_is(platform, name, 1), what="effect")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await _effect_count(platform, name) == 1


async def test_poison_message_becomes_a_dead_letter_and_the_consumer_goes_on(
    platform: Platform, nc: Client, effects: None
) -> None:
    event_type = _event_type("poison")
    name = f"test-poison-{uuid.uuid4().hex[:6]}"
    record = _recording_handler(platform, name)

    async def handler(envelope: EventEnvelope) -> None:
        if envelope.data.get("poison"):
            raise ValueError("cannot digest this")
        await record(envelope)

    consumer = _consumer(platform, name, event_subject("dk", event_type), handler, max_deliver=3)
    task = asyncio.create_task(consumer.run())
    try:
        poison = await _emit(platform, event_type, {"poison": True})
        await _emit(platform, event_type, {"n": 1})
        await _eventually(lambda: _effect_count_is(platform, name, 1), what="good event applied")
        await _eventually(lambda: _has_dead_letter(platform, name), what="dead letter recorded")
        await _emit(platform, event_type, {"n": 2})
        await _eventually(lambda: _effect_count_is(platform, name, 2), what="consumer goes on")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [letter] = await platform.consumed.dead_letters(name)
    assert letter.event_id == poison.id and letter.deliveries == 3
    assert "ValueError: cannot digest this" in letter.error
    assert json.loads(letter.payload)["id"] == str(poison.id)
    assert _metric(platform, "unityplan_dead_letters_total", {"consumer": name}) == 1
    await _eventually(lambda: _backlog_empty(platform))
    announced = await _stream_events(
        nc, platform.config.nats.stream, "unityplan.dk.deadletter.recorded"
    )
    assert any(
        e.data["consumer"] == name and e.data["event_id"] == str(poison.id) for e in announced
    )


async def test_malformed_message_is_dead_lettered_at_once(
    platform: Platform, territory_nc: Client, effects: None
) -> None:
    event_type = _event_type("garbage")
    subject = event_subject("dk", event_type)
    name = f"test-garbage-{uuid.uuid4().hex[:6]}"
    consumer = _consumer(platform, name, subject, _recording_handler(platform, name))
    task = asyncio.create_task(consumer.run())
    try:
        await territory_nc.jetstream().publish(subject, b"{this is not an envelope")
        await _eventually(lambda: _has_dead_letter(platform, name), what="dead letter")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    [letter] = await platform.consumed.dead_letters(name)
    assert letter.event_id is None and letter.deliveries == 1
    assert letter.error.startswith("not an event envelope")


async def test_badge_check_request_reply(platform: Platform, nc: Client) -> None:
    status = await platform.badge_checks.check("@someone:dk.localhost", "first-aid")
    assert status.valid is False and status.expires_at is None
    assert status.error == "unknown badge 'first-aid'"
    with pytest.raises(BadgeCheckError, match="not a UnityPlan territory"):
        await platform.badge_checks.check("@someone:elsewhere.example", "first-aid")
    # A malformed request gets a clear answer, not silence.
    reply = await _raw_request(nc, "unityplan.dk.badge.check", b'{"user": 1}')
    assert reply["valid"] is False and reply["error"].startswith("malformed request")


async def test_stream_setup_is_idempotent(platform: Platform, nc: Client) -> None:
    js = nc.jetstream()
    await ensure_stream(js, platform.event_bus.stream)
    await ensure_stream(js, platform.event_bus.stream)
    info = await js.stream_info(platform.config.nats.stream)
    assert info.config.subjects == ["unityplan.>"]
    assert info.config.duplicate_window == platform.config.nats.duplicate_window_seconds
    assert info.config.storage == StorageType.FILE


async def test_event_metrics_are_exposed(stack: LocalStack, platform: Platform) -> None:
    import aiohttp

    await _emit(platform, _event_type("metrics"), {})
    await _eventually(lambda: _backlog_empty(platform))
    async with aiohttp.ClientSession() as session:
        async with session.get(platform.config.appservice.address + "/metrics") as resp:
            text = await resp.text()
    assert "unityplan_outbox_backlog 0.0" in text
    assert "unityplan_outbox_publish_lag_seconds_count" in text


async def _raw_request(nc: Client, subject: str, payload: bytes) -> dict[str, Any]:
    inbox = nc.new_inbox()
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_message(message: Any) -> None:
        answer = json.loads(message.data)
        if "valid" in answer:
            await answers.put(answer)

    subscription = await nc.subscribe(inbox, cb=on_message)
    await nc.publish(subject, payload, reply=inbox)
    try:
        return await asyncio.wait_for(answers.get(), 5)
    finally:
        await subscription.unsubscribe()


async def _async(value: bool) -> bool:
    return value


async def _effect_count_is(platform: Platform, name: str, expected: int) -> bool:
    return await _effect_count(platform, name) == expected


async def _has_dead_letter(platform: Platform, name: str) -> bool:
    return bool(await platform.consumed.dead_letters(name))
