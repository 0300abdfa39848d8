"""`unityplan dev` as a user runs it: stack.json appears, a demo user gets !help answered,
SIGTERM stops every process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import psutil
from nio import AsyncClient, JoinError, LoginResponse, RoomCreateResponse, RoomMessageNotice

STARTUP_TIMEOUT = 180


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


async def test_unityplan_dev_runs_answers_and_stops() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-dev-e2e-"))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        "dev",
        "--data-dir",
        str(data_dir),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "UNITYPLAN_DEV_DIR": "/nonexistent"},  # --data-dir wins
    )
    stack_json = data_dir / "stack.json"
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not stack_json.exists():
            assert process.returncode is None, "unityplan dev exited early"
            assert time.monotonic() < deadline, "stack.json did not appear"
            await asyncio.sleep(0.2)
        info = json.loads(stack_json.read_text())
        for key in (
            "homeserver_url",
            "server_name",
            "bot_user_id",
            "appservice_url",
            "api_url",
            "config_path",
            "nats_url",
            "ipfs_api_url",
            "demo_users",
            "territories",
        ):
            assert key in info, key
        assert {u["role"] for u in info["demo_users"]} == {"admin", "member"}
        assert Path(info["config_path"]).is_file()
        children = _descendants(process.pid)
        names = " ".join(p.name() + " " + " ".join(p.cmdline()[:4]) for p in children)
        for piece in ("postgres", "nats-server", "ipfs", "synapse.app.homeserver"):
            assert piece in names, piece

        member = next(u for u in info["demo_users"] if u["role"] == "member")
        client = AsyncClient(info["homeserver_url"], member["user_id"])
        try:
            assert isinstance(await client.login(member["password"]), LoginResponse)
            created = await client.room_create(invite=[info["bot_user_id"]], is_direct=True)
            assert isinstance(created, RoomCreateResponse)
            reply = await _help_reply(client, created.room_id, info["bot_user_id"])
            assert "!territory info" in reply
            # The demo room is gated by the demo course's badge, which a new member lacks.
            demo = info["demo"]
            refused = await client.join(demo["gated_room_alias"])
            assert isinstance(refused, JoinError) and refused.status_code == "M_FORBIDDEN"
            assert f"requires the badge {demo['badge']}" in refused.message
            assert f"!course enroll {demo['course']}" in refused.message
            # The demo forum topic is a room anyone may join.
            joined = await client.join(demo["forum_topic_alias"])
            assert not isinstance(joined, JoinError), joined
        finally:
            await client.close()

        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 60)
        assert process.returncode == 0
        _, alive = psutil.wait_procs(children, timeout=10)
        assert alive == [], [p.cmdline() for p in alive]
        assert not stack_json.exists()
        assert (data_dir / "logs" / "postgres.log").exists()
        assert (data_dir / "logs" / "nats.log").exists()
        assert (data_dir / "logs" / "ipfs.log").exists()
        assert (data_dir / "synapse" / "homeserver.log").exists()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for child in children:
            if child.is_running():
                child.kill()
        for leftover in psutil.process_iter(["cmdline"]):  # started before `children` was read
            if str(data_dir) in " ".join(leftover.info["cmdline"] or ()):
                leftover.kill()
        shutil.rmtree(data_dir, ignore_errors=True)


async def _help_reply(client: AsyncClient, room_id: str, bot: str) -> str:
    since = None
    deadline = time.monotonic() + 60
    sent = False
    while time.monotonic() < deadline:
        response = await client.sync(timeout=1000, since=since)
        since = response.next_batch
        room = client.rooms.get(room_id)
        if not sent and room is not None and bot in room.users:
            await client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "!help"}
            )
            sent = True
        joined = response.rooms.join.get(room_id)
        for event in joined.timeline.events if joined else []:
            if isinstance(event, RoomMessageNotice) and event.sender == bot:
                return event.body
    raise TimeoutError("no !help reply from the bot")
