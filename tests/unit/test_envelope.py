"""The event envelope and its subjects."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from bridges.events.consumers import redelivery_delay
from core.events import EventEnvelope, event_subject, request_subject


def test_envelope_round_trip_and_subject() -> None:
    envelope = EventEnvelope(
        type="badge.awarded", territory="dk", actor="@a:dk.example", data={"badge": "first-aid"}
    )
    assert isinstance(envelope.id, uuid.UUID)
    assert envelope.subject == "unityplan.dk.badge.awarded"
    assert envelope.occurred_at.tzinfo is not None
    assert EventEnvelope.from_json(envelope.to_json()) == envelope


@pytest.mark.parametrize(
    "event_type",
    ["badge", "Badge.awarded", "badge.awarded.now", "badge.", ".x", "badge.award ed", "badge.>"],
)
def test_bad_event_types(event_type: str) -> None:
    with pytest.raises(ValidationError):
        EventEnvelope(type=event_type, territory="dk")


def test_bad_territory_and_extra_fields() -> None:
    with pytest.raises(ValidationError):
        EventEnvelope(type="badge.awarded", territory="dk.>")
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate({"type": "badge.awarded", "territory": "dk", "surprise": 1})


def test_subjects() -> None:
    assert event_subject("ca", "course.completed") == "unityplan.ca.course.completed"
    assert request_subject("dk", "badge.check") == "unityplan.dk.badge.check"
    with pytest.raises(ValueError):
        event_subject("*", "badge.awarded")


def test_redelivery_delay_grows_and_is_capped() -> None:
    assert [redelivery_delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert redelivery_delay(50) == 30.0
