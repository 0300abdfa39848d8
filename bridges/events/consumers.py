"""Durable JetStream pull consumers with explicit acks, idempotent effects and dead letters.

For every delivered event, in one territory-database transaction: claim (consumer, event id) in
``processed_events``, then run the handler. A redelivered event whose claim exists is acknowledged
without running the handler again, so its effect happens once. A handler failure rolls the claim
back and the event is delivered again later (``nak`` with a growing delay); after ``max_deliver``
deliveries it is recorded in ``dead_letters``, announced as ``deadletter.recorded``, and terminated,
and the consumer goes on with the next event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from core.effects import caused_by
from core.events import ConsumerSpec, EventEnvelope
from core.tracing import span
from db.database import Database
from db.repositories.consumed import ConsumedEventsRepository

from .metrics import EventMetrics
from .nats_client import NatsClient
from .publisher import EventPublisher
from .trust import BusTrust

log = logging.getLogger("unityplan.events.consumers")

Handler = Callable[[EventEnvelope], Awaitable[None]]

FETCH_BATCH = 20
FETCH_TIMEOUT = 1.0


@dataclass(frozen=True)
class ConsumerSettings:
    stream: str
    max_deliver: int
    ack_wait: float


def redelivery_delay(deliveries: int) -> float:
    """Seconds before a failed event comes back: 0.5, 1, 2, 4 … capped at 30."""
    return float(min(0.5 * 2 ** (deliveries - 1), 30.0))


class DurableConsumer:
    def __init__(
        self,
        spec: ConsumerSpec,
        settings: ConsumerSettings,
        *,
        nats: NatsClient,
        db: Database,
        consumed: ConsumedEventsRepository,
        publisher: EventPublisher,
        metrics: EventMetrics,
        trust: BusTrust,
    ) -> None:
        self.spec = spec
        self.settings = settings
        self.nats = nats
        self.db = db
        self.consumed = consumed
        self.publisher = publisher
        self.metrics = metrics
        self.trust = trust

    @property
    def name(self) -> str:
        return self.spec.name

    def consumer_config(self) -> ConsumerConfig:
        subjects = list(self.spec.subjects)
        return ConsumerConfig(
            durable_name=self.name,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.settings.ack_wait,
            # One more than ours: an event that crashed its consumer max_deliver times still comes
            # back once, to be recorded as a dead letter instead of vanishing.
            max_deliver=self.settings.max_deliver + 1,
            filter_subject=subjects[0] if len(subjects) == 1 else None,
            filter_subjects=subjects if len(subjects) > 1 else None,
        )

    async def run(self) -> None:
        """Fetch and process until cancelled; NATS outages are waited out."""
        backoff = 0.2
        while True:
            try:
                await self.nats.wait_connected()
                js = self.nats.client.jetstream()
                await js.add_consumer(self.settings.stream, config=self.consumer_config())
                subscription = await js.pull_subscribe_bind(
                    durable=self.name, stream=self.settings.stream
                )
                backoff = 0.2
                while True:
                    try:
                        messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT)
                    except (NatsTimeoutError, TimeoutError):
                        continue  # nothing new within the fetch timeout
                    for message in messages:
                        await self.process(message)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "Consumer %s: %s: %s; retrying in %.1f s",
                    self.name,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)

    async def process(self, message: Msg) -> None:
        with span(
            f"nats.consume {self.name}",
            parent=message.headers,
            attributes={"messaging.destination": message.subject, "messaging.consumer": self.name},
        ):
            await self._process(message)

    async def _process(self, message: Msg) -> None:
        deliveries = message.metadata.num_delivered
        if deliveries > 1:
            self.metrics.redeliveries.labels(self.name).inc()
        try:
            envelope = EventEnvelope.from_json(message.data)
        except ValidationError as exc:
            await self._dead_letter(message, None, deliveries, f"not an event envelope: {exc}")
            return
        if deliveries > self.settings.max_deliver:
            await self._dead_letter(message, envelope, deliveries, "delivered too often")
            return
        # Nothing is believed because of where it came from: the envelope must be signed by the
        # territory it names, on that territory's own subject.
        problem = await self.trust.problem(
            envelope.territory, message.subject, message.data, message.headers
        )
        if problem is not None:
            log.warning(
                "Consumer %s rejects event %s on %s: %s",
                self.name,
                envelope.id,
                message.subject,
                problem,
            )
            self.metrics.rejected.labels(self.name, problem).inc()
            await self._dead_letter(message, envelope, deliveries, f"rejected: {problem}")
            return
        try:
            applied = await self.apply(envelope)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if deliveries >= self.settings.max_deliver:
                log.error(
                    "Consumer %s gives up on event %s after %d deliveries: %s",
                    self.name,
                    envelope.id,
                    deliveries,
                    error,
                )
                await self._dead_letter(message, envelope, deliveries, error)
            else:
                log.warning(
                    "Consumer %s: event %s failed (delivery %d): %s",
                    self.name,
                    envelope.id,
                    deliveries,
                    error,
                )
                self.metrics.consumed.labels(self.name, "retried").inc()
                await message.nak(delay=redelivery_delay(deliveries))
            return
        await message.ack()
        self.metrics.consumed.labels(self.name, "applied" if applied else "already_processed").inc()

    async def apply(self, envelope: EventEnvelope) -> bool:
        """Run the handler once per event; False when the event was processed before.

        Everything here commits together: the claim and the handler's database effects.
        """
        # Matrix effects the handler queues get transaction ids from (consumer, event): a
        # redelivery after a crash re-derives the same ids, so nothing is sent twice.
        with caused_by(f"bus:{self.name}:{envelope.id}"):
            async with self.db.transaction():
                if not await self.consumed.claim(self.name, envelope.id):
                    return False
                await self.spec.handler(envelope)
        return True

    async def _dead_letter(
        self, message: Msg, envelope: EventEnvelope | None, deliveries: int, error: str
    ) -> None:
        payload = message.data.decode(errors="replace")
        async with self.db.transaction():
            await self.consumed.add_dead_letter(
                self.name,
                envelope.id if envelope else None,
                message.subject,
                payload,
                deliveries,
                error,
            )
            await self.publisher.emit(
                "deadletter.recorded",
                {
                    "consumer": self.name,
                    "event_id": str(envelope.id) if envelope else None,
                    "subject": message.subject,
                    "deliveries": deliveries,
                    "error": error[:500],
                },
            )
        await message.term()
        self.metrics.dead_letters.labels(self.name).inc()
        self.metrics.consumed.labels(self.name, "dead_letter").inc()
