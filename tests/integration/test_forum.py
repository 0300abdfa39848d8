"""The forum bridge and its HTTP API through a real homeserver, with matrix-nio users."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import aiohttp
import pytest
from mautrix.types import RoomID

from appservice.app import Platform
from appservice.stack.local import LocalStack
from tests.matrix_user import MatrixUser, body
from tests.waiting import eventually


async def _api(
    platform: Platform,
    method: str,
    path: str,
    token: str | None = None,
    json_body: Any = None,
    data: bytes | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method, platform.config.public_url + path, json=json_body, data=data, headers=headers
        ) as resp:
            return resp.status, await resp.json()


async def _comments(platform: Platform, topic_id: int) -> list[dict[str, Any]]:
    status, answer = await _api(platform, "GET", f"/api/forums/topics/{topic_id}/comments")
    assert status == 200
    return list(answer["comments"])


async def _send(
    user: MatrixUser, room: str, content: dict[str, Any], event_type: str = "m.room.message"
) -> str:
    response = await user.client.room_send(room, event_type, content)
    return str(response.event_id)  # type: ignore[union-attr]


async def test_topic_over_http_then_a_conversation_in_the_room(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    title = f"Bikes for all {uuid.uuid4().hex[:4]}"
    token = await user.openid_token()
    status, created = await _api(
        platform,
        "POST",
        "/api/forums/topics",
        token,
        {"title": title, "body": "Shall we **share** bikes?"},
    )
    assert status == 201, created
    assert created["alias"].startswith("#forum_bikes-for-all") and created["room_id"]
    status, topic = await _api(platform, "GET", f"/api/forums/topics/{created['id']}")
    assert topic["title"] == title and topic["created_by"] == user.user_id

    joined = await user.client.join(created["alias"])
    assert str(joined.room_id) == created["room_id"]  # type: ignore[union-attr]
    room = created["room_id"]
    first = await user.wait_for(
        room, lambda e: e.get("type") == "m.room.message" and "share" in body(e)
    )
    assert first["sender"] == f"@unity_{user.user_id[1:].split(':')[0]}:{stack.server_name}"
    assert "<strong>share</strong>" in first["content"]["formatted_body"]

    hello = await _send(
        user,
        room,
        {
            "msgtype": "m.text",
            "body": "Hello bikers",
            "format": "org.matrix.custom.html",
            "formatted_body": "Hello <b>bikers</b><script>x()</script>"
            '<a href="javascript:alert(1)">click</a>',
        },
    )
    fallback = f"> <{user.user_id}> Hello bikers\n\nYes!"  # the spec's reply fallback
    reply = await _send(
        user,
        room,
        {
            "msgtype": "m.text",
            "body": fallback,
            "m.relates_to": {"m.in_reply_to": {"event_id": hello}},
        },
    )
    await _send(
        user,
        room,
        {
            "msgtype": "m.text",
            "body": "* Hello cyclists",
            "m.new_content": {"msgtype": "m.text", "body": "Hello cyclists"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": hello},
        },
    )
    doomed = await _send(user, room, {"msgtype": "m.text", "body": "oops"})
    await user.client.room_redact(room, doomed, reason="typo")
    up = await _send(
        user,
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": hello, "key": "👍"}},
        "m.reaction",
    )
    await user.client.room_redact(room, up)
    await _send(
        user,
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "👍"}},
        "m.reaction",
    )
    await _send(
        user,
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": reply, "key": "👎"}},
        "m.reaction",
    )
    await user.command(room, "!help")  # commands are not comments; its reply settles the room

    async def settled() -> list[dict[str, Any]] | None:
        comments = await _comments(platform, created["id"])
        by_event = {c["event_id"]: c for c in comments}
        done = (
            doomed in by_event
            and by_event[doomed]["deleted"]
            and reply in by_event
            and by_event[reply]["votes"]["down"] == 1
        )
        return comments if done else None

    comments = await eventually(settled, "the room's history in the API")
    by_event = {c["event_id"]: c for c in comments}
    assert [c["source"] for c in comments] == ["api", "matrix", "matrix", "matrix"]
    assert (
        comments[0]["author"] == user.user_id and comments[0]["body"] == "Shall we **share** bikes?"
    )
    edited = by_event[hello]
    assert edited["body"] == "Hello cyclists" and edited["edited_at"]
    assert [e["body"] for e in edited["edits"]] == ["Hello bikers"]
    assert "<script>" not in (edited["edits"][0]["body_html"] or "")
    assert "javascript:" not in (edited["edits"][0]["body_html"] or "")
    assert "<b>bikers</b>" in edited["edits"][0]["body_html"]
    assert edited["votes"] == {"up": 0, "down": 0}  # the 👍 was taken back
    answer = by_event[reply]
    assert answer["reply_to"] == edited["id"] and answer["body"] == "Yes!"
    assert answer["votes"] == {"up": 0, "down": 1}  # one vote per user, changed to 👎
    assert by_event[doomed]["deleted"] and by_event[doomed]["body"] is None
    assert not any("!help" in (c["body"] or "") for c in comments)

    # Replaying every transaction that carried these events changes nothing.
    rows = await platform.territory_db.fetch(
        "SELECT event FROM territory_dk.as_inbox WHERE room_id = $1 ORDER BY received_at, seq",
        room,
    )
    import json as _json

    events = [_json.loads(r["event"]) for r in rows]
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{platform.config.appservice.address}/_matrix/app/v1/transactions/replay-{uuid.uuid4().hex}",
            json={"events": events},
            headers={"Authorization": f"Bearer {platform.hs_token}"},
        ) as resp:
            assert resp.status == 200
    assert await _comments(platform, created["id"]) == comments


async def test_comment_over_http_appears_from_the_ghost(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    token = user.client.access_token  # an access token works as well as an OpenID token
    status, created = await _api(
        platform, "POST", "/api/forums/topics", token, {"title": "Ghost test"}
    )
    assert status == 201
    room = created["room_id"]
    await user.client.join(room)
    said = await _send(user, room, {"msgtype": "m.text", "body": "Question from Matrix"})
    comment = await eventually(
        lambda: _first(platform, created["id"], said), "the Matrix message as a comment"
    )
    status, posted = await _api(
        platform,
        "POST",
        f"/api/forums/topics/{created['id']}/comments",
        token,
        {
            "body": "Answer <script>evil()</script> [link](javascript:alert(1))",
            "reply_to": comment["id"],
        },
    )
    assert status == 201, posted
    assert posted["reply_to"] == comment["id"] and posted["event_id"]
    assert "<script>" not in posted["body_html"] and "javascript:" not in posted["body_html"]
    seen = await user.wait_for(room, lambda e: e.get("event_id") == posted["event_id"])
    ghost = f"@unity_{user.user_id[1:].split(':')[0]}:{stack.server_name}"
    assert seen["sender"] == ghost
    assert seen["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == said
    assert "<script>" not in seen["content"]["formatted_body"]
    profile = await user.client.get_displayname(ghost)
    assert "(forum)" in profile.displayname  # type: ignore[union-attr]

    status, edited = await _api(
        platform,
        "PATCH",
        f"/api/forums/topics/{created['id']}/comments/{posted['id']}",
        token,
        {"body": "Answer, corrected"},
    )
    assert status == 200 and edited["body"] == "Answer, corrected"
    await user.wait_for(
        room,
        lambda e: (
            e.get("content", {}).get("m.relates_to", {}).get("rel_type") == "m.replace"
            and e["content"]["m.relates_to"]["event_id"] == posted["event_id"]
        ),
    )
    status, _ = await _api(
        platform, "DELETE", f"/api/forums/topics/{created['id']}/comments/{posted['id']}", token
    )
    assert status == 200
    await user.wait_for(
        room,
        lambda e: (
            e.get("type") == "m.room.redaction"
            and e.get("redacts", e.get("content", {}).get("redacts")) == posted["event_id"]
        ),
    )


async def _first(platform: Platform, topic_id: int, event_id: str) -> dict[str, Any] | None:
    for comment in await _comments(platform, topic_id):
        if comment["event_id"] == event_id:
            return comment
    return None


async def test_refusals(
    stack: LocalStack, platform: Platform, admin: MatrixUser, user: MatrixUser
) -> None:
    status, answer = await _api(platform, "POST", "/api/forums/topics", None, {"title": "x"})
    assert (status, answer["errcode"]) == (401, "M_MISSING_TOKEN")
    status, answer = await _api(
        platform, "POST", "/api/forums/topics", "not-a-token", {"title": "x"}
    )
    assert (status, answer["errcode"]) == (401, "M_UNKNOWN_TOKEN")
    token = user.client.access_token
    status, answer = await _api(platform, "POST", "/api/forums/topics", token, {})
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON") and "title" in answer["error"]
    status, answer = await _api(
        platform, "POST", "/api/forums/topics", token, data=b"{" + b"x" * 70_000
    )
    assert (status, answer["errcode"]) == (413, "M_TOO_LARGE")
    status, answer = await _api(platform, "GET", "/api/forums/topics/999999")
    assert (status, answer["errcode"]) == (404, "M_NOT_FOUND")

    status, created = await _api(
        platform, "POST", "/api/forums/topics", token, {"title": "To be locked"}
    )
    room = created["room_id"]
    await admin.client.join(room)
    refused = await user.command(await user.room_with_bot(), "!forum list")
    assert "To be locked" in body(refused)
    locked = await admin.command(room, "!forum lock")
    assert "locked" in body(locked)
    status, answer = await _api(
        platform,
        "POST",
        f"/api/forums/topics/{created['id']}/comments",
        token,
        {"body": "too late"},
    )
    assert (status, answer["errcode"]) == (423, "M_LOCKED")
    await user.client.join(room)
    blocked = await user.client.room_send(
        room, "m.room.message", {"msgtype": "m.text", "body": "can I?"}
    )
    assert getattr(blocked, "status_code", None) == "M_FORBIDDEN"
    unlocked = await user.command(await user.room_with_bot(), f"!forum unlock {created['alias']}")
    assert "may not unlock" in body(unlocked) and "room moderator" in body(unlocked)
    await admin.command(await admin.room_with_bot(), f"!forum unlock {created['alias']}")
    status, _ = await _api(
        platform,
        "POST",
        f"/api/forums/topics/{created['id']}/comments",
        token,
        {"body": "open again"},
    )
    assert status == 201
    audit = await admin.command(room, "!mod audit")
    assert "moderation.lock" in body(audit) and "moderation.unlock" in body(audit)


async def test_joining_an_alias_creates_the_missing_room(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    category = await platform.forum.category_id("general")
    assert category is not None
    topic = await platform.forum.add_topic(
        category, f"roomless-{uuid.uuid4().hex[:6]}", "Roomless", "@someone:dk.localhost"
    )
    joined = await user.client.join(f"#forum_{topic.slug}:{stack.server_name}")
    assert hasattr(joined, "room_id"), joined
    refreshed = await platform.forum.topic(topic.id)
    assert refreshed is not None and refreshed.matrix_room_id == joined.room_id  # type: ignore[union-attr]
    status, _ = await _api(platform, "GET", "/api/forums/categories")
    assert status == 200


async def test_topic_follows_its_upgraded_room(
    stack: LocalStack, platform: Platform, admin: MatrixUser
) -> None:
    token = admin.client.access_token
    _, created = await _api(platform, "POST", "/api/forums/topics", token, {"title": "Upgrade me"})
    room = created["room_id"]
    await admin.client.join(room)
    levels = await platform.matrix.bot.get_power_levels(RoomID(room), ignore_cache=True)
    levels.users[admin.user_id] = 100  # type: ignore[index]
    levels.events["m.room.tombstone"] = 100  # type: ignore[index]  (v12 default: creators only)
    await platform.matrix.bot.set_power_levels(RoomID(room), levels)
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{stack.synapse.url}/_matrix/client/v3/rooms/{room}/upgrade",
            json={"new_version": "12"},
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            new_room = (await resp.json())["replacement_room"]

    async def followed() -> bool:
        topic = await platform.forum.topic(created["id"])
        return topic is not None and topic.matrix_room_id == new_room

    await eventually(followed, "the topic follows the upgrade")


async def test_a_tombstone_to_a_stranger_room_is_not_followed(
    stack: LocalStack, platform: Platform, admin: MatrixUser
) -> None:
    token = admin.client.access_token
    _, created = await _api(platform, "POST", "/api/forums/topics", token, {"title": "Stay put"})
    room = created["room_id"]
    await admin.client.join(room)
    stranger = await admin.client.room_create(name="Not a successor")
    levels = await platform.matrix.bot.get_power_levels(RoomID(room), ignore_cache=True)
    levels.users[admin.user_id] = 100  # type: ignore[index]
    levels.events["m.room.tombstone"] = 100  # type: ignore[index]
    await platform.matrix.bot.set_power_levels(RoomID(room), levels)
    await admin.client.room_put_state(
        room,
        "m.room.tombstone",
        {"body": "moved", "replacement_room": stranger.room_id},  # type: ignore[union-attr]
    )
    await admin.command(room, "!help")  # the tombstone was handled before this reply
    topic = await platform.forum.topic(created["id"])
    assert topic is not None and topic.matrix_room_id == room


async def test_moderation_commands_are_audited_and_emitted(
    stack: LocalStack, platform: Platform, admin: MatrixUser, user: MatrixUser
) -> None:
    _, created = await _api(
        platform, "POST", "/api/forums/topics", admin.client.access_token, {"title": "Moderated"}
    )
    room = created["room_id"]
    await admin.client.join(room)
    await user.client.join(room)
    refused = await user.command(room, f"!mod kick {admin.user_id}")
    assert "room moderator" in body(refused)
    kicked = await admin.command(room, f"!mod kick {user.user_id} off topic")
    assert body(kicked) == f"Removed {user.user_id}. Reason: off topic"
    banned = await admin.command(room, f"!mod ban {user.user_id} spam")
    assert body(banned).startswith("Banned")
    rejoin = await user.client.join(room)
    assert getattr(rejoin, "status_code", None) in ("M_FORBIDDEN", "M_BAD_STATE")  # banned
    await admin.command(room, f"!mod unban {user.user_id}")
    audit = await admin.command(room, "!mod audit 3")
    for action in ("moderation.kick", "moderation.ban", "moderation.unban"):
        assert action in body(audit)
    assert "off topic" in body(audit) and user.user_id in body(audit)
    usage = await admin.command(room, "!mod audit lots")
    assert body(usage).startswith("Usage: !mod audit [n]")


async def test_api_errors_are_json_for_odd_ids_and_bad_bodies(platform: Platform) -> None:
    for path in (
        "/api/forums/topics/²",
        "/api/forums/topics/99999999999999999999",
        "/api/forums/topics/²/comments",
        "/api/badges/credentials/²",
        "/api/badges/credentials/99999999999999999999",
        "/api/nowhere",
    ):
        status, answer = await _api(platform, "GET", path)
        assert status == 404, path
        assert set(answer) == {"errcode", "error"} and answer["errcode"] == "M_NOT_FOUND", path
    status, answer = await _api(platform, "POST", "/api/forums/topics", data=b"{")
    assert status == 401 and answer["errcode"] == "M_MISSING_TOKEN"
    status, answer = await _api(platform, "PATCH", "/api/forums/topics/²/comments/1", data=b"{}")
    assert status == 401 and set(answer) == {"errcode", "error"}


async def test_chunked_bodies_are_read_whole_and_oversize_ones_refused(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    token = await user.openid_token()

    async def chunks(data: bytes) -> Any:
        for i in range(0, len(data), 7):  # a slow client or a proxy: many small chunks
            yield data[i : i + 7]
            await asyncio.sleep(0)

    topic = {"title": f"Chunked {uuid.uuid4().hex[:6]}", "body": "sent in pieces"}
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    url = platform.config.public_url + "/api/forums/topics"
    async with aiohttp.ClientSession() as session:
        async with session.post(
            url, data=chunks(json.dumps(topic).encode()), headers=headers
        ) as resp:
            assert resp.status == 201, await resp.text()
            created = await resp.json()
        big = json.dumps({"title": "x", "body": "y" * 70_000}).encode()
        async with session.post(url, data=chunks(big), headers=headers) as resp:
            assert resp.status == 413 and (await resp.json())["errcode"] == "M_TOO_LARGE"
    status, comments = await _api(platform, "GET", f"/api/forums/topics/{created['id']}/comments")
    assert status == 200 and comments["comments"][0]["body"] == "sent in pieces"


async def test_only_the_author_or_a_redactor_deletes_a_comment(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    """Matrix accepts a member's redaction of someone else's message into the room; it applies
    only to the author's own events or with the redact power level, and so on the forum."""
    topic = await platform.forum_service.create_topic(
        f"Redact {uuid.uuid4().hex[:6]}", user.user_id
    )
    assert topic.matrix_room_id
    room = topic.matrix_room_id
    other = await MatrixUser.create(stack)
    try:
        await user.client.join(room)
        await other.client.join(room)
        mine = await _send(user, room, {"msgtype": "m.text", "body": "mine"})
        await eventually(lambda: _first(platform, topic.id, mine), "the comment")
        await other.client.room_redact(room, mine, reason="not yours")
        marker = await _send(other, room, {"msgtype": "m.text", "body": "after the redaction"})
        await eventually(lambda: _first(platform, topic.id, marker), "the later comment")
        assert (await _first(platform, topic.id, mine))["deleted"] is False  # type: ignore[index]
        await user.client.room_redact(room, mine, reason="my own")

        async def deleted() -> bool:
            found = await _first(platform, topic.id, mine)
            return bool(found and found["deleted"])

        await eventually(deleted, "the author's redaction applied")
    finally:
        await other.close()


