"""The event spine of one territory: stream, outbox relay, durable consumers, badge.check responder.

``start`` never blocks on NATS: everything that needs it waits for the connection in the background,
and events keep accumulating in the outbox meanwhile.
"""

from __future__ import annotations

import asyncio
import logging

from core.background import BackgroundTasks
from core.events import ConsumerSpec
from db.database import Database
from db.repositories.consumed import ConsumedEventsRepository
from db.repositories.outbox import OutboxRepository

from .consumers import ConsumerSettings, DurableConsumer
from .metrics import EventMetrics
from .nats_client import NatsClient
from .publisher import EventPublisher
from .relay import OutboxRelay
from .requests import BadgeCheckResponder
from .stream import ensure_stream, stream_config
from .trust import BusTrust

log = logging.getLogger("unityplan.events")


class EventBus:
    def __init__(
        self,
        *,
        nats: NatsClient,
        db: Database,
        outbox: OutboxRepository,
        consumed: ConsumedEventsRepository,
        publisher: EventPublisher,
        metrics: EventMetrics,
        responder: BadgeCheckResponder,
        settings: ConsumerSettings,
        trust: BusTrust,
        duplicate_window: float,
        max_age: float,
        replicas: int = 1,
    ) -> None:
        self.nats = nats
        self.db = db
        self.consumed = consumed
        self.publisher = publisher
        self.metrics = metrics
        self.responder = responder
        self.settings = settings
        self.stream = stream_config(
            settings.stream, duplicate_window=duplicate_window, max_age=max_age, replicas=replicas
        )
        self.trust = trust
        self.relay = OutboxRelay(outbox, db, nats, metrics, trust, stream=settings.stream)
        self.consumers: list[DurableConsumer] = []
        self._tasks = BackgroundTasks()
        self.stream_ready = asyncio.Event()

    def add_consumer(self, spec: ConsumerSpec) -> DurableConsumer:
        consumer = DurableConsumer(
            spec,
            self.settings,
            nats=self.nats,
            db=self.db,
            consumed=self.consumed,
            publisher=self.publisher,
            metrics=self.metrics,
            trust=self.trust,
        )
        self.consumers.append(consumer)
        if self.stream_ready.is_set():
            self._tasks.start(consumer.run(), name=f"consumer-{spec.name}")
        return consumer

    async def start(self) -> None:
        self._tasks.start(self._run(), name="event-bus")

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            await self.nats.wait_connected()
            try:
                await ensure_stream(self.nats.client.jetstream(), self.stream)
                await self.responder.start()
                break
            except Exception as exc:
                log.warning("Setting up JetStream failed (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 15.0)
        self.stream_ready.set()
        self._tasks.start(self.relay.run(), name="outbox-relay")
        for consumer in self.consumers:
            self._tasks.start(consumer.run(), name=f"consumer-{consumer.name}")

    async def stop(self) -> None:
        await self._tasks.stop()
        await self.responder.stop()
