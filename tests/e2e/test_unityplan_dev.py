"""`unityplan dev` as a user runs it: stack.json appears, a demo user gets !help answered,
SIGTERM stops every process."""

from __future__ import annotations

import asyncio
import contextlib
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


async def _start_dev(
    data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> asyncio.subprocess.Process:
    """`unityplan dev --data-dir DATA_DIR ARGS`, once its stack.json has appeared. Its output
    goes nowhere: a pipe nobody reads would stop it once full."""
    stack_json = data_dir / "stack.json"
    stack_json.unlink(missing_ok=True)
    dev = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        "dev",
        "--data-dir",
        str(data_dir),
        *args,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not stack_json.exists():
        assert dev.returncode is None, "unityplan dev exited early"
        assert time.monotonic() < deadline, "stack.json did not appear"
        await asyncio.sleep(0.2)
    return dev


async def _stop_dev(dev: asyncio.subprocess.Process, children: list[psutil.Process]) -> None:
    """SIGTERM, as Ctrl-C: it exits 0 and no process of the stack is left."""
    dev.send_signal(signal.SIGTERM)
    await asyncio.wait_for(dev.wait(), 60)
    assert dev.returncode == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == [], [p.cmdline() for p in alive]


async def _clean_up(
    devs: list[asyncio.subprocess.Process], children: list[psutil.Process], data_dir: Path
) -> None:
    """Whatever a failed test left: the dev processes, their children, anything in data_dir."""
    for dev in devs:
        if dev.returncode is None:
            dev.kill()
            await dev.wait()
    for child in children:
        if child.is_running():
            child.kill()
    for leftover in psutil.process_iter(["cmdline"]):  # started before `children` was read
        if str(data_dir) in " ".join(leftover.info["cmdline"] or ()):
            leftover.kill()
    shutil.rmtree(data_dir, ignore_errors=True)


async def test_unityplan_dev_runs_answers_and_stops() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-dev-e2e-"))
    stack_json = data_dir / "stack.json"
    devs: list[asyncio.subprocess.Process] = []
    children: list[psutil.Process] = []
    try:
        # --data-dir wins over the environment's folder.
        process = await _start_dev(data_dir, env={"UNITYPLAN_DEV_DIR": "/nonexistent"})
        devs.append(process)
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

            # The appservice is a supervised `unityplan run` child: killed, it comes back.
            pid = info["appservice_pid"]
            assert info["territories"][0]["appservice_pid"] == pid
            child = psutil.Process(pid)
            assert child.cmdline()[-1] == "run" and child.ppid() == process.pid
            child.kill()
            restarted = await _new_pid(stack_json, pid)
            assert psutil.Process(restarted).is_running()
            assert "!territory info" in await _help_reply(
                client, created.room_id, info["bot_user_id"], send=True
            )
        finally:
            await client.close()

        await _stop_dev(process, children)
        assert not stack_json.exists()
        assert (data_dir / "logs" / "postgres.log").exists()
        assert (data_dir / "logs" / "nats.log").exists()
        assert (data_dir / "logs" / "ipfs.log").exists()
        assert (data_dir / "synapse" / "homeserver.log").exists()
    finally:
        await _clean_up(devs, children, data_dir)


async def _new_pid(stack_json: Path, old: int, timeout: float = 60) -> int:
    """The appservice pid in stack.json once it is another one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid = json.loads(stack_json.read_text()).get("appservice_pid")
            if pid and pid != old:
                return int(pid)
        await asyncio.sleep(0.2)
    raise TimeoutError("the appservice was not restarted")


async def _help_reply(client: AsyncClient, room_id: str, bot: str, *, send: bool = False) -> str:
    since = client.next_batch if send else None
    deadline = time.monotonic() + 60
    sent = False
    if send:
        await client.room_send(room_id, "m.room.message", {"msgtype": "m.text", "body": "!help"})
        sent = True
    while time.monotonic() < deadline:
        response = await client.sync(timeout=1000, since=since)
        since = response.next_batch
        room = client.rooms.get(room_id)
        # Joined, not only invited: a message sent before the bot's join never reaches it.
        joined_bot = room is not None and bot in room.users and bot not in room.invited_users
        if not sent and joined_bot:
            await client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": "!help"}
            )
            sent = True
        joined = response.rooms.join.get(room_id)
        for event in joined.timeline.events if joined else []:
            if isinstance(event, RoomMessageNotice) and event.sender == bot:
                return event.body
    raise TimeoutError("no !help reply from the bot")


async def test_a_killed_unityplan_dev_leaves_nothing_in_the_way() -> None:
    """SIGKILL of `unityplan dev` orphans its servers; the next start on the same folder stops
    them and comes up cleanly."""
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-dev-kill-"))
    stack_json = data_dir / "stack.json"
    processes: list[asyncio.subprocess.Process] = []
    children: list[psutil.Process] = []
    try:
        first = await _start_dev(data_dir)
        processes.append(first)
        orphans = _descendants(first.pid)
        first.kill()
        await first.wait()
        assert any(p.is_running() for p in orphans)  # what SIGKILL leaves behind
        second = await _start_dev(data_dir)
        processes.append(second)
        _, alive = psutil.wait_procs(orphans, timeout=10)
        assert alive == [], [p.cmdline() for p in alive]
        info = json.loads(stack_json.read_text())
        member = next(u for u in info["demo_users"] if u["role"] == "member")
        client = AsyncClient(info["homeserver_url"], member["user_id"])
        try:
            assert isinstance(await client.login(member["password"]), LoginResponse)
            created = await client.room_create(invite=[info["bot_user_id"]], is_direct=True)
            assert isinstance(created, RoomCreateResponse)
            assert "!help" in await _help_reply(client, created.room_id, info["bot_user_id"])
        finally:
            await client.close()
        children = _descendants(second.pid)
        await _stop_dev(second, children)
    finally:
        await _clean_up(processes, children, data_dir)


async def test_unityplan_dev_with_two_territories_federates_and_stops_cleanly() -> None:
    """`unityplan dev --territories dk,ca`: both territories in stack.json, a ca member joins the
    dk demo topic over federation and the ca bot answers its own members; SIGTERM stops it all."""
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-dev-two-"))
    stack_json = data_dir / "stack.json"
    devs: list[asyncio.subprocess.Process] = []
    children: list[psutil.Process] = []
    try:
        process = await _start_dev(data_dir, "--territories", "dk,ca")
        devs.append(process)
        info = json.loads(stack_json.read_text())
        assert [t["code"] for t in info["territories"]] == ["dk", "ca"]
        dk, ca = info["territories"]
        for territory in (dk, ca):
            for key in (
                "code",
                "name",
                "homeserver_url",
                "server_name",
                "bot_user_id",
                "appservice_url",
                "api_url",
                "config_path",
                "database_url",
                "appservice_pid",
                "demo_users",
            ):
                assert territory.get(key), (territory["code"], key)
            assert {u["role"] for u in territory["demo_users"]} == {"admin", "member"}
        # The top-level keys describe the first territory.
        assert info["homeserver_url"] == dk["homeserver_url"] and info["api_url"] == dk["api_url"]
        assert dk["server_name"] != ca["server_name"]
        assert dk["appservice_pid"] != ca["appservice_pid"]
        children = _descendants(process.pid)
        synapses = [p for p in children if "synapse.app.homeserver" in " ".join(p.cmdline())]
        assert len(synapses) == 2

        member = next(u for u in ca["demo_users"] if u["role"] == "member")
        client = AsyncClient(ca["homeserver_url"], member["user_id"])
        try:
            assert isinstance(await client.login(member["password"]), LoginResponse)
            joined = await client.join(info["demo"]["forum_topic_alias"])  # a dk room
            assert not isinstance(joined, JoinError), joined
            created = await client.room_create(invite=[ca["bot_user_id"]], is_direct=True)
            assert isinstance(created, RoomCreateResponse)
            assert "!territory info" in await _help_reply(
                client, created.room_id, ca["bot_user_id"]
            )
        finally:
            await client.close()

        await _stop_dev(process, children)
        assert not stack_json.exists()
    finally:
        await _clean_up(devs, children, data_dir)
