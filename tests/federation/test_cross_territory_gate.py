"""A dk room gated by a badge that territory ca defines and awards: ca's members are let in and
out by what ca says about them, asked over the authenticated bus; nothing ca's member claims counts."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest_asyncio
from nio import RoomCreateResponse

from appservice.stack.local import LocalStack, TerritoryNode
from tests.federation.helpers import api, eventually
from tests.matrix_user import MatrixUser, body, is_membership


@pytest_asyncio.fixture
async def ca_admin(fed: LocalStack, ca: TerritoryNode) -> AsyncIterator[MatrixUser]:
    demo = next(u for u in ca.demo_users if u.role == "admin")
    admin = await MatrixUser.login(fed, demo.user_id, demo.password, node=ca)
    yield admin
    await admin.close()


async def _over_federation(
    user: MatrixUser, action: str, room: str, via: str
) -> tuple[int, dict[str, Any]]:
    """``knock`` or ``join`` a room of another homeserver, through ``via`` (nio cannot say via)."""
    url = (
        f"{user.node.synapse.url}/_matrix/client/v3/{action}/{quote(room)}?server_name={quote(via)}"
    )
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, json={}, headers={"Authorization": f"Bearer {user.client.access_token}"}
        ) as resp:
            return resp.status, await resp.json()


async def _gated_room(moderator: MatrixUser, name: str, badge: str) -> str:
    """A room the moderator makes, with the bot at power 100, gated by ``badge``."""
    response = await moderator.client.room_create(
        name=name, invite=[moderator.bot], power_level_override={"users": {moderator.bot: 100}}
    )
    assert isinstance(response, RoomCreateResponse), response
    await moderator.bot_joined(response.room_id)
    gated = await moderator.command(response.room_id, f"!gate require {badge}")
    assert f"This room now requires {badge}" in body(gated), body(gated)
    return response.room_id


async def _members(user: MatrixUser, room: str) -> set[str]:
    response = await user.client.joined_members(room)
    return {m.user_id for m in getattr(response, "members", [])}


async def test_a_ca_badge_opens_and_closes_a_dk_gated_room(
    fed: LocalStack,
    dk: TerritoryNode,
    dk_user: MatrixUser,
    ca_user: MatrixUser,
    ca_admin: MatrixUser,
) -> None:
    badge = f"ca-guide-{uuid.uuid4().hex[:6]}"
    ca_dm = await ca_admin.room_with_bot()
    defined = await ca_admin.command(ca_dm, f"!badge define {badge} Trail guide")
    assert badge in body(defined), body(defined)

    room = await _gated_room(dk_user, "Guides only", badge)

    # Without the badge: the knock (over federation) is refused, with a DM saying why.
    assert (await _over_federation(ca_user, "knock", room, dk.server_name))[0] == 200
    refusal = await ca_user.dm_from_bot(
        lambda e: "Your knock on" in body(e) and badge in body(e), bot=dk_user.bot, timeout=40
    )
    assert f"requires the badge {badge}" in body(refusal)
    assert ca_user.user_id not in await _members(dk_user, room)

    # Territory ca awards it: dk hears the signed badge.awarded, asks ca, and invites the member.
    awarded = await ca_admin.command(ca_dm, f"!badge award {ca_user.user_id} {badge}")
    assert "Awarded" in body(awarded), body(awarded)

    async def inside() -> bool:
        await ca_user.sync(timeout_ms=0)  # accepts the invite
        return ca_user.user_id in await _members(dk_user, room)

    await eventually(inside, "the ca member let into the dk room")

    # Territory ca revokes it: dk removes the member from its room.
    revoked = await ca_admin.command(ca_dm, f"!badge revoke {ca_user.user_id} {badge} no longer")
    assert body(revoked).startswith(f"Revoked {badge}"), body(revoked)

    async def outside() -> bool:
        return ca_user.user_id not in await _members(dk_user, room)

    await eventually(outside, "the ca member removed from the dk room")


async def test_badge_verify_of_a_ca_member_answers_from_ca(
    fed: LocalStack, dk_user: MatrixUser, ca_user: MatrixUser, ca_admin: MatrixUser
) -> None:
    badge = f"ca-first-aid-{uuid.uuid4().hex[:6]}"
    ca_dm = await ca_admin.room_with_bot()
    await ca_admin.command(ca_dm, f"!badge define {badge} First aid")
    dk_dm = await dk_user.room_with_bot()
    before = await dk_user.command(dk_dm, f"!badge verify {ca_user.user_id} {badge}")
    assert body(before).startswith("❌") and "answered by their territory, ca" in body(before)
    await ca_admin.command(ca_dm, f"!badge award {ca_user.user_id} {badge}")
    after = await dk_user.command(dk_dm, f"!badge verify {ca_user.user_id} {badge}")
    assert body(after).startswith(f"✅ {ca_user.user_id} holds {badge}"), body(after)
    assert "answered by their territory, ca" in body(after)
    info = await dk_user.command(dk_dm, f"!badge info {badge}")
    assert "defined by territory ca" in body(info), body(info)


async def test_a_ca_credential_verifies_at_dk_until_ca_revokes_it(
    fed: LocalStack, dk: TerritoryNode, ca_user: MatrixUser, ca_admin: MatrixUser
) -> None:
    """The holder takes their credential from ca and shows it to dk's API: dk checks it with
    ca's key from the registry and asks ca whether it is revoked."""
    badge = f"ca-ranger-{uuid.uuid4().hex[:6]}"
    ca_dm = await ca_admin.room_with_bot()
    await ca_admin.command(ca_dm, f"!badge define {badge} Ranger")
    await ca_admin.command(ca_dm, f"!badge award {ca_user.user_id} {badge}")
    own_dm = await ca_user.room_with_bot()
    shown = await ca_user.command(own_dm, f"!badge verify {ca_user.user_id} {badge}")
    link = re.search(r'href="([^"]+)"', shown["content"]["formatted_body"])
    assert link, body(shown)
    async with aiohttp.ClientSession() as session:
        async with session.get(link[1], headers={"Accept": "application/jwt"}) as resp:
            assert resp.status == 200
            token = await resp.text()

    status, verified = await api(dk, "POST", "/api/badges/verify", json={"credential": token})
    assert status == 200 and verified["valid"] is True, verified
    assert verified["credential"]["issuer"]["name"] == "Canada"

    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[:-4]}AAAA"
    status, refused = await api(dk, "POST", "/api/badges/verify", json={"credential": forged})
    assert status == 200 and refused["valid"] is False
    assert "the signature does not match" in refused["reasons"]

    await ca_admin.command(ca_dm, f"!badge revoke {ca_user.user_id} {badge}")
    status, revoked = await api(dk, "POST", "/api/badges/verify", json={"credential": token})
    assert status == 200 and revoked["valid"] is False
    assert any(reason.startswith("revoked on") for reason in revoked["reasons"]), revoked