async def test_a_gated_topic_is_as_closed_over_http_as_its_room(
    stack: LocalStack, platform: Platform, user: MatrixUser, admin: MatrixUser
) -> None:
    topic = await platform.forum_service.create_topic(
        f"Closed {uuid.uuid4().hex[:6]}", admin.user_id
    )
    assert topic.matrix_room_id
    badge = f"closed-{uuid.uuid4().hex[:6]}"
    await platform.badges.define(badge, "Closed", valid_days=None, requires=(), actor="@t:x")
    await platform.gate.require(RoomID(topic.matrix_room_id), (badge,), "all", actor=admin.user_id)
    path = f"/api/forums/topics/{topic.id}"

    status, _ = await _api(platform, "GET", path)
    assert status == 404  # hidden from anonymous readers
    status, _ = await _api(platform, "GET", path + "/comments")
    assert status == 404
    status, listed = await _api(platform, "GET", "/api/forums/topics?limit=200")
    assert topic.id not in {t["id"] for t in listed["topics"]}

    token = await user.openid_token()
    status, answer = await _api(platform, "GET", path, token)
    assert status == 403 and badge in answer["error"]
    status, answer = await _api(platform, "POST", path + "/comments", token, {"body": "let me"})
    assert status == 403
    assert not await _comments_of(platform, topic.id)

    await platform.badges.award(user.user_id, badge, by=admin.user_id, source="test")
    platform.gate.invalidate(user_id=user.user_id)
    status, _ = await _api(platform, "GET", path, token)
    assert status == 200
    status, _ = await _api(platform, "POST", path + "/comments", token, {"body": "now I may"})
    assert status == 201


async def _comments_of(platform: Platform, topic_id: int) -> list[Any]:
    return list(await platform.forum.comments(topic_id, 50, None))


async def test_access_tokens_only_where_the_territory_allows_them(
    stack: LocalStack, user: MatrixUser
) -> None:
    from bridges.forum.auth import TokenVerifier
    from core.errors import Unauthenticated

    strict = TokenVerifier(stack.synapse.url, stack.server_name)  # the production default
    try:
        openid = await user.openid_token()
        assert await strict.user_of(f"Bearer {openid}") == user.user_id
        with pytest.raises(Unauthenticated):
            await strict.user_of(f"Bearer {user.client.access_token}")
        with pytest.raises(Unauthenticated):  # remembered as unknown: not asked again at once
            await strict.user_of(f"Bearer {user.client.access_token}")
    finally:
        await strict.close()
    lenient = TokenVerifier(stack.synapse.url, stack.server_name, accept_access_tokens=True)
    try:
        assert await lenient.user_of(f"Bearer {user.client.access_token}") == user.user_id
    finally:
        await lenient.close()
