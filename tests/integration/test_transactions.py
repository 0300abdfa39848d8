"""The homeserver-facing API: authentication, malformed bodies, exactly-once transactions."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp

from appservice.stack.local import LocalStack
from tests.matrix_user import MatrixUser, body
from tests.waiting import eventually

TXN_PATH = "/_matrix/app/v1/transactions/"


def _url(stack: LocalStack, txn_id: str) -> str:
    assert stack.config is not None
    return stack.config.appservice.address + TXN_PATH + txn_id


def _command_event(room_id: str, sender: str, text: str) -> dict[str, Any]:
    return {
        "event_id": f"$test-{uuid.uuid4().hex}",
        "type": "m.room.message",
        "room_id": room_id,
        "sender": sender,
        "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": text},
    }


async def _put(stack: LocalStack, txn_id: str, payload: Any, token: str | None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    data = payload if isinstance(payload, bytes) else None
    async with (
        aiohttp.ClientSession() as session,
        session.put(
            _url(stack, txn_id),
            data=data,
            json=None if data is not None else payload,
            headers=headers,
        ) as resp,
    ):
        return resp.status, await resp.json()


async def _settle(user: MatrixUser, room: str) -> None:
    """Send a command and wait for its reply: everything sent before it has arrived too."""
    await user.command(room, "!territory info")


async def test_missing_token_is_401_and_wrong_token_403_without_effect(
    stack: LocalStack, user: MatrixUser
) -> None:
    assert stack.platform is not None
    room = await user.room_with_bot()
    event = _command_event(room, user.user_id, "!help")
    txn_missing, txn_forged = f"t-{uuid.uuid4().hex}", f"t-{uuid.uuid4().hex}"

    status, answer = await _put(stack, txn_missing, {"events": [event]}, token=None)
    assert (status, answer["errcode"]) == (401, "M_UNAUTHORIZED")
    status, answer = await _put(stack, txn_forged, {"events": [event]}, token="forged-" + "x" * 40)
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    # The as_token is not the hs_token either.
    status, answer = await _put(
        stack, txn_forged, {"events": [event]}, token=stack.platform.as_token
    )
    assert (status, answer["errcode"]) == (403, "M_FORBIDDEN")
    # Legacy query-parameter auth is off by default.
    async with aiohttp.ClientSession() as session:
        url = _url(stack, txn_forged) + f"?access_token={stack.platform.hs_token}"
        async with session.put(url, json={"events": [event]}) as resp:
            assert resp.status == 401

    inbox = stack.platform.inbox
    server = stack.server_name
    assert await inbox.count(server, txn_missing) == 0
    assert await inbox.count(server, txn_forged) == 0
    await _settle(user, room)
    assert user.replies(room, event["event_id"]) == []


async def test_garbage_bodies_get_400(stack: LocalStack) -> None:
    assert stack.platform is not None
    token = stack.platform.hs_token
    status, answer = await _put(stack, "garbage-1", b"{not json", token)
    assert (status, answer["errcode"]) == (400, "M_NOT_JSON")
    status, answer = await _put(stack, "garbage-2", b"\xff\xfe\x00", token)
    assert (status, answer["errcode"]) == (400, "M_NOT_JSON")
    status, answer = await _put(stack, "garbage-3", {"events": "not a list"}, token)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    status, answer = await _put(stack, "garbage-4", [1, 2, 3], token)
    assert (status, answer["errcode"]) == (400, "M_BAD_JSON")
    for txn in ("garbage-1", "garbage-2", "garbage-3", "garbage-4"):
        assert await stack.platform.inbox.count(stack.server_name, txn) == 0


async def test_one_bad_event_does_not_fail_the_others(stack: LocalStack, user: MatrixUser) -> None:
    assert stack.platform is not None
    room = await user.room_with_bot()
    good = _command_event(room, user.user_id, "!help territory")
    broken_content = {**_command_event(room, user.user_id, "!help"), "content": "not an object"}
    not_an_event = {"nothing": "here"}
    status, _ = await _put(
        stack,
        f"t-{uuid.uuid4().hex}",
        {"events": [not_an_event, broken_content, good]},
        stack.platform.hs_token,
    )
    assert status == 200
    await _settle(user, room)
    assert len(user.replies(room, good["event_id"])) == 1


async def test_replayed_transaction_has_one_effect(stack: LocalStack, user: MatrixUser) -> None:
    assert stack.platform is not None
    room = await user.room_with_bot()
    event = _command_event(room, user.user_id, "!territory info")
    txn_id = f"t-{uuid.uuid4().hex}"
    for _ in range(3):
        status, answer = await _put(stack, txn_id, {"events": [event]}, stack.platform.hs_token)
        assert (status, answer) == (200, {})
    await _settle(user, room)
    replies = user.replies(room, event["event_id"])
    assert len(replies) == 1
    assert stack.config is not None and stack.config.territory.name in body(replies[0])
    assert await stack.platform.inbox.count(stack.server_name, txn_id) == 1


async def test_concurrent_replays_have_one_effect(stack: LocalStack, user: MatrixUser) -> None:
    assert stack.platform is not None
    room = await user.room_with_bot()
    event = _command_event(room, user.user_id, "!help")
    txn_id = f"t-{uuid.uuid4().hex}"
    results = await asyncio.gather(
        *(_put(stack, txn_id, {"events": [event]}, stack.platform.hs_token) for _ in range(3))
    )
    assert results == [(200, {})] * 3
    await _settle(user, room)
    assert len(user.replies(room, event["event_id"])) == 1


async def test_same_event_in_another_transaction_is_not_handled_twice(
    stack: LocalStack, user: MatrixUser
) -> None:
    assert stack.platform is not None
    room = await user.room_with_bot()
    event = _command_event(room, user.user_id, "!help")
    for _ in range(2):
        status, _ = await _put(
            stack, f"t-{uuid.uuid4().hex}", {"events": [event]}, stack.platform.hs_token
        )
        assert status == 200
    await _settle(user, room)
    assert len(user.replies(room, event["event_id"])) == 1


async def test_events_recorded_before_a_crash_are_handled_after_restart(
    stack: LocalStack, user: MatrixUser
) -> None:
    assert stack.platform is not None
    room = await user.room_with_bot()
    event = _command_event(room, user.user_id, "!territory info")
    txn_id = f"t-{uuid.uuid4().hex}"
    # A crash right after the transaction was recorded: the event is in the inbox, not handled.
    recorded = await stack.platform.inbox.record(stack.server_name, txn_id, [event])
    assert recorded is not None and [e.event_id for e in recorded] == [event["event_id"]]

    platform = await stack.restart_platform()

    # The homeserver resends the transaction after the crash: answered, handled once.
    status, _ = await _put(stack, txn_id, {"events": [event]}, platform.hs_token)
    assert status == 200
    await _settle(user, room)
    assert len(user.replies(room, event["event_id"])) == 1
    # (Only this event: the settling command's own row commits a moment after its reply.)
    assert event["event_id"] not in {e.event_id for e in await platform.inbox.pending()}


async def test_own_echoes_are_dropped(stack: LocalStack, user: MatrixUser) -> None:
    """Messages from the bot or a ghost never reach the command router (no bot loops)."""
    assert stack.platform is not None and stack.config is not None
    room = await user.room_with_bot()
    from_bot = _command_event(room, stack.config.bot_user_id, "!territory info")
    from_ghost = _command_event(room, f"@unity_someone:{stack.server_name}", "!territory info")
    from_user = _command_event(room, user.user_id, "!territory info")
    status, _ = await _put(
        stack,
        f"t-{uuid.uuid4().hex}",
        {"events": [from_bot, from_ghost, from_user]},
        stack.platform.hs_token,
    )
    assert status == 200
    await _settle(user, room)
    assert user.replies(room, from_bot["event_id"]) == []
    assert user.replies(room, from_ghost["event_id"]) == []
    assert len(user.replies(room, from_user["event_id"])) == 1


async def test_reused_transaction_id_with_other_events_is_new_work(
    stack: LocalStack, user: MatrixUser
) -> None:
    """Synapse on SQLite numbers transactions from 1 again after a restart."""
    assert stack.platform is not None
    room = await user.room_with_bot()
    txn_id = f"t-{uuid.uuid4().hex}"
    first = _command_event(room, user.user_id, "!help")
    second = _command_event(room, user.user_id, "!help")
    for event in (first, second, first):
        status, _ = await _put(stack, txn_id, {"events": [event]}, stack.platform.hs_token)
        assert status == 200
    await _settle(user, room)
    assert len(user.replies(room, first["event_id"])) == 1
    assert len(user.replies(room, second["event_id"])) == 1


async def test_bot_answers_after_the_homeserver_restarts(
    stack: LocalStack, user: MatrixUser
) -> None:
    room = await user.room_with_bot()
    for _ in range(3):
        await user.command(room, "!help")
    await stack.synapse.stop()
    await stack.synapse.start()  # its transaction ids start again at 1
    reply = await user.command(room, "!territory info")
    assert "dk.localhost" in body(reply)
    other_room = await user.room_with_bot()  # invites are handled too
    assert await user.command(other_room, "!help")


async def test_a_failing_event_in_a_batch_fails_alone(stack: LocalStack, user: MatrixUser) -> None:
    """A room's events arrive in one transaction and are handled in one database transaction;
    when one of them cannot be stored, it alone is rolled back and retried, the rest are kept."""
    platform = stack.platform
    assert platform is not None
    topic = await platform.forum_service.create_topic(f"Batch {uuid.uuid4().hex[:6]}", user.user_id)
    assert topic.matrix_room_id
    room, schema = str(topic.matrix_room_id), platform.forum.schema
    events = [_command_event(room, user.user_id, f"message {n}") for n in range(5)]
    events[2]["content"]["body"] = "poison"
    # PostgreSQL itself refuses that one comment (a trigger), as a full disk or a broken
    # constraint would.
    await platform.territory_db.execute(
        f"""CREATE FUNCTION {schema}.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.body = 'poison' THEN RAISE EXCEPTION 'refused by the test'; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse_poison BEFORE INSERT ON {schema}.forum_comments
                FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_poison()"""
    )
    try:
        status, _ = await _put(
            stack, f"t-{uuid.uuid4().hex}", {"events": events}, platform.hs_token
        )
        assert status == 503  # one event waits for another attempt: the homeserver retries
        stored = await platform.territory_db.fetch(
            f"SELECT matrix_event_id FROM {schema}.forum_comments WHERE topic_id = $1", topic.id
        )
        expected = {e["event_id"] for n, e in enumerate(events) if n != 2}
        assert {r["matrix_event_id"] for r in stored} == expected
        poisoned = await platform.territory_db.fetchrow(
            f"SELECT status, attempts, error FROM {schema}.as_inbox WHERE event_id = $1",
            events[2]["event_id"],
        )
        assert poisoned is not None and poisoned["status"] == "failed", poisoned
        assert poisoned["attempts"] == 1 and "refused by the test" in poisoned["error"]
    finally:
        await platform.territory_db.execute(
            f"DROP TRIGGER refuse_poison ON {schema}.forum_comments; "
            f"DROP FUNCTION {schema}.refuse_poison()"
        )

    async def retried() -> bool:
        count = await platform.territory_db.fetchval(
            f"SELECT count(*) FROM {schema}.forum_comments WHERE matrix_event_id = $1",
            events[2]["event_id"],
        )
        return bool(count == 1)

    await eventually(retried, "the failed event stored on its retry")
    total = await platform.territory_db.fetchval(
        f"SELECT count(*) FROM {schema}.forum_comments WHERE topic_id = $1", topic.id
    )
    assert total == 5  # and none twice
