"""Partial failure against the real processes: the appservice killed with SIGKILL mid-burst, the
homeserver answering 502 or hanging, PostgreSQL, NATS and IPFS stopped, the appservice down while
a backlog queues up, and an undeliverable DM among due badge expiries. In every case: nothing lost,
nothing done twice, order kept in each room. Figures go to ``report`` (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import aiohttp
import psutil

from db.repositories.forum import Comment
from tests.e2ee_user import E2EEUser
from tests.fault.conftest import FaultStack
from tests.matrix_user import MatrixUser, body, replies_to
from tests.waiting import eventually

Report = Callable[..., None]


async def _topic_room(faults: FaultStack, user: MatrixUser) -> tuple[int, str]:
    topic = await faults.tools.forum_service.create_topic(
        f"Faults {secrets.token_hex(3)}", user.user_id
    )
    assert topic.matrix_room_id, "the running appservice made the topic's room"
    joined = await user.client.join(topic.matrix_room_id)
    assert getattr(joined, "room_id", None) == topic.matrix_room_id, joined
    return topic.id, topic.matrix_room_id


async def _comments(faults: FaultStack, topic_id: int) -> list[Comment]:
    found: list[Comment] = []
    after = None
    while True:
        page = await faults.tools.forum.comments(topic_id, 200, after)
        found += page
        if len(page) < 200:
            return found
        after = page[-1].id


async def _history(user: MatrixUser, room: str) -> list[dict[str, Any]]:
    """The room's whole timeline from the homeserver (a sync after a burst is cut short)."""
    url = f"{user.stack.synapse.url}/_matrix/client/v3/rooms/{room}/messages"
    headers = {"Authorization": f"Bearer {user.client.access_token}"}
    events: list[dict[str, Any]] = []
    params: dict[str, str] = {"dir": "b", "limit": "500"}
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(url, params=params, headers=headers) as resp:
                page = await resp.json()
            events += page.get("chunk", [])
            if not page.get("end") or not page.get("chunk"):
                return events[::-1]
            params["from"] = page["end"]


async def _replies_once(user: MatrixUser, room: str, commands: list[str]) -> int:
    """Wait for a reply to every command, settle, and return how many got exactly one."""

    async def counts() -> list[int]:
        history = await _history(user, room)
        return [sum(1 for e in history if replies_to(e, c, user.bot)) for c in commands]

    await eventually(lambda: _all_replied(counts), "every command was answered", timeout=120)
    await asyncio.sleep(2)  # a duplicate would arrive within this
    final = await counts()
    assert final == [1] * len(commands), final
    return sum(1 for n in final if n == 1)


async def _all_replied(counts: Callable[[], Awaitable[list[int]]]) -> bool:
    return all(n >= 1 for n in await counts())


def _kill_appservice(faults: FaultStack) -> int:
    pid = faults.appservice_pid
    psutil.Process(pid).kill()
    return pid


async def _restarted(faults: FaultStack, old_pid: int) -> None:
    async def back() -> bool:
        appservice = faults.stack.appservice
        return appservice is not None and appservice.pid not in (None, old_pid)

    await eventually(back, "the supervisor restarted the appservice", timeout=30)


async def test_kill_9_mid_burst_loses_and_doubles_nothing(
    faults: FaultStack, report: Report
) -> None:
    user = await MatrixUser.create(faults.stack)
    try:
        topic_id, room = await _topic_room(faults, user)
        dm = await user.room_with_bot()
        total, kill_at = 150, (40, 95)
        sent: list[str] = []
        commands: list[str] = []
        kills = 0
        for i in range(total):
            if i in kill_at:
                old = _kill_appservice(faults)
                kills += 1
                if i == kill_at[-1]:
                    await _restarted(faults, old)
            text = f"burst {i} {secrets.token_hex(2)}"
            await user.send(room, text)
            sent.append(text)
            if i % 25 == 0:
                commands.append(await user.send(dm, "!territory info"))
        last_sent = time.monotonic()

        async def all_comments() -> list[Comment] | None:
            found = await _comments(faults, topic_id)
            return found if len(found) >= total else None

        comments = await eventually(all_comments, "every message became a comment", timeout=120)
        drain = time.monotonic() - last_sent
        bodies = [c.body for c in comments]
        assert bodies == sent, "each message once, in room order"
        replied = await _replies_once(user, dm, commands)
        report(
            "kill -9 of the appservice mid-burst (twice)",
            messages=total,
            comments=len(comments),
            duplicates=len(bodies) - len(set(bodies)),
            commands=len(commands),
            replied_once=replied,
            kills=kills,
            drain_seconds=round(drain, 1),
        )
    finally:
        await user.close()


