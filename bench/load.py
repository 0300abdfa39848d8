"""`python -m bench load`: command round trips while many users talk at once, against the echo bot.

On one local stack with the echo appservice beside it, U users (default 50) each get a room with
UnityPlan's bot and a room with the echo bot, and all of them join one forum topic room. Then for
``--seconds`` (default 60) every user, at once, repeats: ``!help`` to UnityPlan's bot (ours),
``!help`` to the echo bot (floor), in an order that alternates, and a message into the topic room
(which the forum bridge turns into a comment), with a random pause of up to ``--pause`` seconds
between rounds. Both bots face the same load at the same time; the ratio ours/floor is what
UnityPlan's handling adds under it.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import tempfile
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import aiohttp
from nio import JoinResponse, RoomSendResponse

from .environment import Environment, room_with, running_environment, synced_user
from .forum import ForumClient
from .report import table
from .roundtrip import Probe, RoundTripFailed, progress, round_trip
from .stats import Ratio, Summary
from .synced_user import SyncedUser, reply_key


@dataclass(frozen=True)
class LoadOptions:
    users: int = 50
    seconds: float = 60.0
    pause_s: float = 1.0
    timeout_s: float = 30.0


@dataclass
class LoadResult:
    options: LoadOptions
    ours_ms: list[float] = field(default_factory=list)
    floor_ms: list[float] = field(default_factory=list)
    topic_messages: int = 0
    seconds: float = 0.0
    error: str | None = None

    def as_text(self) -> str:
        ours, floor = Summary.of(self.ours_ms), Summary.of(self.floor_ms)
        o = self.options
        text = table(
            f"{o.users} users at once for {self.seconds:.0f} s on one local stack "
            f"(pause up to {o.pause_s:g} s between rounds), times in ms",
            [
                ("ours", "!help -> UnityPlan bot", ours),
                ("floor", "!help -> echo appservice", floor),
            ],
            {"ours/floor": Ratio.of(ours, floor)},
            self.error,
        )
        rate = (len(self.ours_ms) + len(self.floor_ms) + self.topic_messages) / (self.seconds or 1)
        return text + (
            f"\n\n{self.topic_messages} topic messages besides; {rate:.0f} messages/s in all"
        )

    def as_json(self) -> dict[str, object]:
        ours, floor = Summary.of(self.ours_ms), Summary.of(self.floor_ms)
        ratio = Ratio.of(ours, floor)
        return {
            "benchmark": "load",
            "users": self.options.users,
            "seconds": self.seconds,
            "ours_ms": ours.as_dict() if ours else None,
            "floor_ms": floor.as_dict() if floor else None,
            "ratio": ratio.as_dict() if ratio else None,
            "topic_messages": self.topic_messages,
            "error": self.error,
        }


@dataclass(frozen=True)
class Member:
    user: SyncedUser
    ours: Probe
    floor: Probe


async def _members(
    env: Environment, cleanup: AsyncExitStack, count: int, topic_room: str
) -> list[Member]:
    async def one(n: int) -> Member:
        user = await synced_user(env.stack.synapse, f"load{n}_{secrets.token_hex(2)}", cleanup)
        bot_room = await room_with(user, env.bot_user_id)
        echo_room = await room_with(user, env.echo_user_id)
        joined = await user.client.join(topic_room)
        if not isinstance(joined, JoinResponse):
            raise RuntimeError(f"{user.user_id} could not join the topic room: {joined}")
        return Member(
            user,
            Probe("ours", bot_room, "!help", user, partial(reply_key, env.bot_user_id)),
            Probe("floor", echo_room, "!help", user, partial(reply_key, env.echo_user_id)),
        )

    members: list[Member] = []
    for start in range(0, count, 10):  # ten at a time: the homeserver's registration is slow
        members += await asyncio.gather(*(one(n) for n in range(start, min(start + 10, count))))
        progress(f"  {len(members)}/{count} users ready")
    return members


async def _talk(
    member: Member, topic_room: str, until: float, result: LoadResult, options: LoadOptions
) -> None:
    rng = random.Random(member.user.user_id)
    round_number = 0
    await asyncio.sleep(rng.uniform(0, options.pause_s))  # not all in step
    while time.perf_counter() < until:
        order = (member.ours, member.floor) if round_number % 2 else (member.floor, member.ours)
        for probe in order:
            elapsed = await round_trip(member.user, probe, options.timeout_s)
            (result.ours_ms if probe.kind == "ours" else result.floor_ms).append(elapsed)
        sent = await member.user.client.room_send(
            topic_room, "m.room.message", {"msgtype": "m.text", "body": f"load {round_number}"}
        )
        if not isinstance(sent, RoomSendResponse):
            raise RoundTripFailed(f"topic message failed: {sent}")
        result.topic_messages += 1
        round_number += 1
        await asyncio.sleep(rng.uniform(0, options.pause_s))


async def run(options: LoadOptions) -> LoadResult:
    result = LoadResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack and the echo appservice...")
        async with (
            running_environment(Path(tmp)) as env,
            AsyncExitStack() as cleanup,
            aiohttp.ClientSession() as session,
        ):
            platform = env.stack.first.platform
            assert platform is not None
            api = ForumClient(session, platform.config.public_url, env.alice.client.access_token)
            topic = await api.create_topic(f"Bench load {secrets.token_hex(3)}")
            progress(f"Creating {options.users} users, each with two bot rooms...")
            members = await _members(env, cleanup, options.users, str(topic["room_id"]))
            progress(f"Talking for {options.seconds:.0f} s...")
            started = time.perf_counter()
            until = started + options.seconds
            try:
                await asyncio.gather(
                    *(_talk(m, str(topic["room_id"]), until, result, options) for m in members)
                )
            except RoundTripFailed as exc:
                result.error = str(exc)
            result.seconds = time.perf_counter() - started
            progress("Stopping the stack...")
    return result
