"""`python -m bench gate`: how fast the gate reacts, against plain delivery, on one local stack.

Interleaved, N times:
- knock:  bob (holds the badge) knocks on the gated room; time until his sync shows the bot's invite
          (then he declines it, to knock again next time);
- kick:   carol (@gatecrasher; lacks the badge; a server admin, so Synapse's module lets her through) joins after
          alice's invite; time from her join until her sync shows the bot's kick;
- plain:  alice sends a message, bob sees it via sync.
Then the in-process decision time: N fresh decisions (database) and N cached ones.
"""

from __future__ import annotations

import asyncio
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from nio import JoinResponse, RoomCreateResponse, RoomSendResponse

from .environment import Environment, running_environment
from .report import table
from .roundtrip import RoundTripFailed, RoundTripOptions, progress
from .stats import Ratio, Summary
from .synced_user import SyncedUser, event_key, invite_key, membership_key

KINDS = ("knock", "kick", "plain")
DESCRIPTIONS = {
    "knock": "knock -> invite seen",
    "kick": "unauthorised join -> kick seen",
    "plain": "alice -> bob via sync",
}
BADGE = "bench-gate"


@dataclass
class GateResult:
    options: RoundTripOptions
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    decide_fresh_ms: list[float] = field(default_factory=list)
    decide_cached_ms: list[float] = field(default_factory=list)
    error: str | None = None

    def as_text(self) -> str:
        summaries = {kind: Summary.of(self.samples[kind]) for kind in KINDS}
        text = table(
            f"Gate reactions on one local stack: {self.options.runs} interleaved iterations "
            f"after {self.options.warmup} warm-up, times in ms",
            [(kind, DESCRIPTIONS[kind], summaries[kind]) for kind in KINDS],
            {
                "knock/plain": Ratio.of(summaries["knock"], summaries["plain"]),
                "kick/plain": Ratio.of(summaries["kick"], summaries["plain"]),
            },
            self.error,
        )
        fresh, cached = Summary.of(self.decide_fresh_ms), Summary.of(self.decide_cached_ms)
        if fresh and cached:
            text += (
                f"\n\ndecision per check: fresh (database) p50 {fresh.p50 * 1000:.0f} µs, "
                f"p95 {fresh.p95 * 1000:.0f} µs; cached p50 {cached.p50 * 1000:.1f} µs, "
                f"p95 {cached.p95 * 1000:.1f} µs (n={fresh.n})"
            )
        return text


async def _within(awaitable: asyncio.Future[float] | object, timeout: float, what: str) -> float:
    try:
        return await asyncio.wait_for(awaitable, timeout)  # type: ignore[arg-type]
    except TimeoutError:
        raise RoundTripFailed(f"{what}: nothing within {timeout:g} s") from None


async def _setup(env: Environment) -> tuple[str, SyncedUser]:
    stack, platform = env.stack, env.stack.platform
    assert platform is not None
    admin = next(u.user_id for u in stack.demo_users if u.role == "admin")
    await platform.badges.define(BADGE, "Bench gate", valid_days=None, requires=(), actor=admin)
    await platform.badges.award(env.bob.user_id, BADGE, by=admin, source="issuer")
    created = await env.alice.client.room_create(
        name="Gated",
        invite=[env.bot_user_id],
        power_level_override={"users": {env.bot_user_id: 50}},
    )
    if not isinstance(created, RoomCreateResponse):
        raise RuntimeError(f"creating the gated room failed: {created}")
    room = created.room_id
    for _ in range(100):
        if await env.alice.has_joined(room, env.bot_user_id):
            break
        await asyncio.sleep(0.1)
    from mautrix.types import RoomID

    await platform.gate.require(RoomID(room), (BADGE,), "all", actor=env.alice.user_id)
    password = secrets.token_urlsafe(12)
    carol_id = await stack.synapse.register_user("gatecrasher", password, admin=True)
    carol = SyncedUser(stack.synapse.url, carol_id)
    await carol.login(password)
    await carol.start_syncing()
    return room, carol


async def _knock(env: Environment, room: str, timeout: float) -> float:
    env.bob.forget(invite_key(room))
    started = time.perf_counter()
    await env.bob.client.room_knock(room)
    arrived = await _within(env.bob.arrival_of(invite_key(room)), timeout, "knock")
    await env.bob.client.room_leave(room)  # decline, to knock again
    return (arrived - started) * 1000


async def _kick(env: Environment, carol: SyncedUser, room: str, timeout: float) -> float:
    await env.alice.client.room_invite(room, carol.user_id)
    carol.forget(membership_key(room, carol.user_id, "leave"))
    joined = await carol.client.join(room)
    if not isinstance(joined, JoinResponse):
        raise RoundTripFailed(f"kick: carol could not join: {joined}")
    started = time.perf_counter()
    arrived = await _within(
        carol.arrival_of(membership_key(room, carol.user_id, "leave")), timeout, "kick"
    )
    return (arrived - started) * 1000


async def _plain(env: Environment, timeout: float) -> float:
    started = time.perf_counter()
    sent = await env.alice.client.room_send(
        env.bob_room, "m.room.message", {"msgtype": "m.text", "body": "hello bob"}
    )
    if not isinstance(sent, RoomSendResponse):
        raise RoundTripFailed(f"plain: sending failed: {sent}")
    arrived = await _within(env.bob.arrival_of(event_key(sent.event_id)), timeout, "plain")
    return (arrived - started) * 1000


async def run(options: RoundTripOptions) -> GateResult:
    result = GateResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack...")
        async with running_environment(Path(tmp)) as env:
            room, carol = await _setup(env)
            try:
                progress(f"Measuring {options.warmup} warm-up + {options.runs} iterations...")
                for i in range(options.warmup + options.runs):
                    samples = {
                        "knock": await _knock(env, room, options.timeout_s),
                        "kick": await _kick(env, carol, room, options.timeout_s),
                        "plain": await _plain(env, options.timeout_s),
                    }
                    if i >= options.warmup:
                        for kind, value in samples.items():
                            result.samples[kind].append(value)
                platform = env.stack.platform
                assert platform is not None
                for _ in range(options.runs):
                    started = time.perf_counter()
                    await platform.gate.decide(carol.user_id, room, fresh=True)
                    result.decide_fresh_ms.append((time.perf_counter() - started) * 1000)
                    started = time.perf_counter()
                    await platform.gate.decide(carol.user_id, room)
                    result.decide_cached_ms.append((time.perf_counter() - started) * 1000)
            except RoundTripFailed as exc:
                result.error = str(exc)
            finally:
                await carol.close()
            progress("Stopping the stack...")
    return result