async def test_an_encrypted_dm_reads_on_after_kill_9_and_on_a_new_device(
    faults: FaultStack, report: Report
) -> None:
    """The bot's Olm and Megolm sessions are in PostgreSQL: after SIGKILL its next answer is
    readable by the member's device, and by a device the member adds afterwards."""
    member = await E2EEUser.create_encrypted(faults.stack)
    second: E2EEUser | None = None
    try:
        dm = await member.encrypted_room_with_bot()
        first = await member.command(dm, "!help", timeout=60)
        assert first.get("decrypted"), first
        old = _kill_appservice(faults)
        await _restarted(faults, old)
        started = time.monotonic()
        after = await member.command(dm, "!territory info", timeout=120)
        readable_after = time.monotonic() - started
        assert after.get("decrypted") and "dk" in body(after), after

        # A device the member adds now reads the answers that follow (the bot's session
        # follows the member's device list, kept in PostgreSQL across the kill).
        second = await E2EEUser.login_device(faults.stack, member.user_id, member.password)

        async def readable_by_the_new_device() -> bool:
            reply = await member.command(dm, "!territory info", timeout=60)
            assert second is not None
            seen = await second.wait_for(dm, lambda e: e.get("event_id") == reply["event_id"])
            return bool(seen.get("decrypted"))

        await eventually(readable_by_the_new_device, "the new device reading the bot's answer")
        report(
            "kill -9 between two commands in an encrypted DM",
            answer_readable_after_restart=True,
            seconds_to_answer_after_restart=round(readable_after, 1),
            new_device_reads_the_next_answers=True,
        )
    finally:
        await member.close()
        if second is not None:
            await second.close()


async def test_homeserver_502s_delay_replies_but_never_double_them(
    faults: FaultStack, report: Report
) -> None:
    user = await MatrixUser.create(faults.stack)
    try:
        dm = await user.room_with_bot()
        fault = faults.proxy.fail(6)
        started = time.monotonic()
        commands = [await user.send(dm, "!territory info") for _ in range(4)]
        replied = await _replies_once(user, dm, commands)
        assert fault.remaining == 0 and len(fault.hits) == 6
        report(
            "homeserver answers 502 to 6 writes",
            commands=len(commands),
            replied_once=replied,
            failed_requests=len(fault.hits),
            seconds_to_all_replies=round(time.monotonic() - started - 2, 1),
        )
    finally:
        await user.close()


async def test_homeserver_hanging_past_the_timeout_sends_once(
    faults: FaultStack, report: Report
) -> None:
    """The request reaches the homeserver after the appservice gave up on it; the retry carries
    the same transaction id, so the homeserver keeps one event."""
    user = await MatrixUser.create(faults.stack)
    try:
        dm = await user.room_with_bot()
        fault = faults.proxy.hang(3, seconds=3.0)  # effect_timeout_seconds is 2 here
        started = time.monotonic()
        commands = [await user.send(dm, "!territory info") for _ in range(3)]
        replied = await _replies_once(user, dm, commands)
        await asyncio.sleep(4)  # the held requests have reached Synapse by now
        history = await _history(user, dm)
        assert [sum(1 for e in history if replies_to(e, c, user.bot)) for c in commands] == [1] * 3
        report(
            "homeserver holds 3 writes past the 2 s timeout, then delivers them",
            commands=len(commands),
            replied_once=replied,
            held_requests=len(fault.hits),
            seconds_to_all_replies=round(time.monotonic() - started - 6, 1),
        )
    finally:
        await user.close()


