"""Emitting domain events: an outbox row in the caller's transaction, published by the relay."""

from __future__ import annotations

from typing import Any

from core.events import EventEnvelope
from db.repositories.outbox import OutboxRepository
from db.territory import TerritoryCode


class EventPublisher:
    def __init__(self, outbox: OutboxRepository, territory: TerritoryCode) -> None:
        self.outbox = outbox
        self.territory = territory

    async def emit(
        self, event_type: str, data: dict[str, Any], *, actor: str | None = None
    ) -> EventEnvelope:
        """Queue ``<aggregate>.<event>`` for publishing; call inside the change's transaction."""
        envelope = EventEnvelope(type=event_type, territory=self.territory, actor=actor, data=data)
        await self.outbox.add(
            envelope.id, envelope.subject, envelope.type, envelope.to_json().decode()
        )
        return envelope
