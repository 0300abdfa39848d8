"""The bot in encrypted rooms, driven by a member whose client encrypts (matrix-nio with vodozemac,
independent of the bot's python-olm): commands decrypted and answered encrypted, lessons with
materials as encrypted files, notices in encrypted DMs, and keys for a member's later device."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio
from mautrix.types import RoomID, UserID
from nio import JoinError, RoomPutStateError
from nio.crypto.attachments import decrypt_attachment

from appservice.app import Platform
from appservice.stack.local import LocalStack
from tests.e2ee_user import E2EEUser
from tests.integration.test_courses import _cli_import, _course_yaml, _slug
from tests.matrix_user import MatrixUser, body, download_media
from tests.waiting import eventually


@pytest_asyncio.fixture
async def member(stack: LocalStack) -> AsyncIterator[E2EEUser]:
    user = await E2EEUser.create_encrypted(stack)
    yield user
    await user.close()


def _readable(event: dict) -> bool:  # type: ignore[type-arg]
    """Sent encrypted and decrypted by the member's device."""
    return bool(event.get("decrypted"))


async def test_commands_in_an_encrypted_dm_are_answered_encrypted(
    stack: LocalStack, platform: Platform, member: E2EEUser
) -> None:
    assert platform.matrix.encryption is not None, "the bot's encryption did not start"
    dm = await member.encrypted_room_with_bot()
    reply = await member.command(dm, "!help", timeout=30)
    assert _readable(reply), reply
    assert "Commands you can use here" in body(reply), body(reply)
    listed = await member.command(dm, "!badge list", timeout=30)
    assert _readable(listed) and "no badges yet" in body(listed), body(listed)


async def test_an_encrypted_group_room(
    stack: LocalStack, platform: Platform, member: E2EEUser, user: MatrixUser
) -> None:
    room = await member.encrypted_room_with_bot(direct=False)
    reply = await member.command(room, "!help", timeout=30)
    assert _readable(reply) and "Commands" in body(reply), body(reply)


async def test_the_bots_device_is_signed_by_its_own_cross_signing_keys(
    stack: LocalStack, platform: Platform, member: E2EEUser
) -> None:
    encryption = platform.matrix.encryption
    assert encryption is not None
    answer = await _query_keys(stack, member, platform.config.bot_user_id)
    bot = platform.config.bot_user_id
    device = answer["device_keys"][bot][encryption.device_id]
    self_signing = answer["self_signing_keys"][bot]
    (ssk_id,) = self_signing["keys"]
    assert ssk_id in device["signatures"][bot], device["signatures"]
    assert bot in answer["master_keys"]
    assert platform.config.recovery_key_path.stat().st_mode & 0o077 == 0  # a secret, 0600


async def _query_keys(stack: LocalStack, user: MatrixUser, who: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{stack.synapse.url}/_matrix/client/v3/keys/query",
            json={"device_keys": {who: []}},
            headers={"Authorization": f"Bearer {user.client.access_token}"},
        ) as resp:
            assert resp.status == 200
            return dict(await resp.json())


async def test_a_lesson_and_its_material_arrive_encrypted(
    stack: LocalStack, platform: Platform, member: E2EEUser, tmp_path: Path
) -> None:
    slides = b"%PDF-1.4\nencrypted slides\n" + uuid.uuid4().bytes
    (tmp_path / "slides").mkdir()
    (tmp_path / "slides" / "carbon.pdf").write_bytes(slides)
    slug = _slug("secret-lessons")
    data = json.loads(_course_yaml(slug, slug))
    data["lessons"][0]["materials"] = ["slides/carbon.pdf"]
    (tmp_path / f"{slug}.yaml").write_text(json.dumps(data))
    code, _, err = await _cli_import(stack, tmp_path / f"{slug}.yaml")
    assert code == 0, err

    dm = await member.encrypted_room_with_bot()
    await member.command(dm, f"!course enroll {slug}", timeout=30)
    lesson = await member.command(dm, f"!course next {slug}", timeout=30)
    assert _readable(lesson) and "Why it matters" in body(lesson), body(lesson)

    def is_material(e: dict[str, Any]) -> bool:
        content = e.get("content", {})
        return content.get("msgtype") == "m.file" and content.get("body") == "carbon.pdf"

    delivered = await member.wait_for(dm, is_material, timeout=30)
    assert _readable(delivered)
    file = delivered["content"]["file"]  # an encrypted attachment, not a plain url
    assert "url" not in delivered["content"]
    ciphertext = await download_media(stack.synapse.url, member, file["url"])
    assert slides not in ciphertext
    plain = decrypt_attachment(ciphertext, file["key"]["k"], file["hashes"]["sha256"], file["iv"])
    assert plain == slides


async def test_the_bot_keeps_reading_after_a_restart(stack: LocalStack, member: E2EEUser) -> None:
    dm = await member.encrypted_room_with_bot()
    first = await member.command(dm, "!help", timeout=30)
    assert _readable(first)
    await stack.restart_platform()
    after = await member.command(dm, "!badge list", timeout=60)
    assert _readable(after) and "badges" in body(after), body(after)


