"""The outbox relay: publishes committed outbox rows to JetStream, in order, exactly once.

Each row is published with ``Nats-Msg-Id`` = event id and marked published only after the PubAck, so
a crash or a lost acknowledgement makes it publish again, and JetStream's duplicate window drops the
copy. While NATS is down the relay waits and retries with backoff; nothing is lost because the rows
stay in PostgreSQL. The relay wakes on the outbox's NOTIFY (sent on commit) and also polls slowly in
case a notification was missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
from nats.js import JetStreamContext

from core.background import wait_until_set
from db.database import Database
from db.repositories.outbox import OutboxRepository

from .metrics import EventMetrics
from .nats_client import NatsClient
from .trust import BusTrust

log = logging.getLogger("unityplan.events.relay")

POLL_SECONDS = 2.0
PUBLISH_TIMEOUT = 5.0
MAX_BACKOFF = 15.0
BATCH = 500


class OutboxRelay:
    def __init__(
        self,
        outbox: OutboxRepository,
        db: Database,
        nats: NatsClient,
        metrics: EventMetrics,
        trust: BusTrust,
        *,
        stream: str,
    ) -> None:
        self.trust = trust  # every message leaves signed with the territory's key
        self.outbox = outbox
        self.db = db
        self.nats = nats
        self.metrics = metrics
        self.stream = stream
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        # Called with each event id right after its PubAck (benchmarks measure commit -> PubAck).
        self.on_published: Callable[[uuid.UUID], None] | None = None
        # One JetStream context per NATS connection: each context subscribes an inbox of its own
        # for the PubAcks of publish_async, so a new one per batch would pile up subscriptions.
        self._js: tuple[object, JetStreamContext] | None = None

    def _jetstream(self) -> JetStreamContext:
        client = self.nats.client
        if self._js is None or self._js[0] is not client:
            self._js = (client, client.jetstream())
        return self._js[1]

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            return
        try:
            self._listener = await asyncpg.connect(self.db.dsn)
            await self._listener.add_listener(self.outbox.channel, self._on_notify)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("Cannot LISTEN for outbox commits (%s); polling instead", exc)
            self._listener = None

    async def run(self) -> None:
        """Runs until cancelled."""
        backoff = 0.1
        try:
            while True:
                await self._listen()
                try:
                    drained = await self._publish_pending()
                except Exception as exc:  # NATS or PostgreSQL away: wait, then try again
                    log.warning(
                        "Outbox relay: %s: %s; retrying in %.1f s", type(exc).__name__, exc, backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, MAX_BACKOFF)
                    continue
                backoff = 0.1
                if drained:
                    await wait_until_set(self._wake, POLL_SECONDS)  # the slow poll
                    self._wake.clear()
        finally:
            if self._listener is not None:
                await self._listener.close()
                self._listener = None

    async def _publish_pending(self) -> bool:
        """Publish one batch; True when the outbox is empty afterwards."""
        self._wake.clear()
        rows = await self.outbox.unpublished(BATCH)
        if not rows:
            self.metrics.outbox_backlog.set(0)
            return True
        js = self._jetstream()
        # The whole batch goes out at once (one connection keeps the order); then the PubAcks are
        # collected in order. Rows are marked only once acknowledged.
        pending = [
            await js.publish_async(
                row.subject,
                row.payload.encode(),
                stream=self.stream,
                headers={
                    "Nats-Msg-Id": str(row.event_id),
                    **self.trust.headers(row.subject, row.payload.encode()),
                    # The trace of what emitted it goes on with every consumer (traceparent).
                    **row.trace_context,
                },
            )
            for row in rows
        ]
        acked: list[tuple[int, int]] = []
        failure: BaseException | None = None
        # One deadline for the whole batch's PubAcks (a timer per message costs more than its
        # publish); then they are taken in order, up to the first that failed or did not come.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                await asyncio.wait(pending)
        now = datetime.now(UTC)
        for row, future in zip(rows, pending, strict=True):
            if failure is not None:
                future.cancel()
                continue
            if not future.done():
                future.cancel()
                failure = TimeoutError(f"no PubAck within {PUBLISH_TIMEOUT:g} s")
            elif future.exception() is not None:
                failure = future.exception()
            if failure is not None:
                await self.outbox.mark_failed(row.seq, f"{type(failure).__name__}: {failure}")
                continue
            ack = future.result()
            acked.append((row.seq, ack.seq))
            if self.on_published is not None:
                self.on_published(row.event_id)
            lag = (now - row.created_at).total_seconds()
            self.metrics.publish_lag.observe(max(lag, 0.0))
            if ack.duplicate:
                self.metrics.duplicates_dropped.inc()
        if acked:
            await self.outbox.mark_published(acked)
        if failure is not None:
            self.metrics.outbox_backlog.set(await self.outbox.backlog())
            raise failure
        drained = len(rows) < BATCH
        self.metrics.outbox_backlog.set(0 if drained else await self.outbox.backlog())
        return drained