async def test_ca_refuses_its_own_member_at_a_dk_gated_room(
    fed: LocalStack,
    dk: TerritoryNode,
    dk_user: MatrixUser,
    ca_user: MatrixUser,
    ca_admin: MatrixUser,
) -> None:
    """dk's signed gate.required reaches ca: ca's own homeserver module refuses its member's join
    with the reason (without it, only dk's "not invited" would come back)."""
    badge = f"ca-scout-{uuid.uuid4().hex[:6]}"
    await ca_admin.command(await ca_admin.room_with_bot(), f"!badge define {badge} Scout")
    room = await _gated_room(dk_user, "Scouts only", badge)

    async def refused_by_ca() -> dict[str, Any] | None:
        status, answer = await _over_federation(ca_user, "join", room, dk.server_name)
        assert status == 403, answer
        return answer if f"requires the badge {badge}" in answer.get("error", "") else None

    refusal = await eventually(refused_by_ca, "ca's module refusing the join with the reason")
    assert refusal["org.unityplan.missing_badges"] == [badge]

    await dk_user.command(room, "!gate off")

    async def let_through_by_ca() -> bool:
        status, answer = await _over_federation(ca_user, "join", room, dk.server_name)
        return status == 200 or f"requires the badge {badge}" not in answer.get("error", "")

    await eventually(let_through_by_ca, "ca forgetting the gate once dk lifts it")


