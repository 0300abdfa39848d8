"""Members' data rights, driven as a member would: `!me export` in a DM with the bot (and the HTTP
API), `!me forget` with its confirmation word, the access audit, and the retention purge."""

from __future__ import annotations

import asyncio
import io
import json
import os
import sys
import uuid
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest_asyncio
from mautrix.types import PaginationDirection, RoomID

from appservice.app import Platform
from appservice.homeserver_admin import SynapseAdmin
from appservice.stack.local import LocalStack
from appservice.stack.seed import DEMO_COURSE
from db.territory import territory_schema
from tests.matrix_user import MatrixUser, body, download_media, password_login
from tests.waiting import eventually
from workflows.course_file import parse_course_file

# Operational queues, not member data: the homeserver's transactions, effects and events in
# flight (the confirmation command itself is in them until the handled ones are purged).
OPERATIONAL = {"as_inbox", "as_transactions", "effects", "outbox", "processed_events"}


async def _unityplan(stack: LocalStack, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        "-c",
        str(stack.first.config_path),
        *args,
        env={**os.environ, "UNITYPLAN_DATABASE_ADMIN_URL": stack.postgres.dsn()},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode()


async def _send(user: MatrixUser, room: str, content: dict[str, Any], kind: str) -> str:
    response = await user.client.room_send(room, kind, content)
    return str(response.event_id)  # type: ignore[union-attr]


@pytest_asyncio.fixture
async def other(stack: LocalStack) -> AsyncIterator[MatrixUser]:
    member = await MatrixUser.create(stack)
    yield member
    await member.close()


async def _life_in_the_territory(
    stack: LocalStack, platform: Platform, user: MatrixUser, other: MatrixUser, admin: MatrixUser
) -> dict[str, Any]:
    """The member earns a badge, starts a course, comments (and edits), votes and shares a file;
    the other member does the same next to them."""
    tag = uuid.uuid4().hex[:6]
    badge = f"helper-{tag}"
    admin_dm = await admin.room_with_bot()
    await admin.command(admin_dm, f"!badge define {badge} Helper {tag}")
    for member in (user, other):
        done = await admin.command(admin_dm, f"!badge award {member.user_id} {badge}")
        assert "Awarded" in body(done), body(done)

    spec = parse_course_file(DEMO_COURSE.read_text("utf-8"))
    if await platform.course_repo.latest_version(spec.slug) is None:
        await platform.courses.import_course(spec, actor=admin.user_id, source="test")
    dm = await user.room_with_bot()
    await user.command(dm, "!course enroll climate-basics")
    for _ in range(4):  # three lessons, then the first question
        await user.command(dm, "!course next climate-basics")
    await user.command(dm, "!course answer climate-basics 1")

    topic = await platform.forum_service.create_topic(f"Data {tag}", other.user_id)
    assert topic.matrix_room_id
    room = topic.matrix_room_id
    for member in (user, other):
        await member.client.join(room)
    mine = await _send(
        user, room, {"msgtype": "m.text", "body": f"mine-first-{tag}"}, "m.room.message"
    )
    await _send(
        user,
        room,
        {
            "msgtype": "m.text",
            "body": f"* mine-{tag}",
            "m.new_content": {"msgtype": "m.text", "body": f"mine-{tag}"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": mine},
        },
        "m.room.message",
    )
    theirs = await _send(
        other, room, {"msgtype": "m.text", "body": f"theirs-{tag}"}, "m.room.message"
    )
    await _send(
        user,
        room,
        {"m.relates_to": {"rel_type": "m.annotation", "event_id": theirs, "key": "👍"}},
        "m.reaction",
    )
    my_file = await user.send_file(
        room, f"my notes {tag}".encode(), f"notes-{tag}.txt", "text/plain"
    )
    their_file = await other.send_file(
        room, f"their notes {tag}".encode(), f"theirs-{tag}.txt", "text/plain"
    )

    async def settled() -> dict[str, Any] | None:
        comment = await platform.forum.comment_by_event(mine)
        mine_up = await platform.media.upload_by_event(my_file)
        theirs_up = await platform.media.upload_by_event(their_file)
        votes = await platform.territory_db.fetchval(
            f"SELECT count(*) FROM {territory_schema('dk')}.forum_votes WHERE user_id = $1",
            user.user_id,
        )
        if not (comment and comment.edited_at and mine_up and theirs_up and votes):
            return None
        return {"comment": comment, "my_cid": mine_up.cid, "their_cid": theirs_up.cid}

    found = await eventually(settled, "the comments, the vote and both files recorded")
    return {"tag": tag, "badge": badge, "dm": dm, "room": room, **found}


def _export_in(archive: bytes) -> tuple[dict[str, Any], str]:
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        names = zipped.namelist()
        exported = json.loads(zipped.read(next(n for n in names if n.endswith("export.json"))))
        summary = zipped.read(next(n for n in names if n.endswith("README.md"))).decode()
    return exported, summary


async def test_a_member_exports_everything_about_them_and_nothing_of_others(
    stack: LocalStack, platform: Platform, user: MatrixUser, other: MatrixUser, admin: MatrixUser
) -> None:
    life = await _life_in_the_territory(stack, platform, user, other, admin)
    tag = life["tag"]

    # Outside a DM the bot does not answer with personal data.
    room_reply = await user.command(life["room"], "!me export")
    assert "direct message" in body(room_reply), body(room_reply)

    reply = await user.command(life["dm"], "!me export")
    assert "export follows as a file" in body(reply), body(reply)
    file_event = await user.wait_for(
        life["dm"],
        lambda e: e.get("sender") == user.bot and e["content"].get("msgtype") == "m.file",
        timeout=30,
    )
    assert file_event["content"]["body"].endswith(".zip")
    exported, summary = _export_in(
        await download_media(stack.synapse.url, user, file_event["content"]["url"])
    )

    assert exported["user_id"] == user.user_id and exported["territory"] == "dk"
    badge = next(b for b in exported["badges"] if b["badge_slug"] == life["badge"])
    assert badge["signed_credential"].count(".") == 2  # a compact JWS
    assert badge["credential"]["credentialSubject"]
    course = next(e for e in exported["enrollments"] if e["course_slug"] == "climate-basics")
    assert course["lessons_done"] == 3 and len(course["answers"]) == 1
    comment = next(c for c in exported["comments"] if c["body"] == f"mine-{tag}")
    assert [r["body"] for r in comment["revisions"]] == [f"mine-first-{tag}"]
    assert len(exported["votes"]) == 1 and exported["votes"][0]["value"] == 1
    assert [f["cid"] for f in exported["files"]] == [life["my_cid"]]
    assert any(a["action"] == "badge.awarded" for a in exported["audit"])
    assert life["badge"] in summary and f"mine-{tag}" in summary and life["my_cid"] in summary

    raw = json.dumps(exported)
    assert other.user_id not in raw  # nothing of the other member: not their id ...
    assert f"theirs-{tag}" not in raw and life["their_cid"] not in raw  # ... nor what they wrote

    # The same over the HTTP API, for the member themself.
    token = await user.openid_token()
    url = f"{platform.config.public_url}/api/me/export"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200
            over_http = await resp.json()
        async with session.get(url) as resp:
            assert resp.status == 401
        async with session.get(url, headers={"Authorization": "Bearer forged"}) as resp:
            assert resp.status == 401
    assert over_http["user_id"] == user.user_id
    assert {b["badge_slug"] for b in over_http["badges"]} == {
        b["badge_slug"] for b in exported["badges"]
    }

    # Both exports are in the audit log, shown by the CLI.
    done, out = await _unityplan(
        stack, "audit", "--user", user.user_id, "--action", "personal_data.", "--json"
    )
    assert done == 0, out
    vias = [json.loads(line)["details"]["via"] for line in out.splitlines() if line.startswith("{")]
    assert "chat" in vias and "api" in vias


async def test_a_member_who_asks_to_be_forgotten_is_forgotten(
    stack: LocalStack, platform: Platform, user: MatrixUser, other: MatrixUser, admin: MatrixUser
) -> None:
    life = await _life_in_the_territory(stack, platform, user, other, admin)
    tag, dm = life["tag"], life["dm"]
    issued = await platform.credentials.issue(
        (await platform.awards.current(user.user_id, life["badge"])).credential_id  # type: ignore[union-attr]
    )
    assert issued is not None
    token = issued[2]

    asked = await user.command(dm, "!me forget")
    assert "cannot be undone" in body(asked), body(asked)
    word = body(asked).split("!me forget ", 1)[1].split()[0]
    wrong = await user.command(dm, "!me forget not-the-word")
    assert "nothing was erased" in body(wrong), body(wrong)
    assert await platform.awards.holds(user.user_id, life["badge"])

    # The homeserver's admin API is configured (a homeserver admin's token): the account goes too.
    localpart = f"hsadmin-{tag}"
    await stack.synapse.register_user(localpart, "hs-admin-pw", admin=True)
    platform.member_data.account_eraser = SynapseAdmin(
        stack.synapse.url, await password_login(stack.synapse.url, localpart, "hs-admin-pw")
    )
    try:
        await user.send(dm, f"!me forget {word}")

        async def replied() -> str | None:
            # Read as the bot: the member's own client may be logged out by then.
            page = await platform.matrix.bot.get_messages(
                RoomID(dm), direction=PaginationDirection.BACKWARD, limit=10
            )
            texts = [str(getattr(e.content, "body", "")) for e in page.events]
            return next((t for t in texts if "has forgotten you" in t), None)

        done = await eventually(replied, "the bot's answer to the confirmed !me forget")
    finally:
        platform.member_data.account_eraser = None
    assert "cannot erase" in done and "being deactivated" in done, done

    async def deactivated() -> bool:
        async with aiohttp.ClientSession() as session:
            async with session.get(
                f"{stack.synapse.url}/_matrix/client/v3/account/whoami",
                headers={"Authorization": f"Bearer {user.client.access_token}"},
            ) as resp:
                return resp.status == 401  # deactivation logs every device out

    await eventually(deactivated, "the member's Matrix account deactivated")

    # No row of the territory names the member any more, nor holds what they wrote.
    schema = territory_schema("dk")
    conn = await asyncpg.connect(stack.postgres.dsn())
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = $1", schema
            )
            if r["tablename"] not in OPERATIONAL
        ]
        for table in tables:
            for needle in (user.user_id, f"mine-{tag}", f"mine-first-{tag}", f"notes-{tag}"):
                found = await conn.fetchval(
                    f"SELECT count(*) FROM {schema}.{table} t WHERE strpos(t::text, $1) > 0",
                    needle,
                )
                assert found == 0, f"{table} still holds {needle}"

        async def shared_rows_erased() -> bool:
            # The shared rows follow the erasure's commit (they may be on another server).
            for table in ("users", "audit_log"):
                found = await conn.fetchval(
                    f"SELECT count(*) FROM global.{table} t WHERE strpos(t::text, $1) > 0",
                    user.user_id,
                )
                if found:
                    return False
            return True

        await eventually(shared_rows_erased, "global.users and the audit log no longer name them")
        erasure = await conn.fetchrow(
            """SELECT actor, details FROM global.audit_log
               WHERE territory_code = 'dk' AND action = 'member.erased'
               ORDER BY occurred_at DESC LIMIT 1"""
        )
        assert erasure is not None and erasure["actor"].startswith("former-member-")
        # The other member is untouched.
        theirs = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.forum_comments WHERE author = $1 AND body = $2",
            other.user_id,
            f"theirs-{tag}",
        )
        assert theirs == 1
    finally:
        await conn.close()
    assert await platform.awards.holds(other.user_id, life["badge"])
    assert not await platform.awards.holds(user.user_id, life["badge"])

    # Their credential no longer verifies, and its public record no longer names them.
    verified = await platform.credentials.verify(token)
    assert not verified.valid and any("revoked" in r for r in verified.reasons), verified
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{platform.config.public_url}/api/badges/verify", json={"credential": token}
        ) as resp:
            assert (await resp.json())["valid"] is False

    # The file only they uploaded is unpinned; the other member's stays.
    async def unpinned() -> bool:
        return not await platform.ipfs.is_pinned(life["my_cid"])

    await eventually(unpinned, "the member's own file unpinned")
    assert await platform.ipfs.is_pinned(life["their_cid"])

    # Their message is redacted in the room (the bot has the power there).
    async def redacted() -> bool:
        await other.sync(timeout_ms=0)
        response = await other.client.room_get_event(life["room"], life["comment"].matrix_event_id)
        event = getattr(response, "event", None)
        return event is not None and not getattr(event, "body", None)

    await eventually(redacted, "the member's comment redacted in its room")

    # The erasure is listed by the CLI, under the pseudonym.
    code, out = await _unityplan(stack, "audit", "--action", "member.erased", "--limit", "1")
    assert code == 0 and "member.erased by former-member-" in out, out