async def test_invites_and_kicks_survive_502s(faults: FaultStack, report: Report) -> None:
    tools = faults.tools
    moderator = await MatrixUser.create(faults.stack)
    member = await MatrixUser.create(faults.stack)
    try:
        badge = f"fault-{secrets.token_hex(3)}"
        await tools.badges.define(badge, "Fault badge", valid_days=None, requires=(), actor="@t:x")
        created = await moderator.client.room_create(
            name="Gated under faults",
            invite=[moderator.bot],
            power_level_override={"users": {moderator.bot: 100}},
        )
        room = created.room_id  # type: ignore[union-attr]
        await moderator.wait_for(
            room,
            lambda e: (
                e.get("type") == "m.room.member"
                and e.get("state_key") == moderator.bot
                and e["content"].get("membership") == "join"
            ),
        )
        reply = await moderator.command(room, f"!gate require {badge}", timeout=60)
        assert "badge" in body(reply)

        async def join_rule() -> bool:
            state = await moderator.client.room_get_state_event(room, "m.room.join_rules")
            return getattr(state, "content", {}).get("join_rule") == "knock"

        await eventually(join_rule, "the join rule became knock", timeout=120)

        # A knock without the badge: refused (the knock withdrawn), with a DM saying why.
        faults.proxy.fail(4)
        await member.client.room_knock(room, reason="let me in")
        refused = await member.dm_from_bot(lambda e: badge in body(e), timeout=60)
        assert "refused" in body(refused)

        # The award opens the room: exactly one invite, through 502s.
        faults.proxy.fail(4)
        await tools.badges.award(member.user_id, badge, by=moderator.user_id, source="test")

        async def invited() -> bool:
            await member.sync(timeout_ms=0)
            return room in member.invites

        await eventually(invited, "the holder was invited", timeout=120)
        await asyncio.sleep(2)  # a duplicate would arrive within this
        await member.sync(timeout_ms=0)
        memberships = [
            e["content"].get("membership")
            for e in await _history(moderator, room)
            if e.get("type") == "m.room.member"
            and e.get("state_key") == member.user_id
            and e.get("sender") == moderator.bot
        ]
        refusals = [
            e
            for events in member.timeline.values()
            for e in events
            if e.get("sender") == member.bot and badge in body(e) and "refused" in body(e)
        ]
        assert memberships.count("leave") == 1  # the refused knock, withdrawn once
        assert memberships.count("invite") == 1
        assert len(refusals) == 1
        report(
            "homeserver answers 502 around a refused knock and an invite",
            knock_withdrawals=memberships.count("leave"),
            refusal_dms=len(refusals),
            invites=memberships.count("invite"),
        )
    finally:
        await moderator.close()
        await member.close()


async def test_postgresql_stopped_for_30_s_loses_nothing(
    faults: FaultStack, report: Report
) -> None:
    user = await MatrixUser.create(faults.stack)
    try:
        topic_id, room = await _topic_room(faults, user)
        dm = await user.room_with_bot()
        await faults.stack.postgres.stop()
        stopped = time.monotonic()
        sent, commands = [], []
        try:
            for i in range(20):
                text = f"while the database is down {i}"
                await user.send(room, text)
                sent.append(text)
                if i % 7 == 0:
                    commands.append(await user.send(dm, "!territory info"))
                await asyncio.sleep(1.4)
            await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped)))
        finally:
            await faults.stack.postgres.start()
        back = time.monotonic()

        async def all_comments() -> list[Comment] | None:
            found = await _comments(faults, topic_id)
            return found if len(found) >= len(sent) else None

        comments = await eventually(all_comments, "the messages became comments", timeout=150)
        drain = time.monotonic() - back
        assert [c.body for c in comments] == sent
        replied = await _replies_once(user, dm, commands)
        report(
            "PostgreSQL stopped for 30 s while messages and commands arrive",
            messages=len(sent),
            comments=len(comments),
            duplicates=0,
            commands=len(commands),
            replied_once=replied,
            seconds_after_restart=round(drain, 1),
        )
    finally:
        await user.close()


