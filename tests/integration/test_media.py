"""Room files on the real IPFS node (js-ipfs, Kubo RPC API) through the real homeserver."""

from __future__ import annotations

import asyncio
import io
import os
import time
import uuid
import zlib
from typing import Any

import aiohttp
from nio import UploadResponse

from appservice.app import Platform
from appservice.stack.local import LocalStack
from tests.matrix_user import MatrixUser, body


def _png(payload: bytes) -> bytes:
    """A small valid PNG whose pixels carry ``payload`` (so every test has its own CID)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        )

    width = len(payload)
    header = width.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    raw = b"\x00" + payload
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


async def _topic_room(platform: Platform, user: MatrixUser) -> tuple[int, str]:
    topic = await platform.forum_service.create_topic(f"Files {uuid.uuid4().hex[:6]}", user.user_id)
    assert topic.matrix_room_id
    await user.client.join(topic.matrix_room_id)
    return topic.id, topic.matrix_room_id


async def _post_file(
    user: MatrixUser,
    room: str,
    data: bytes,
    name: str,
    mime: str,
    msgtype: str = "m.image",
    declared_size: int | None = None,
) -> str:
    upload, _ = await user.client.upload(
        io.BytesIO(data), content_type=mime, filename=name, filesize=len(data)
    )
    assert isinstance(upload, UploadResponse), upload
    response = await user.client.room_send(
        room,
        "m.room.message",
        {
            "msgtype": msgtype,
            "body": name,
            "url": upload.content_uri,
            "info": {
                "mimetype": mime,
                "size": len(data) if declared_size is None else declared_size,
            },
        },
    )
    return str(response.event_id)  # type: ignore[union-attr]


async def _stored(platform: Platform, event_id: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        upload = await platform.media.upload_by_event(event_id)
        if upload is not None:
            return upload
        assert time.monotonic() < deadline, f"{event_id} was not stored within {timeout} s"
        await asyncio.sleep(0.2)


async def test_image_is_pinned_recorded_and_served(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    topic_id, room = await _topic_room(platform, user)
    image = _png(os.urandom(64))
    event_id = await _post_file(user, room, image, "chart.png", "image/png")
    upload = await _stored(platform, event_id)
    assert upload.mime == "image/png" and upload.size == len(image)
    assert upload.filename == "chart.png" and upload.uploader == user.user_id
    assert await platform.ipfs.is_pinned(upload.cid)
    assert await platform.ipfs.cat(upload.cid) == image
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{platform.config.public_url}/api/media/{upload.cid}") as resp:
            assert resp.status == 200 and resp.content_type == "image/png"
            assert 'filename="chart.png"' in resp.headers["Content-Disposition"]
            assert await resp.read() == image
        async with session.get(
            f"{platform.config.public_url}/api/media/QmUnknownCid1234567890abcdefghijklmnopqrstuvwx"
        ) as resp:
            assert resp.status == 404
        async with session.get(
            f"{platform.config.public_url}/api/forums/topics/{topic_id}/comments"
        ) as resp:
            comments = (await resp.json())["comments"]
    [comment] = [c for c in comments if c["event_id"] == event_id]
    assert comment["attachments"] == [
        {
            "cid": upload.cid,
            "filename": "chart.png",
            "mime": "image/png",
            "size": len(image),
            "url": f"/api/media/{upload.cid}",
        }
    ]


async def test_a_file_waits_while_ipfs_is_down(
    stack: LocalStack, platform: Platform, user: MatrixUser
) -> None:
    _, room = await _topic_room(platform, user)
    document = b"%PDF-1.4\n" + os.urandom(2000)
    await stack.ipfs.stop()
    try:
        event_id = await _post_file(
            user, room, document, "minutes.pdf", "application/pdf", msgtype="m.file"
        )
        await asyncio.sleep(3)
        assert await platform.media.upload_by_event(event_id) is None
        assert await platform.media.queued() >= 1
    finally:
        await stack.ipfs.start()
    upload = await _stored(platform, event_id, timeout=90)
    assert upload.mime == "application/pdf"
    assert await platform.ipfs.cat(upload.cid) == document


async def test_oversize_file_gets_a_notice_and_nothing_is_stored(
    platform: Platform, user: MatrixUser
) -> None:
    _, room = await _topic_room(platform, user)
    big = os.urandom(1024 * 1024 + 10)  # the test stack keeps up to 1 MB
    event_id = await _post_file(
        user, room, big, "huge.bin", "application/octet-stream", msgtype="m.file"
    )
    notice = await user.dm_from_bot(lambda e: "huge.bin" in body(e) and "larger than" in body(e))
    assert "1.0 MB" in body(notice)
    assert await platform.media.upload_by_event(event_id) is None


async def test_same_content_twice_is_stored_once_and_unpinned_after_both_redactions(
    platform: Platform, user: MatrixUser
) -> None:
    _, room = await _topic_room(platform, user)
    image = _png(os.urandom(48))
    first = await _post_file(user, room, image, "a.png", "image/png")
    second = await _post_file(user, room, image, "b.png", "image/png")
    one, two = await _stored(platform, first), await _stored(platform, second)
    assert one.cid == two.cid and one.id != two.id
    await user.client.room_redact(room, first)
    await user.command(room, "!help")  # the redaction was handled before this reply
    assert await platform.ipfs.is_pinned(one.cid)  # still used by the second upload
    await user.client.room_redact(room, second)
    await user.command(room, "!help")
    assert not await platform.ipfs.is_pinned(one.cid)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{platform.config.public_url}/api/media/{one.cid}") as resp:
            assert resp.status == 404


async def test_a_file_that_lies_about_its_size_is_cut_off_at_the_limit(
    platform: Platform, user: MatrixUser
) -> None:
    """The size in the event is the uploader's word: the download stops at the limit anyway."""
    _, room = await _topic_room(platform, user)
    big = os.urandom(1024 * 1024 + 5000)
    event_id = await _post_file(
        user, room, big, "liar.bin", "application/octet-stream", msgtype="m.file", declared_size=10
    )
    notice = await user.dm_from_bot(lambda e: "liar.bin" in body(e) and "larger than" in body(e))
    assert notice
    await asyncio.sleep(1)
    assert await platform.media.upload_by_event(event_id) is None
