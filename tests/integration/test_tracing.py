"""One trace from the homeserver's transaction to the bot's reply, and from a command through the
outbox and NATS to every consumer: spans exported over OTLP/HTTP to a real receiver, the trace
context in the NATS message headers."""

from __future__ import annotations

import asyncio
import uuid

import nats
from nats.aio.msg import Msg

from appservice.stack.local import LocalStack
from tests.conftest import COLLECTOR
from tests.matrix_user import MatrixUser
from tests.waiting import eventually


async def test_a_command_is_one_trace_from_transaction_to_reply(
    stack: LocalStack, user: MatrixUser
) -> None:
    dm = await user.room_with_bot()
    sent = await user.send(dm, "!help")
    await user.wait_for(
        dm,
        lambda e: (
            e.get("content", {}).get("m.relates_to", {}).get("m.in_reply_to", {}).get("event_id")
            == sent
        ),
    )

    async def spans() -> list | None:  # type: ignore[type-arg]
        events = [
            s
            for s in COLLECTOR.spans
            if s.name == "matrix.event" and s.attributes.get("matrix.event_id") == sent
        ]
        if not events:
            return None
        trace = COLLECTOR.trace(events[0].trace_id)
        names = {s.name for s in trace}
        wanted = {"homeserver.transaction", "matrix.event", "db.transaction", "effect matrix.send"}
        return trace if wanted <= names else None

    trace = await eventually(spans, "the transaction, event, database and reply spans exported")
    by_id = {s.span_id: s for s in trace}
    event = next(s for s in trace if s.name == "matrix.event")
    # The event is handled in the database transaction of its room's batch, within the
    # homeserver's transaction.
    parent = by_id[event.parent_span_id]
    assert parent.name == "db.transaction"
    assert by_id[parent.parent_span_id].name == "homeserver.transaction"
    reply = next(s for s in trace if s.name == "effect matrix.send")
    assert reply.parent_span_id in by_id  # the delivery continues the trace that queued it
    assert {s.service for s in trace} == {"unityplan-dk"}


async def test_a_domain_event_carries_its_trace_to_nats_and_the_consumers(
    stack: LocalStack, admin: MatrixUser, user: MatrixUser
) -> None:
    client = await nats.connect(stack.nats.url)
    headers: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    badge = f"traced-{uuid.uuid4().hex[:6]}"

    async def on_event(message: Msg) -> None:
        if badge.encode() in message.data:
            await headers.put(dict(message.headers or {}))

    try:
        await client.subscribe("unityplan.dk.badge.awarded", cb=on_event)
        dm = await admin.room_with_bot()
        await admin.command(dm, f"!badge define {badge} Traced")
        await admin.command(dm, f"!badge award {user.user_id} {badge}")
        published = await asyncio.wait_for(headers.get(), 30)
    finally:
        await client.close()
    traceparent = published.get("traceparent", "")
    assert traceparent.count("-") == 3, published
    trace_id = traceparent.split("-")[1]

    async def consumed() -> set[str] | None:
        names = {s.name for s in COLLECTOR.trace(trace_id)}
        wanted = {
            "matrix.event",
            "nats.consume dk-badge-notices",
            "nats.consume dk-gate",
            "effect matrix.dm",  # the notice the consumer queued, delivered in the same trace
        }
        return names if wanted <= names else None

    await eventually(consumed, "the consumers' spans (and the notice they queued) in the trace")
