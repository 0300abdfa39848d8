"""The bus as an attacker meets it: anonymous publishing is refused by the server, forged or
unsigned envelopes are rejected by consumers, a signed but unfounded course.completed awards
nothing, and a rogue badge.check answer is not believed."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from appservice.app import Platform
from appservice.stack.local import LocalStack
from core.events import EventEnvelope
from core.signing import SIGNATURE_HEADER, sign


def _metric(platform: Platform, name: str, labels: dict[str, str]) -> float:
    value = platform.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


def _completed(user_id: str, course: str, badge: str, territory: str = "dk") -> EventEnvelope:
    return EventEnvelope(
        type="course.completed",
        territory=territory,
        data={"user_id": user_id, "course": course, "awards": badge, "score": 1.0, "attempt": 1},
    )


async def _define(platform: Platform) -> str:
    badge = f"prize-{secrets.token_hex(3)}"
    await platform.badges.define(badge, "Prize", valid_days=None, requires=(), actor="@t:x")
    return badge


async def _never_awarded(platform: Platform, user_id: str, badge: str, seconds: float = 3) -> None:
    await asyncio.sleep(seconds)
    assert not await platform.awards.holds(user_id, badge)


async def test_a_client_without_credentials_cannot_publish_events(
    platform: Platform, nc: Client
) -> None:
    badge = await _define(platform)
    user = f"@mallory{secrets.token_hex(2)}:dk.localhost"
    envelope = _completed(user, "any-course", badge)
    with pytest.raises((nats.errors.Error, TimeoutError, asyncio.TimeoutError)):
        await nc.jetstream().publish(
            envelope.subject, envelope.to_json(), headers={"Nats-Msg-Id": str(envelope.id)}
        )
    await _never_awarded(platform, user, badge)


@pytest.mark.parametrize(
    "forgery",
    ["unsigned", "wrong key", "other territory's subject"],
)
async def test_forged_envelopes_are_rejected_and_counted(
    platform: Platform, territory_nc: Client, forgery: str
) -> None:
    badge = await _define(platform)
    user = f"@mallory{secrets.token_hex(2)}:dk.localhost"
    envelope = _completed(user, "any-course", badge, territory="ca" if "other" in forgery else "dk")
    body = envelope.to_json()
    subject = f"unityplan.dk.{envelope.type}"  # always dk's subject: the credentials allow it
    headers = {"Nats-Msg-Id": str(envelope.id)}
    if forgery == "wrong key":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        headers[SIGNATURE_HEADER] = sign(Ed25519PrivateKey.generate(), subject, body)
    elif forgery == "other territory's subject":
        headers[SIGNATURE_HEADER] = sign(platform.signing_key, subject, body)
    reason = {"unsigned": "unsigned", "wrong key": "bad_signature"}.get(forgery, "subject_mismatch")
    labels = {"consumer": "dk-course-badges", "reason": reason}
    before = _metric(platform, "unityplan_events_rejected_total", labels)
    await territory_nc.jetstream().publish(subject, body, headers=headers)
    for _ in range(100):
        if _metric(platform, "unityplan_events_rejected_total", labels) > before:
            break
        await asyncio.sleep(0.1)
    assert _metric(platform, "unityplan_events_rejected_total", labels) == before + 1
    assert not await platform.awards.holds(user, badge)
    letters = await platform.consumed.dead_letters("dk-course-badges")
    assert any(reason in (letter.error or "") for letter in letters)


async def test_a_signed_course_completed_without_an_enrolment_awards_nothing(
    platform: Platform, territory_nc: Client
) -> None:
    """Even a correctly signed event is only a hint: the awarder looks at its own database."""
    badge = await _define(platform)
    user = f"@mallory{secrets.token_hex(2)}:dk.localhost"
    envelope = _completed(user, "no-such-course", badge)
    body = envelope.to_json()
    headers = {
        "Nats-Msg-Id": str(envelope.id),
        SIGNATURE_HEADER: sign(platform.signing_key, envelope.subject, body),
    }
    await territory_nc.jetstream().publish(envelope.subject, body, headers=headers)
    for _ in range(100):
        if await platform.consumed.is_processed("dk-course-badges", envelope.id):
            break
        await asyncio.sleep(0.1)
    assert await platform.consumed.is_processed("dk-course-badges", envelope.id)
    assert not await platform.awards.holds(user, badge)


async def test_a_rogue_badge_check_answer_is_not_believed(
    platform: Platform, territory_nc: Client
) -> None:
    badge = await _define(platform)
    user = f"@someone{secrets.token_hex(2)}:dk.localhost"
    labels = {"reason": "unsigned"}
    before = _metric(platform, "unityplan_badge_check_answers_rejected_total", labels)

    async def lie(message: Any) -> None:
        await territory_nc.publish(message.reply, json.dumps({"valid": True}).encode())

    rogue = await territory_nc.subscribe(
        "unityplan.dk.badge.check", queue=f"rogue-{uuid.uuid4().hex}", cb=lie
    )
    try:
        status = await platform.badge_checks.check(user, badge)
    finally:
        await rogue.unsubscribe()
    assert status.valid is False  # the real answer, signed by dk's key
    assert _metric(platform, "unityplan_badge_check_answers_rejected_total", labels) >= before + 1


async def test_an_anonymous_client_may_ask_but_not_answer_badge_check(
    stack: LocalStack, nc: Client
) -> None:
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    inbox = nc.new_inbox()

    async def on_answer(message: Any) -> None:
        data = json.loads(message.data)
        if "valid" in data:
            await answers.put({"data": data, "headers": message.headers or {}})

    sub = await nc.subscribe(inbox, cb=on_answer)
    try:
        await nc.publish(
            "unityplan.dk.badge.check",
            json.dumps({"user_id": "@x:dk.localhost", "badge": "none"}).encode(),
            reply=inbox,
        )
        answer = await asyncio.wait_for(answers.get(), 5)
    finally:
        await sub.unsubscribe()
    assert answer["data"]["valid"] is False and SIGNATURE_HEADER in answer["headers"]
