"""Badge-gated rooms through the real Synapse with the gate module, real NATS and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest_asyncio
from mautrix.types import EventType, RoomID
from nio import JoinError, JoinResponse, RoomCreateResponse

from appservice.app import Platform
from appservice.stack.local import LocalStack
from tests.matrix_user import MatrixUser, body


def _slug(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest_asyncio.fixture
async def moderator(stack: LocalStack) -> Any:
    member = await MatrixUser.create(stack)
    yield member
    await member.close()


async def _gated_room(
    moderator: MatrixUser, badge: str, *, bot_power: int = 50, options: str = ""
) -> tuple[str, dict[str, Any]]:
    """A room the moderator creates, with the bot (at ``bot_power``), gated by ``badge``."""
    response = await moderator.client.room_create(
        name="Gated",
        invite=[moderator.bot],
        # Room version 12: the creator's power is implicit, only the bot is listed.
        power_level_override={"users": {moderator.bot: bot_power}},
    )
    assert isinstance(response, RoomCreateResponse), response
    room = response.room_id
    await moderator.wait_for(
        room,
        lambda e: (
            e.get("type") == "m.room.member"
            and e.get("state_key") == moderator.bot
            and e["content"].get("membership") == "join"
        ),
    )
    reply = await moderator.command(room, f"!gate require {badge} {options}".strip())
    return room, reply


async def _members(platform: Platform, room: str) -> set[str]:
    return set(await platform.matrix.bot.get_joined_members(RoomID(room)))


async def _eventually(check: Any, what: str, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.2)


async def _wait_member(platform: Platform, user: MatrixUser, room: str, present: bool) -> None:
    async def check() -> bool:
        await user.sync(timeout_ms=0)  # accept the bot's invite when there is one
        return (user.user_id in await _members(platform, room)) is present

    await _eventually(check, f"{user.user_id} {'in' if present else 'out of'} {room}")


async def _left(observer: MatrixUser, room: str, user_id: str) -> dict[str, Any]:
    """The member event that took ``user_id`` out of ``room`` (a kick carries its reason)."""
    return await observer.wait_for(
        room,
        lambda e: (
            e.get("type") == "m.room.member"
            and e.get("state_key") == user_id
            and e["content"].get("membership") == "leave"
        ),
    )


async def _define_course_badge(admin: MatrixUser, badge: str, course: str) -> None:
    room = await admin.room_with_bot()
    data = {
        "slug": course,
        "title": f"Course {course}",
        "version": 1,
        "awards": badge,
        "pass_mark": 0.5,
        "lessons": [{"title": "Only lesson", "body": "Read me."}],
        "quiz": [{"question": "Read it?", "choices": ["Yes", "No"], "answer": 1}],
    }
    file_event = await admin.send_file(room, json.dumps(data).encode(), "c.yaml", "text/yaml")
    reply = await admin.command_replying(room, "!course import", file_event)
    assert "Imported" in body(reply), body(reply)


async def test_gate_needs_bot_power_and_a_moderator(
    platform: Platform, moderator: MatrixUser, user: MatrixUser
) -> None:
    badge = _slug("power")
    await platform.badges.define(badge, "Power", valid_days=None, requires=(), actor="@t:x")
    room, reply = await _gated_room(moderator, badge, bot_power=0)
    assert "I need power level 50" in body(reply) and "I have 0" in body(reply)
    assert await platform.gate.gates.get(room) is None
    # A member who is not a moderator may not gate.
    await moderator.client.room_invite(room, user.user_id)
    await user.sync()
    refused = await user.command(room, f"!gate require {badge}")
    assert "room moderator" in body(refused)


async def test_join_refused_then_invited_after_the_course_then_removed(
    stack: LocalStack,
    platform: Platform,
    admin: MatrixUser,
    moderator: MatrixUser,
    user: MatrixUser,
) -> None:
    badge, course = _slug("member"), _slug("entry")
    await _define_course_badge(admin, badge, course)
    room, reply = await _gated_room(moderator, badge)
    assert f"now requires {badge}" in body(reply) and "knock-only" in body(reply)
    shown = await moderator.command(room, "!gate show")
    assert badge in body(shown)

    refused = await user.client.join(room)
    assert isinstance(refused, JoinError)
    assert refused.status_code == "M_FORBIDDEN"
    assert f"requires the badge {badge} (earn it with !course enroll {course})" in refused.message

    dm = await user.room_with_bot()
    await user.command(dm, f"!course enroll {course}")
    await user.command(dm, f"!course next {course}")  # the lesson
    await user.command(dm, f"!course next {course}")  # the question
    done = await user.command(dm, f"!course answer {course} 1")
    assert "passed" in body(done)
    await _wait_member(platform, user, room, present=True)  # invited by the gate, then joined

    await admin.command(await admin.room_with_bot(), f"!badge revoke {user.user_id} {badge} test")
    await _wait_member(platform, user, room, present=False)
    kick = await _left(moderator, room, user.user_id)
    assert f"Your badge {badge} revoked" in kick["content"].get("reason", "")
    await user.dm_from_bot(lambda e: "You were removed from" in body(e) and badge in body(e))


async def test_expiry_removes_the_member(
    platform: Platform, admin: MatrixUser, moderator: MatrixUser, user: MatrixUser
) -> None:
    badge = _slug("expiring")
    admin_room = await admin.room_with_bot()
    await admin.command(admin_room, f"!badge define {badge} Expiring --valid-days 0.0002")
    room, _ = await _gated_room(moderator, badge)
    await admin.command(admin_room, f"!badge award {user.user_id} {badge}")
    await _wait_member(platform, user, room, present=True)
    await _wait_member(platform, user, room, present=False)  # ~17 s later the badge expires
    kick = await _left(moderator, room, user.user_id)
    assert f"Your badge {badge} expired" in kick["content"].get("reason", "")


async def test_knocks_are_answered(
    stack: LocalStack,
    platform: Platform,
    admin: MatrixUser,
    moderator: MatrixUser,
    user: MatrixUser,
) -> None:
    badge, course = _slug("knock"), _slug("knock-course")
    await _define_course_badge(admin, badge, course)
    room, _ = await _gated_room(moderator, badge)

    knocked = await user.client.room_knock(room, reason="let me in")
    assert not isinstance(knocked, JoinError), knocked
    refusal = await user.dm_from_bot(lambda e: "Your knock on" in body(e) and badge in body(e))
    assert f"!course enroll {course}" in body(refusal)
    assert user.user_id not in await _members(platform, room)

    eligible = await MatrixUser.create(stack)
    try:
        await admin.command(await admin.room_with_bot(), f"!badge award {eligible.user_id} {badge}")
        knocked = await eligible.client.room_knock(room)
        assert not isinstance(knocked, JoinError), knocked
        await _wait_member(platform, eligible, room, present=True)
    finally:
        await eligible.close()


async def test_human_invited_user_without_the_badge_is_kicked(
    stack: LocalStack, platform: Platform, moderator: MatrixUser
) -> None:
    """A server admin skips Synapse's module; the appservice's safety net still removes them."""
    badge = _slug("safety")
    await platform.badges.define(badge, "Safety", valid_days=None, requires=(), actor="@t:x")
    room, _ = await _gated_room(moderator, badge)
    password = uuid.uuid4().hex
    localpart = f"sysadmin_{uuid.uuid4().hex[:6]}"
    user_id = await stack.synapse.register_user(localpart, password, admin=True)
    outsider = await MatrixUser.login(stack, user_id, password)
    try:
        await moderator.client.room_invite(room, outsider.user_id)
        joined = await outsider.client.join(room)
        assert isinstance(joined, JoinResponse), joined
        kick = await _left(moderator, room, outsider.user_id)
        assert kick["sender"] == moderator.bot
        assert f"requires the badge {badge}" in kick["content"]["reason"]
    finally:
        await outsider.close()


async def test_module_fails_closed_for_gated_rooms_when_the_appservice_is_down(
    stack: LocalStack, moderator: MatrixUser, user: MatrixUser
) -> None:
    assert stack.platform is not None
    badge = _slug("outage")
    await stack.platform.badges.define(badge, "Outage", valid_days=None, requires=(), actor="@t:x")
    gated, _ = await _gated_room(moderator, badge)
    open_room = await moderator.client.room_create(name="Open")
    assert isinstance(open_room, RoomCreateResponse)
    await moderator.client.room_put_state(
        open_room.room_id, "m.room.join_rules", {"join_rule": "public"}
    )
    await stack.platform.stop()
    try:
        refused = await user.client.join(gated)
        assert isinstance(refused, JoinError) and refused.status_code == "M_FORBIDDEN"
        assert "badge check is unavailable" in refused.message
        allowed = await user.client.join(open_room.room_id)
        assert isinstance(allowed, JoinResponse), allowed
    finally:
        await stack.restart_platform()


async def test_gate_off_restores_the_join_rule(platform: Platform, moderator: MatrixUser) -> None:
    badge = _slug("off")
    await platform.badges.define(badge, "Off", valid_days=None, requires=(), actor="@t:x")
    room, _ = await _gated_room(moderator, badge)
    rules = await platform.matrix.bot.get_state_event(RoomID(room), EventType.ROOM_JOIN_RULES)
    assert rules.serialize()["join_rule"] == "knock"
    off = await moderator.command(room, "!gate off")
    assert "no longer requires badges" in body(off)
    rules = await platform.matrix.bot.get_state_event(RoomID(room), EventType.ROOM_JOIN_RULES)
    assert rules.serialize()["join_rule"] == "invite"
    assert "not badge-gated" in body(await moderator.command(room, "!gate show"))


async def test_the_bot_says_so_when_it_lost_the_power_to_enforce(
    stack: LocalStack, platform: Platform, moderator: MatrixUser
) -> None:
    badge = _slug("powerless")
    await platform.badges.define(badge, "Powerless", valid_days=None, requires=(), actor="@t:x")
    room, _ = await _gated_room(moderator, badge)
    await moderator.client.room_put_state(
        room,
        "m.room.power_levels",
        {
            **(
                await platform.matrix.bot.get_power_levels(RoomID(room), ignore_cache=True)
            ).serialize(),
            "users": {moderator.bot: 0},
        },
    )
    password = uuid.uuid4().hex
    user_id = await stack.synapse.register_user(
        f"admin_{uuid.uuid4().hex[:6]}", password, admin=True
    )
    outsider = await MatrixUser.login(stack, user_id, password)
    try:
        await moderator.client.room_invite(room, outsider.user_id)
        await outsider.client.join(room)
        notice = await moderator.wait_for(
            room, lambda e: e.get("sender") == moderator.bot and "could not remove" in body(e)
        )
        assert "I need power level 50" in body(notice)
    finally:
        await outsider.close()


async def test_a_gated_room_stays_closed_while_the_appservice_is_away(
    stack: LocalStack, platform: Platform, moderator: MatrixUser, user: MatrixUser
) -> None:
    """The homeserver module cannot ask the appservice: it reads the gate from the room's own
    state (org.unityplan.gate), which a restart of the homeserver does not forget — even after
    someone opened the join rule."""
    badge = _slug("away")
    await platform.badges.define(badge, "Away", valid_days=None, requires=(), actor="@t:x")
    room, reply = await _gated_room(moderator, badge)
    assert "badge" in body(reply)

    async def gate_state() -> bool:
        state = await moderator.client.room_get_state_event(room, "org.unityplan.gate")
        return badge in getattr(state, "content", {}).get("badges", [])

    await _eventually(gate_state, "the gate is in the room's state")
    opened = await moderator.client.room_put_state(
        room, "m.room.join_rules", {"join_rule": "public"}
    )
    assert getattr(opened, "event_id", None), opened

    await platform.stop()  # the appservice is away
    try:
        await stack.synapse.stop()
        await stack.synapse.start()  # the module forgets what it saw
        refused = await user.client.join(room)
        assert isinstance(refused, JoinError) and refused.status_code == "M_FORBIDDEN"
        assert "unavailable" in refused.message
    finally:
        await stack.restart_platform()