async def test_appservice_down_while_1000_events_queue(faults: FaultStack, report: Report) -> None:
    user = await MatrixUser.create(faults.stack)
    try:
        rooms = [await _topic_room(faults, user) for _ in range(4)]
        appservice = faults.stack.appservice
        assert appservice is not None
        await appservice.pause()
        per_room = 250
        sent: dict[int, list[str]] = {topic_id: [] for topic_id, _ in rooms}

        async def send_all(topic_id: int, room: str) -> None:
            for i in range(per_room):
                text = f"backlog {topic_id}/{i}"
                await user.send(room, text)
                sent[topic_id].append(text)

        queued_at = time.monotonic()
        await asyncio.gather(*(send_all(t, r) for t, r in rooms))
        queue_seconds = time.monotonic() - queued_at
        started = time.monotonic()
        appservice.resume()

        async def drained() -> bool:
            for topic_id, _ in rooms:
                if len(await _comments(faults, topic_id)) < per_room:
                    return False
            return True

        await eventually(drained, "the backlog drained", timeout=240)
        drain = time.monotonic() - started
        for topic_id, _ in rooms:
            assert [c.body for c in await _comments(faults, topic_id)] == sent[topic_id]
        report(
            "appservice down while 1,000 events queue in Synapse, then started",
            events=per_room * len(rooms),
            rooms=len(rooms),
            comments=per_room * len(rooms),
            duplicates=0,
            seconds_to_queue=round(queue_seconds, 1),
            drain_seconds=round(drain, 1),
            events_per_second=round(per_room * len(rooms) / drain),
        )
    finally:
        await user.close()


async def _nats_outage(faults: FaultStack, report: Report, seconds: float) -> None:
    """Badges awarded while NATS is down: each holder gets exactly one notice once it is back."""
    tools = faults.tools
    users = [await MatrixUser.create(faults.stack) for _ in range(3)]
    try:
        badge = f"nats-{secrets.token_hex(3)}"
        await tools.badges.define(badge, "Outage badge", valid_days=None, requires=(), actor="@t:x")
        await faults.stack.nats.stop()
        down = time.monotonic()
        try:
            for user in users:
                await tools.badges.award(user.user_id, badge, by="@t:x", source="test")
                await asyncio.sleep(seconds / (len(users) + 1))
            await asyncio.sleep(max(0.0, seconds - (time.monotonic() - down)))
        finally:
            await faults.stack.nats.start()
        back = time.monotonic()
        for user in users:
            await user.dm_from_bot(lambda e: badge in body(e) and "earned" in body(e), timeout=90)
        delivered = time.monotonic() - back
        await asyncio.sleep(2)
        counts = []
        for user in users:
            await user.sync(timeout_ms=0)
            counts.append(
                sum(
                    1
                    for events in user.timeline.values()
                    for e in events
                    if e.get("sender") == user.bot and badge in body(e) and "earned" in body(e)
                )
            )
        assert counts == [1] * len(users), counts
        report(
            f"NATS down {seconds:.0f} s while badges are awarded",
            awards=len(users),
            notices_once=sum(1 for n in counts if n == 1),
            seconds_to_all_notices=round(delivered, 1),
        )
    finally:
        for user in users:
            await user.close()


async def test_nats_down_30_s(faults: FaultStack, report: Report) -> None:
    await _nats_outage(faults, report, 30)


async def test_nats_down_3_minutes(faults: FaultStack, report: Report) -> None:
    await _nats_outage(faults, report, 180)