async def test_the_retention_purge_removes_exactly_what_is_older_than_the_setting(
    stack: LocalStack, platform: Platform, admin: MatrixUser
) -> None:
    """Audit entries, comments' text and quiz answers 29, 31 and 45 days old; with 30-day
    settings the purge leaves exactly the 29-day-old ones."""
    tag = uuid.uuid4().hex[:6]
    schema = territory_schema("dk")
    spec = parse_course_file(DEMO_COURSE.read_text("utf-8"))
    if await platform.course_repo.latest_version(spec.slug) is None:
        await platform.courses.import_course(spec, actor=admin.user_id, source="test")
    topic = await platform.forum_service.create_topic(f"Old {tag}", admin.user_id)
    ages = [29, 31, 45]
    conn = await asyncpg.connect(stack.postgres.dsn())
    try:
        await conn.execute(
            """INSERT INTO global.audit_log (territory_code, actor, action, occurred_at, details)
               SELECT 'dk', 'retention-test', 'test.' || age, now() - make_interval(days => age),
                      jsonb_build_object('tag', $1::text)
               FROM unnest($2::int[]) AS age""",
            tag,
            ages,
        )
        await conn.execute(
            f"""INSERT INTO {schema}.forum_comments (topic_id, author, body, source, created_at)
                SELECT $1, 'retention-test', $2 || '-' || age, 'api',
                       now() - make_interval(days => age)
                FROM unnest($3::int[]) AS age""",
            topic.id,
            tag,
            ages,
        )
        course_id = await conn.fetchval(
            f"SELECT id FROM {schema}.courses WHERE slug = 'climate-basics' ORDER BY version DESC"
        )
        enrollment = await conn.fetchval(
            f"""INSERT INTO {schema}.enrollments (user_id, course_id, course_slug)
                VALUES ($1, $2, 'climate-basics') RETURNING id""",
            f"@retention-{tag}:dk.localhost",
            course_id,
        )
        await conn.execute(
            f"""INSERT INTO {schema}.quiz_answers
                    (enrollment_id, attempt, position, choice, correct, answered_at)
                SELECT $1, 1, age, 1, true, now() - make_interval(days => age)
                FROM unnest($2::int[]) AS age""",
            enrollment,
            ages,
        )
        # Handled homeserver events go after a week, whatever the settings.
        await conn.execute(
            f"""INSERT INTO {schema}.as_inbox
                    (event_id, homeserver, txn_id, seq, event, status, handled_at)
                SELECT '$retention-' || $1 || '-' || age, 'test', 'retention', 0, '{{}}', 'done',
                       now() - make_interval(days => age)
                FROM unnest(ARRAY[6, 8]) AS age""",
            tag,
        )
        done, out = await _unityplan(
            stack,
            "territory",
            "settings",
            "dk",
            "audit_retention_days=30",
            "comment_retention_days=30",
            "answer_retention_days=30",
        )
        assert done == 0, out

        async def purged() -> tuple[list[str], list[str], list[int]] | None:
            audit = await conn.fetch(
                "SELECT action FROM global.audit_log WHERE details->>'tag' = $1", tag
            )
            comments = await conn.fetch(
                f"""SELECT body FROM {schema}.forum_comments WHERE topic_id = $1
                    AND body <> '' ORDER BY id""",
                topic.id,
            )
            answers = await conn.fetch(
                f"SELECT position FROM {schema}.quiz_answers WHERE enrollment_id = $1",
                enrollment,
            )
            left = (
                [r["action"] for r in audit],
                [r["body"] for r in comments],
                [r["position"] for r in answers],
            )
            return left if left == (["test.29"], [f"{tag}-29"], [29]) else None

        await eventually(purged, "everything older than 30 days purged, the rest kept")
        handled = await conn.fetch(
            f"SELECT event_id FROM {schema}.as_inbox WHERE event_id LIKE $1", f"$retention-{tag}-%"
        )
        assert [r["event_id"] for r in handled] == [f"$retention-{tag}-6"]
        # The purged comments keep their rows (replies and files keep their place), not their text.
        rows = await conn.fetchval(
            f"SELECT count(*) FROM {schema}.forum_comments WHERE topic_id = $1", topic.id
        )
        assert rows == 3
        metrics = await _metrics(platform)
        for what in ("audit", "comment", "answer", "handled"):
            assert f'unityplan_retention_purged_total{{what="{what}"}}' in metrics
    finally:
        await _unityplan(
            stack,
            "territory",
            "settings",
            "dk",
            "audit_retention_days=365",
            "comment_retention_days=0",
            "answer_retention_days=0",
        )
        await conn.close()


async def _metrics(platform: Platform) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(platform.config.appservice.address + "/metrics") as resp:
            return await resp.text()
