"""Territory ca has allow_cross_border off: its rooms stay on its homeserver, members of other
territories are kept out, and other territories learn only yes or no about its members' badges."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from typing import Any

import nats
from nats.aio.msg import Msg
from nio import JoinError, RoomCreateResponse

from appservice.stack.local import LocalStack, TerritoryNode
from tests.federation.helpers import api, eventually
from tests.matrix_user import MatrixUser, is_membership


async def test_a_ca_topic_room_does_not_federate(
    fed: LocalStack, ca: TerritoryNode, ca_user: MatrixUser, dk_user: MatrixUser
) -> None:
    status, topic = await api(
        ca,
        "POST",
        "/api/forums/topics",
        ca_user.client.access_token,
        {"title": f"At home {uuid.uuid4().hex[:4]}", "body": "Only for us"},
    )
    assert status == 201, topic
    joined = await ca_user.client.join(topic["alias"])
    assert not isinstance(joined, JoinError), joined
    create = await ca_user.client.room_get_state_event(topic["room_id"], "m.room.create")
    assert create.content.get("m.federate") is False  # type: ignore[union-attr]
    refused = await dk_user.client.join(topic["alias"])
    assert isinstance(refused, JoinError), refused


async def test_a_dk_member_who_slips_into_a_ca_room_is_removed(
    fed: LocalStack, ca: TerritoryNode, ca_user: MatrixUser, dk_user: MatrixUser
) -> None:
    """A room a ca member made themselves (it federates) with the ca bot in it: the bot keeps
    members of other territories out, saying why."""
    response = await ca_user.client.room_create(
        name="Kitchen table",
        invite=[ca_user.bot, dk_user.user_id],
        power_level_override={"users": {ca_user.bot: 100}},
    )
    assert isinstance(response, RoomCreateResponse), response
    room = response.room_id
    await ca_user.bot_joined(room)
    joined = await dk_user.client.join(room)
    assert not isinstance(joined, JoinError), joined
    kick = await ca_user.wait_for(
        room, lambda e: is_membership(e, dk_user.user_id, "leave"), timeout=40
    )
    assert kick["sender"] == ca_user.bot
    assert "keeps its rooms within its borders" in kick["content"]["reason"]


async def _ask_ca(fed: LocalStack, user_id: str, badge: str) -> dict[str, Any]:
    """ca's raw answer to badge.check, asked as anyone may (without credentials)."""
    client = await nats.connect(fed.nats.url)
    answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_answer(message: Msg) -> None:
        answer = json.loads(message.data)
        if "stream" not in answer:  # JetStream's ack of the question (it keeps unityplan.>)
            await answers.put(answer)

    try:
        inbox = client.new_inbox()
        await client.subscribe(inbox, cb=on_answer)
        question = json.dumps({"user_id": user_id, "badge": badge}).encode()
        await client.publish("unityplan.ca.badge.check", question, reply=inbox)
        return await asyncio.wait_for(answers.get(), 5)
    finally:
        await client.close()