async def test_ipfs_down_during_uploads(faults: FaultStack, report: Report) -> None:
    user = await MatrixUser.create(faults.stack)
    try:
        _, room = await _topic_room(faults, user)
        await faults.stack.ipfs.stop()
        files = []
        try:
            for i in range(5):
                data = f"file {i} {secrets.token_hex(8)}".encode()
                files.append(await user.send_file(room, data, f"f{i}.txt", "text/plain"))
            await asyncio.sleep(5)
        finally:
            await faults.stack.ipfs.start()
        back = time.monotonic()

        async def stored() -> bool:
            for event_id in files:
                upload = await faults.tools.media.upload_by_event(event_id)
                if upload is None:
                    return False
            return True

        await eventually(stored, "every file was stored on IPFS", timeout=120)
        cids = [(await faults.tools.media.upload_by_event(e)).cid for e in files]  # type: ignore[union-attr]
        for cid in cids:
            assert await faults.tools.ipfs.is_pinned(cid)
        report(
            "IPFS down during 5 uploads",
            files=len(files),
            stored=len(cids),
            seconds_after_restart=round(time.monotonic() - back, 1),
        )
    finally:
        await user.close()


async def test_expiry_with_one_undeliverable_dm(faults: FaultStack, report: Report) -> None:
    """Several awards come due; one holder's DM cannot be delivered. The others get exactly one
    reminder, every expired award emits badge.expired and its holder leaves the gated room."""
    tools = faults.tools
    holders = [await MatrixUser.create(faults.stack) for _ in range(2)]
    try:
        badge = f"expiring-{secrets.token_hex(3)}"
        await tools.badges.define(badge, "Expiring", valid_days=None, requires=(), actor="@t:x")
        # The undeliverable one: a user on a server that does not exist.
        nowhere = f"@someone:{secrets.token_hex(4)}.invalid"
        expires = date.today() + timedelta(days=1)
        for user_id in [nowhere, *(h.user_id for h in holders)]:
            await tools.badges.award(user_id, badge, by="@t:x", source="test", expires=expires)
        # Due now: reminders 7.2 s ahead (reminder_lead_hours 0.002), expiry in ~10 s.
        soon = datetime.now(UTC) + timedelta(seconds=10)
        await tools.territory_db.execute(
            f"UPDATE {tools.awards.schema}.user_badges SET expires_at = $2 WHERE badge_slug = $1",
            badge,
            soon,
        )
        for holder in holders:
            await holder.dm_from_bot(lambda e: "expires on" in body(e) and badge in body(e), 60)
            await holder.dm_from_bot(lambda e: "has expired" in body(e) and badge in body(e), 60)

        async def all_expired() -> bool:
            rows = await tools.territory_db.fetch(
                f"""SELECT expired_at FROM {tools.awards.schema}.user_badges
                    WHERE badge_slug = $1""",
                badge,
            )
            return all(r["expired_at"] is not None for r in rows)

        await eventually(all_expired, "every award expired", timeout=60)
        await asyncio.sleep(2)
        reminders = []
        for holder in holders:
            await holder.sync(timeout_ms=0)
            reminders.append(
                sum(
                    1
                    for events in holder.timeline.values()
                    for e in events
                    if e.get("sender") == holder.bot
                    and "expires on" in body(e)
                    and badge in body(e)
                )
            )
        assert reminders == [1, 1], reminders
        stuck = await tools.territory_db.fetch(
            f"""SELECT state, attempts FROM {tools.awards.schema}.effects
                WHERE room_key = $1 ORDER BY id""",
            f"dm:{nowhere}",
        )
        assert stuck and all(r["state"] != "done" for r in stuck)  # and it never blocked the others
        report(
            "badge expiry with one undeliverable DM among 3 due awards",
            awards=3,
            reminders_once=sum(1 for n in reminders if n == 1),
            expired=3,
            undeliverable_dms=len(stuck),
            undeliverable_state=sorted({r["state"] for r in stuck}),
        )
    finally:
        for holder in holders:
            await holder.close()


async def test_metrics_listen_apart_when_configured(faults: FaultStack) -> None:
    config = faults.stack.config
    assert config is not None
    async with aiohttp.ClientSession() as session:
        async with session.get(config.appservice.address + "/metrics") as resp:
            assert resp.status == 404  # not on the public port
        async with session.get(f"http://127.0.0.1:{faults.metrics_port}/metrics") as resp:
            assert resp.status == 200 and "unityplan_effect_queue" in await resp.text()
        async with session.get(config.appservice.address + "/ready") as resp:
            assert resp.status == 200