async def test_a_badge_notice_in_an_encrypted_dm_is_readable(
    stack: LocalStack, platform: Platform, member: E2EEUser, admin: MatrixUser
) -> None:
    dm = await member.encrypted_room_with_bot()  # the member's DM with the bot, encrypted
    badge = _slug("quiet-helper")
    admin_dm = await admin.room_with_bot()
    await admin.command(admin_dm, f"!badge define {badge} Quiet helper")
    await admin.command(admin_dm, f"!badge award {member.user_id} {badge}")
    notice = await member.wait_for(dm, lambda e: badge in body(e), timeout=30)
    assert _readable(notice) and "You earned the badge" in body(notice), body(notice)


async def test_gating_works_in_an_encrypted_room(
    stack: LocalStack, platform: Platform, member: E2EEUser, user: MatrixUser
) -> None:
    """Membership is never encrypted: the gate decides as anywhere else."""
    room = await member.encrypted_room_with_bot(direct=False, moderator_bot=True)
    badge = _slug("cohort")
    await platform.badges.define(
        badge, "Cohort", valid_days=None, requires=(), actor=member.user_id
    )
    done = await member.command(room, f"!gate require {badge}", timeout=30)
    assert _readable(done) and badge in body(done), body(done)
    joined = await user.client.join(room)
    assert isinstance(joined, JoinError), joined  # knock-only now
    knocked = await user.client.room_knock(room, reason="let me in")
    assert not isinstance(knocked, JoinError), knocked
    refusal = await user.dm_from_bot(lambda e: "Your knock on" in body(e) and badge in body(e))
    assert f"requires the badge {badge}" in body(refusal), body(refusal)


async def test_a_members_new_device_reads_on_and_its_key_requests_are_answered(
    stack: LocalStack, platform: Platform, member: E2EEUser
) -> None:
    """A device the member adds later reads the bot's next answers (the bot's session follows
    the member's device list), and its requests for the keys of earlier answers are answered:
    the bot forwards them to that device. (nio, like Element, then keeps only keys forwarded by
    the member's own devices; a client that trusts the bot's device can import them.)"""
    dm = await member.encrypted_room_with_bot()
    first = await member.command(dm, "!help", timeout=30)
    assert _readable(first)
    second = await E2EEUser.login_device(stack, member.user_id, member.password)
    try:
        encryption = platform.matrix.encryption
        assert encryption is not None
        shared_before = encryption.keys_shared
        sealed = [
            e
            for e in await second.history(dm)
            if e.get("sender") == member.bot and e.get("type") == "m.room.encrypted"
        ]
        assert sealed, "the new device sees the earlier answer, sealed"
        for event in sealed:
            await second.request_keys(event, member.bot, encryption.device_id)

        async def answered() -> bool:
            await second.sync(timeout_ms=200)
            return encryption.keys_shared > shared_before

        await eventually(answered, "the bot forwarded the requested key to the new device")

        async def known() -> bool:
            return await encryption.knows_device(member.user_id, second.client.device_id)

        await eventually(known, "the bot learned of the member's new device")

        later = await member.command(dm, "!territory info", timeout=30)
        assert _readable(later)
        seen = await second.wait_for(dm, lambda e: e.get("event_id") == later["event_id"])
        assert _readable(seen) and "dk" in body(seen), seen
    finally:
        await second.close()


async def test_an_encrypted_topic_room_is_no_longer_bridged(
    stack: LocalStack, platform: Platform
) -> None:
    """A moderator switches encryption on in a topic's room: the bot says (encrypted) that the
    room is no longer bridged, and the forum API no longer sends comments into it."""
    demo = next(u for u in stack.demo_users if u.role == "admin")
    moderator = await E2EEUser.login_device(stack, demo.user_id, demo.password)
    try:
        topic = await platform.forum_service.create_topic(
            f"Private {uuid.uuid4().hex[:6]}", moderator.user_id
        )
        assert topic.matrix_room_id
        room = topic.matrix_room_id
        await moderator.client.join(room)
        # Topic rooms keep encryption at the bot's level (100); the bot hands it over here.
        levels = await platform.matrix.bot.get_power_levels(RoomID(room), ignore_cache=True)
        await platform.effects.power_levels(
            room, {"users": {**levels.users, moderator.user_id: 100}}
        )

        async def promoted() -> bool:
            fresh = await platform.matrix.bot.get_power_levels(RoomID(room), ignore_cache=True)
            return fresh.get_user_level(UserID(moderator.user_id)) == 100

        await eventually(promoted, "the moderator raised to 100 in the topic room")
        sent = await moderator.client.room_put_state(
            room, "m.room.encryption", {"algorithm": "m.megolm.v1.aes-sha2"}
        )
        assert not isinstance(sent, RoomPutStateError), sent
        notice = await moderator.wait_for(
            room, lambda e: "no longer reach the public forum" in body(e), timeout=30
        )
        assert notice["sender"] == moderator.bot and _readable(notice)
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{platform.config.public_url}/api/forums/topics/{topic.id}/comments",
                json={"body": "from the web"},
                headers={"Authorization": f"Bearer {await moderator.openid_token()}"},
            ) as resp:
                assert resp.status == 409, await resp.text()
                assert "encrypted" in (await resp.json())["error"]
    finally:
        await moderator.close()