async def test_knocks_from_one_server_are_limited(
    fed: LocalStack, dk: TerritoryNode, dk_user: MatrixUser, ca_admin: MatrixUser
) -> None:
    """dk allows ca's server a few knocks and refusal DMs at once (remote_server_per_hour is 60
    for dk in this stack: a burst of three, one more a minute); past that, knocks from ca wait
    unanswered, while dk's own members are still answered."""
    badge = f"ca-limited-{uuid.uuid4().hex[:6]}"
    await ca_admin.command(await ca_admin.room_with_bot(), f"!badge define {badge} Limited")
    room = await _gated_room(dk_user, "Busy room", badge)
    ca = fed.territory("ca")
    outcomes: list[str] = []
    for _ in range(6):
        knocker = await MatrixUser.create(fed, node=ca)
        try:
            assert (await _over_federation(knocker, "knock", room, dk.server_name))[0] == 200
            try:
                who = knocker.user_id
                left = await dk_user.wait_for(
                    room, lambda e, who=who: is_membership(e, who, "leave"), timeout=5
                )
                outcomes.append("refused" if left["sender"] == dk_user.bot else "left")
            except TimeoutError:
                state = await dk_user.client.room_get_state_event(
                    room, "m.room.member", knocker.user_id
                )
                outcomes.append(str(getattr(state, "content", {}).get("membership")))
        finally:
            await knocker.close()
        if outcomes[-1] == "knock":
            break
    # Past ca's burst (earlier tests in this stack spent some of it) a knock from ca waits
    # unanswered ...
    assert outcomes[-1] == "knock", outcomes
    assert "left" not in outcomes, outcomes
    # ... while the gate itself still answers everyone else at once: a dk member is refused.
    local = await MatrixUser.create(fed, node=dk)
    try:
        knocked = await local.client.room_knock(room)
        assert getattr(knocked, "room_id", None) == room, knocked
        left = await dk_user.wait_for(
            room, lambda e: is_membership(e, local.user_id, "leave"), timeout=20
        )
        assert left["sender"] == dk_user.bot
        assert f"requires the badge {badge}" in left["content"]["reason"]
    finally:
        await local.close()


async def test_a_ca_member_who_slips_into_a_dk_gated_room_is_removed(
    fed: LocalStack, ca: TerritoryNode, dk_user: MatrixUser, ca_admin: MatrixUser
) -> None:
    """A server admin of ca skips ca's own module (Synapse exempts server admins); invited by a
    dk moderator, they join over federation, and dk's safety net removes them for lacking the
    badge. (A throwaway admin: after the kick, Synapse's partial-state join of the room can keep
    that user's incremental /sync waiting, so no other test logs in as them.)"""
    badge = f"ca-slip-{uuid.uuid4().hex[:6]}"
    await ca_admin.command(await ca_admin.room_with_bot(), f"!badge define {badge} Slip")
    room = await _gated_room(dk_user, "No slipping in", badge)
    password = uuid.uuid4().hex
    user_id = await ca.synapse.register_user(
        f"sysadmin_{uuid.uuid4().hex[:6]}", password, admin=True
    )
    outsider = await MatrixUser.login(fed, user_id, password, node=ca)
    try:
        await dk_user.client.room_invite(room, outsider.user_id)

        async def joined() -> bool:
            await outsider.sync(timeout_ms=0)  # accepts the invite, joining over federation
            return room in outsider.invites

        await eventually(joined, "the invite reaching ca's server admin")
        kick = await dk_user.wait_for(
            room, lambda e: is_membership(e, outsider.user_id, "leave"), timeout=40
        )
        assert kick["sender"] == dk_user.bot
        assert f"requires the badge {badge}" in kick["content"]["reason"]
    finally:
        await outsider.close()
