"""`python -m bench roundtrip`: five round trips on one local stack, measured interleaved.

- ours:  alice sends ``!help`` to UnityPlan's bot and sees its reply notice via sync;
- floor: the same against a minimal echo appservice on the same homeserver;
- plain: alice sends a text and bob sees it via sync (no appservice in the path);
- unencrypted / encrypted: carol, whose client encrypts (nio with vodozemac), sends ``!help`` to the
  bot in a plain room and in an encrypted one: the cost of the bot's end-to-end encryption.

A round trip is timed from just before ``room_send`` to the sync response that brings the matching
event: the notice replying to the sent event (ours, floor) or the sent event itself (plain). Each
iteration runs the three once, in an order that rotates, so load and warm-up spread evenly.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from importlib.metadata import version
from pathlib import Path

from nio import RoomSendResponse

from .environment import Environment, running_environment
from .stats import Ratio, Summary
from .synced_user import SyncedUser, SyncFailed, event_key, reply_key

KINDS = ("ours", "floor", "plain", "unencrypted", "encrypted")
DESCRIPTIONS = {
    "ours": "!help -> UnityPlan bot",
    "floor": "!help -> echo appservice",
    "plain": "alice -> bob via sync",
    "unencrypted": "!help -> bot, E2EE client",
    "encrypted": "same, encrypted room",
}


class RoundTripFailed(RuntimeError):
    """A round trip was not answered in time, or its message could not be sent."""


@dataclass(frozen=True)
class RoundTripOptions:
    runs: int = 50
    warmup: int = 5
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Probe:
    kind: str
    room_id: str
    body: str
    watcher: SyncedUser  # the user whose sync brings the answer
    answer_key: Callable[[str], str]  # sent event id -> the key the answer is noted under
    sender: SyncedUser | None = None  # who sends (alice when None)


@dataclass
class RoundTripResult:
    options: RoundTripOptions
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None
    synapse_version: str = field(default_factory=lambda: version("matrix-synapse"))

    def summaries(self) -> dict[str, Summary | None]:
        return {kind: Summary.of(self.samples[kind]) for kind in KINDS}

    def ratios(self) -> dict[str, Ratio | None]:
        summaries = self.summaries()
        return {
            "ours/floor": Ratio.of(summaries["ours"], summaries["floor"]),
            "ours/plain": Ratio.of(summaries["ours"], summaries["plain"]),
            "encrypted/unencrypted": Ratio.of(summaries["encrypted"], summaries["unencrypted"]),
        }


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run(options: RoundTripOptions) -> RoundTripResult:
    result = RoundTripResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack and the echo appservice...")
        async with running_environment(Path(tmp)) as env:
            progress(f"Measuring {options.warmup} warm-up + {options.runs} iterations...")
            try:
                await measure(env, options, result.samples)
            except RoundTripFailed as exc:
                result.error = str(exc)
            progress("Stopping the stack...")
    return result


def probes(env: Environment) -> list[Probe]:
    return [
        Probe(
            "ours", env.bot_room, "!help", env.alice, lambda sent: reply_key(env.bot_user_id, sent)
        ),
        Probe(
            "floor",
            env.echo_room,
            "!help",
            env.alice,
            lambda sent: reply_key(env.echo_user_id, sent),
        ),
        Probe("plain", env.bob_room, "hello bob", env.bob, event_key),
        Probe(
            "unencrypted",
            env.carol_plain_room,
            "!help",
            env.carol,
            lambda sent: reply_key(env.bot_user_id, sent),
            sender=env.carol,
        ),
        Probe(
            "encrypted",
            env.carol_encrypted_room,
            "!help",
            env.carol,
            lambda sent: reply_key(env.bot_user_id, sent),
            sender=env.carol,
        ),
    ]


async def measure(
    env: Environment,
    options: RoundTripOptions,
    samples: dict[str, list[float]],
    order: list[Probe] | None = None,
) -> None:
    """Fill ``samples`` (ms per kind) with the iterations after the warm-up ones."""
    measurements: list[tuple[str, Measurement]] = [
        (
            probe.kind,
            partial(
                round_trip,
                probe.watcher if probe.watcher is env.carol else env.alice,
                probe,
                options.timeout_s,
            ),
        )
        for probe in order or probes(env)
    ]
    await measure_interleaved(measurements, options.warmup, options.runs, samples)


Measurement = Callable[[], Awaitable[float]]


async def measure_interleaved(
    probes: list[tuple[str, Measurement]],
    warmup: int,
    runs: int,
    samples: dict[str, list[float]],
) -> None:
    """Run every measurement once per iteration, in an order that rotates; keep the ms of the
    iterations after the warm-up ones in ``samples`` by kind."""
    for iteration in range(warmup + runs):
        shift = iteration % len(probes)
        for kind, probe in probes[shift:] + probes[:shift]:
            try:
                elapsed_ms = await probe()
            except RoundTripFailed as exc:
                raise RoundTripFailed(f"iteration {iteration + 1}, {exc}") from None
            if iteration >= warmup:
                samples[kind].append(elapsed_ms)


async def round_trip(sender: SyncedUser, probe: Probe, timeout_s: float) -> float:
    content = {"msgtype": "m.text", "body": probe.body}
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            sent = await sender.client.room_send(
                probe.room_id, "m.room.message", content, ignore_unverified_devices=True
            )
            if not isinstance(sent, RoomSendResponse):
                raise RoundTripFailed(f"{probe.kind}: sending failed: {sent}")
            arrived = await probe.watcher.arrival_of(probe.answer_key(sent.event_id))
    except TimeoutError:
        raise RoundTripFailed(f"{probe.kind}: no answer within {timeout_s:g} s") from None
    except SyncFailed as exc:
        raise RoundTripFailed(f"{probe.kind}: {exc}") from None
    return (arrived - started) * 1000
