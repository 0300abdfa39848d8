"""Domain events (ARCHITECTURE section 8): the envelope, its NATS subject, and the two protocols the
domain uses: an emitter (an outbox row in the caller's transaction; bridges/events publishes it) and
a consumer declaration (bridges/events runs it as a durable JetStream consumer)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from db.territory import territory_code

SUBJECT_ROOT = "unityplan"
EVENT_TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")

# Event data about a member rather than the territory's own things: who (user_id, author), what
# was said about or by them (reason, filename, the Matrix event), and how they did and until when
# (score, attempt, expires_at, expired_at). A territory that keeps its members' data at home
# (allow_cross_border: false) publishes its events without these.
MEMBER_DATA_KEYS = frozenset(
    {
        "user_id",
        "author",
        "reason",
        "filename",
        "event_id",
        "score",
        "attempt",
        "expires_at",
        "expired_at",
    }
)


class EventEnvelope(BaseModel):
    """One domain event: ``type`` is ``<aggregate>.<event>``, e.g. ``badge.awarded``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    territory: str
    occurred_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    actor: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not EVENT_TYPE_PATTERN.fullmatch(value):
            raise ValueError(f"{value!r} is not <aggregate>.<event> in lower case")
        return value

    @field_validator("territory")
    @classmethod
    def _territory(cls, value: str) -> str:
        return territory_code(value)

    @property
    def subject(self) -> str:
        return event_subject(self.territory, self.type)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> EventEnvelope:
        return cls.model_validate_json(raw)


def event_subject(territory: str, event_type: str) -> str:
    """``unityplan.<territory>.<aggregate>.<event>``."""
    return f"{SUBJECT_ROOT}.{territory_code(territory)}.{event_type}"


def every_territory_subject(event_type: str) -> str:
    """``unityplan.*.<aggregate>.<event>``: one event type, from whichever territory."""
    return f"{SUBJECT_ROOT}.*.{event_type}"


def request_subject(territory: str, name: str) -> str:
    """Subjects of request/reply services, e.g. ``unityplan.dk.badge.check``."""
    return f"{SUBJECT_ROOT}.{territory_code(territory)}.{name}"


class EventEmitter(Protocol):
    async def emit(
        self, event_type: str, data: dict[str, Any], *, actor: str | None = None
    ) -> EventEnvelope:
        """Queue ``<aggregate>.<event>`` for publishing; call inside the change's transaction."""
        ...


EventHandler = Callable[[EventEnvelope], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerSpec:
    """``name`` is the durable consumer's name; ``subjects`` the event subjects it takes."""

    name: str
    subjects: tuple[str, ...]
    handler: EventHandler