async def _unityplan(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_ca_answers_badge_checks_with_yes_or_no_only_as_its_settings_say(
    fed: LocalStack, ca: TerritoryNode, ca_user: MatrixUser
) -> None:
    demo = next(u for u in ca.demo_users if u.role == "admin")
    admin = await MatrixUser.login(fed, demo.user_id, demo.password, node=ca)
    try:
        badge = f"ca-quiet-{uuid.uuid4().hex[:6]}"
        dm = await admin.room_with_bot()
        await admin.command(dm, f"!badge define {badge} Quiet --valid-days 30")
        await admin.command(dm, f"!badge award {ca_user.user_id} {badge}")
    finally:
        await admin.close()
    assert await _ask_ca(fed, ca_user.user_id, badge) == {"valid": True}  # no expiry, nothing else

    # The registry setting changes while ca runs: ca follows territory.settings_changed.
    config = str(ca.config_path)
    try:
        done, out = await _unityplan(
            "-c", config, "territory", "settings", "ca", "allow_cross_border=true"
        )
        assert done == 0, out

        async def answered_in_full() -> dict[str, Any] | None:
            answer = await _ask_ca(fed, ca_user.user_id, badge)
            return answer if "expires_at" in answer else None

        answer = await eventually(answered_in_full, "ca answering with the expiry again")
        assert answer["valid"] is True and answer["expires_at"]
    finally:
        done, out = await _unityplan(
            "-c", config, "territory", "settings", "ca", "allow_cross_border=false"
        )
        assert done == 0, out

    async def quiet_again() -> bool:
        return await _ask_ca(fed, ca_user.user_id, badge) == {"valid": True}

    await eventually(quiet_again, "ca answering yes or no only again")


async def _listen(fed: LocalStack, subject: str) -> tuple[Any, list[dict[str, Any]]]:
    """Every envelope published on ``subject`` from now on, as other territories receive it."""
    client = await nats.connect(fed.nats.url)
    seen: list[dict[str, Any]] = []

    async def on_event(message: Msg) -> None:
        seen.append(json.loads(message.data))

    await client.subscribe(subject, cb=on_event)
    return client, seen


async def test_what_crosses_the_bus_from_ca_and_what_does_not(
    fed: LocalStack, ca: TerritoryNode, ca_user: MatrixUser, dk: TerritoryNode, dk_user: MatrixUser
) -> None:
    """ca's badge and course events name the badge and ca's own rows, never the member: no user
    id, no reason, no dates. ca's own consumers still DM the member (they read the award row).
    dk, which allows cross-border, publishes its members' ids as before."""
    ca_bus, ca_seen = await _listen(fed, "unityplan.ca.>")
    dk_bus, dk_seen = await _listen(fed, "unityplan.dk.badge.>")
    ca_demo = next(u for u in ca.demo_users if u.role == "admin")
    dk_demo = next(u for u in dk.demo_users if u.role == "admin")
    ca_admin = await MatrixUser.login(fed, ca_demo.user_id, ca_demo.password, node=ca)
    dk_admin = await MatrixUser.login(fed, dk_demo.user_id, dk_demo.password, node=dk)
    try:
        badge = f"ca-home-{uuid.uuid4().hex[:6]}"
        dm = await ca_admin.room_with_bot()
        await ca_admin.command(dm, f"!badge define {badge} At home --valid-days 30")
        await ca_admin.command(dm, f"!badge award {ca_user.user_id} {badge}")
        await ca_admin.command(dm, f"!badge revoke {ca_user.user_id} {badge} private matter")
        # ca's own consumer told the member, with the reason, from ca's own rows.
        notice = await ca_user.dm_from_bot(lambda e: badge in e["content"].get("body", ""))
        assert "earned" in notice["content"]["body"] or "revoked" in notice["content"]["body"]
        await ca_user.dm_from_bot(lambda e: "private matter" in e["content"].get("body", ""))

        dk_badge = f"dk-open-{uuid.uuid4().hex[:6]}"
        dk_dm = await dk_admin.room_with_bot()
        await dk_admin.command(dk_dm, f"!badge define {dk_badge} Open --valid-days 30")
        await dk_admin.command(dk_dm, f"!badge award {dk_user.user_id} {dk_badge}")

        async def ca_published() -> list[dict[str, Any]] | None:
            kinds = {e["type"] for e in ca_seen if e.get("data", {}).get("badge") == badge}
            ok = {"badge.awarded", "badge.revoked"} <= kinds
            return [e for e in ca_seen if e.get("data", {}).get("badge") == badge] if ok else None

        events = await eventually(ca_published, "ca's award and revocation on the bus")
        for event in events:
            assert event["data"]["award_id"], event
            raw = json.dumps(event)
            assert ca_user.user_id not in raw, event
            assert "private matter" not in raw, event
            assert not {"user_id", "reason", "expires_at"} & set(event["data"]), event
            assert event["actor"] is None, event  # the admin is a member too

        async def dk_published() -> dict[str, Any] | None:
            return next((e for e in dk_seen if e.get("data", {}).get("badge") == dk_badge), None)

        dk_event = await eventually(dk_published, "dk's award on the bus")
        assert dk_event["data"]["user_id"] == dk_user.user_id
    finally:
        await ca_admin.close()
        await dk_admin.close()
        await ca_bus.close()
        await dk_bus.close()
