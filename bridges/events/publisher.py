"""Emitting domain events: an outbox row in the caller's transaction, published by the relay.

Data residency: a territory whose settings say ``allow_cross_border: false`` publishes nothing
about its members on the shared stream. Its events keep only what names the territory's own
things (badge, course, topic, room, the ids of its own rows); member ids, free text written about
a member and their dates and scores are left out, and the actor is left out when it is a member.
Its own consumers re-derive the member from the row the event names (see ``badge_events`` and the
gate); other territories learn which badge changed and ask ``badge.check``, yes or no.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.events import MEMBER_DATA_KEYS, EventEnvelope
from core.tracing import current_context
from db.repositories.outbox import OutboxRepository
from db.territory import TerritoryCode


def without_member_data(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if key not in MEMBER_DATA_KEYS}


class EventPublisher:
    def __init__(
        self,
        outbox: OutboxRepository,
        territory: TerritoryCode,
        members_stay_home: Callable[[], bool] = lambda: False,
    ) -> None:
        self.outbox = outbox
        self.territory = territory
        self.members_stay_home = members_stay_home

    async def emit(
        self, event_type: str, data: dict[str, Any], *, actor: str | None = None
    ) -> EventEnvelope:
        """Queue ``<aggregate>.<event>`` for publishing; call inside the change's transaction."""
        if self.members_stay_home():
            data = without_member_data(data)
            if actor is not None and actor.startswith("@"):
                actor = None
        envelope = EventEnvelope(type=event_type, territory=self.territory, actor=actor, data=data)
        await self.outbox.add(
            envelope.id,
            envelope.subject,
            envelope.type,
            envelope.to_json().decode(),
            trace_context=current_context(),
        )
        return envelope
