"""A dk topic room, federated: a ca member joins it by alias over federation and talks there; every
message, edit and redaction becomes dk's forum, authored by the ca member, with their territory."""

from __future__ import annotations

from typing import Any

import aiohttp

from appservice.stack.local import LocalStack, TerritoryNode
from tests.federation.helpers import api, eventually
from tests.matrix_user import MatrixUser, body


async def test_the_homeservers_federate_over_tls(fed: LocalStack) -> None:
    dk, ca = fed.territory("dk"), fed.territory("ca")
    assert dk.server_name.startswith("localhost:") and ca.server_name.startswith("localhost:")
    # Each homeserver knows the other's signing keys: fetched over TLS, verified with the local CA.
    async with aiohttp.ClientSession() as session:
        url = f"{dk.synapse.url}/_matrix/client/v3/profile/@admin:{ca.server_name}"
        async with session.get(url) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["displayname"] == "Admin"


async def test_a_ca_member_talks_in_a_dk_topic_room(
    fed: LocalStack, dk: TerritoryNode, dk_user: MatrixUser, ca_user: MatrixUser
) -> None:
    status, topic = await api(
        dk,
        "POST",
        "/api/forums/topics",
        dk_user.client.access_token,
        {"title": "Across the ocean", "body": "Who is here?"},
    )
    assert status == 201, topic
    joined = await ca_user.client.join(topic["alias"])  # over federation, by alias
    assert str(getattr(joined, "room_id", "")) == topic["room_id"], joined
    room = topic["room_id"]
    await dk_user.client.join(room)

    async def send(user: MatrixUser, content: dict[str, Any]) -> str:
        response = await user.client.room_send(room, "m.room.message", content)
        return str(response.event_id)  # type: ignore[union-attr]

    hello = await send(ca_user, {"msgtype": "m.text", "body": "Hello from Canada"})
    # The dk member answers what they have seen arrive over federation.
    await dk_user.wait_for(room, lambda e: e.get("event_id") == hello)
    answer = await send(
        dk_user,
        {
            "msgtype": "m.text",
            "body": "Welcome!",
            "m.relates_to": {"m.in_reply_to": {"event_id": hello}},
        },
    )
    await send(
        ca_user,
        {
            "msgtype": "m.text",
            "body": "* Hello from Québec",
            "m.new_content": {"msgtype": "m.text", "body": "Hello from Québec"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": hello},
        },
    )
    oops = await send(ca_user, {"msgtype": "m.text", "body": "oops"})
    await ca_user.client.room_redact(room, oops)
    await ca_user.client.room_send(
        room,
        "m.reaction",
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": answer, "key": "👍"}},
    )

    async def settled() -> dict[str, dict[str, Any]] | None:
        status, page = await api(dk, "GET", f"/api/forums/topics/{topic['id']}/comments")
        assert status == 200
        by_event = {c["event_id"]: c for c in page["comments"] if c["event_id"]}
        ready = (
            oops in by_event
            and by_event[oops]["deleted"]
            and hello in by_event
            and by_event[hello]["edited_at"]
            and answer in by_event
            and by_event[answer]["votes"]["up"] == 1
        )
        return by_event if ready else None

    by_event = await eventually(settled, "the federated conversation in dk's forum")
    assert by_event[hello]["author"] == ca_user.user_id
    assert by_event[hello]["author_territory"] == "ca"
    assert by_event[hello]["body"] == "Hello from Québec"
    assert [e["body"] for e in by_event[hello]["edits"]] == ["Hello from Canada"]
    assert by_event[answer]["author"] == dk_user.user_id
    assert by_event[answer]["author_territory"] == "dk"
    assert by_event[answer]["reply_to"] == by_event[hello]["id"]
    assert by_event[oops]["deleted"] and by_event[oops]["body"] is None
    # And the ca member sees the dk member's answer through their own homeserver.
    seen = await ca_user.wait_for(room, lambda e: e.get("event_id") == answer)
    assert body(seen) == "Welcome!"


async def test_a_ca_members_file_becomes_a_dk_attachment(
    fed: LocalStack, dk: TerritoryNode, dk_user: MatrixUser, ca_user: MatrixUser
) -> None:
    """The file lives on ca's homeserver; dk's media bridge fetches it over federation, stores it
    on IPFS and lists it on the comment."""
    status, topic = await api(
        dk,
        "POST",
        "/api/forums/topics",
        dk_user.client.access_token,
        {"title": "Maps from abroad", "body": "Share your maps"},
    )
    assert status == 201, topic
    joined = await ca_user.client.join(topic["alias"])
    assert str(getattr(joined, "room_id", "")) == topic["room_id"], joined
    data = b"a map of the coast\n" * 200
    event_id = await ca_user.send_file(topic["room_id"], data, "coast.txt", "text/plain")

    async def attached() -> dict[str, Any] | None:
        status, page = await api(dk, "GET", f"/api/forums/topics/{topic['id']}/comments")
        assert status == 200
        for comment in page["comments"]:
            if comment["event_id"] == event_id and comment["attachments"]:
                return dict(comment)
        return None

    comment = await eventually(attached, "the ca member's file as a dk attachment", timeout=60)
    assert comment["author"] == ca_user.user_id and comment["author_territory"] == "ca"
    (attachment,) = comment["attachments"]
    assert attachment["filename"] == "coast.txt" and attachment["size"] == len(data)
    assert dk.config is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(dk.config.public_url + attachment["url"]) as resp:
            assert resp.status == 200
            assert await resp.read() == data
