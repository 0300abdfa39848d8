"""`python -m bench federation`: the forum bridge across two federating territories.

One two-territory stack (dk and ca, the homeservers federating over TLS on loopback, each
territory's appservice a supervised `unityplan run`). alice is on dk, carol on ca. alice creates a
dk topic over dk's forum API; both join its room (carol over federation). alice also has a plain
room with carol, which no appservice is in. Then, interleaved N times (in an order that rotates):

- seen_by_ca:  alice's message in the topic room until carol's sync (on ca) brings it;
- as_comment:  the same kind of message until dk's API lists it as a comment;
- ca_comment:  carol's message in the topic room (sent on ca) until dk's API lists it;
- plain:       alice's message in the plain room until carol's sync brings it: plain federated
               delivery, the floor.
"""

from __future__ import annotations

import secrets
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from nio import JoinResponse

from appservice.stack.local import LocalStack, StackOptions

from .environment import room_with, synced_user
from .forum import ForumClient, Topic, message_to_comment, timed
from .report import table
from .roundtrip import (
    Measurement,
    Probe,
    RoundTripFailed,
    RoundTripOptions,
    measure_interleaved,
    progress,
    round_trip,
)
from .stats import Ratio, Summary
from .synced_user import event_key

KINDS = ("seen_by_ca", "as_comment", "ca_comment", "plain")
DESCRIPTIONS = {
    "seen_by_ca": "dk topic message -> ca sync",
    "as_comment": "dk topic message -> dk API",
    "ca_comment": "ca topic message -> dk API",
    "plain": "dk -> ca, plain room (floor)",
}


@dataclass
class FederationResult:
    options: RoundTripOptions
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    error: str | None = None

    def as_text(self) -> str:
        summaries = {kind: Summary.of(self.samples[kind]) for kind in KINDS}
        return table(
            f"Two federating territories: {self.options.runs} interleaved iterations after "
            f"{self.options.warmup} warm-up, times in ms",
            [(kind, DESCRIPTIONS[kind], summaries[kind]) for kind in KINDS],
            {f"{kind}/plain": Ratio.of(summaries[kind], summaries["plain"]) for kind in KINDS[:-1]},
            self.error,
        )


async def run(options: RoundTripOptions) -> FederationResult:
    result = FederationResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting two federating territories...")
        async with AsyncExitStack() as cleanup:
            stack = LocalStack(
                StackOptions(
                    data_dir=Path(tmp) / "stack",
                    fast=True,
                    appservice_process=True,
                    more_territories=(("ca", "Canada"),),
                    config_overrides={"limits": {"api_writes_per_minute": 0}},
                )
            )
            await stack.start()  # stops what it started if it fails
            cleanup.push_async_callback(stack.stop)
            dk, ca = stack.territory("dk"), stack.territory("ca")
            alice = await synced_user(dk.synapse, "alice", cleanup)
            carol = await synced_user(ca.synapse, "carol", cleanup)
            session = await cleanup.enter_async_context(aiohttp.ClientSession())
            assert dk.config is not None
            api = ForumClient(session, dk.config.public_url, alice.client.access_token)
            created = await api.create_topic(f"Bench federation {secrets.token_hex(3)}")
            topic = Topic(api, int(created["id"]), str(created["room_id"]))
            for user in (alice, carol):
                joined = await user.client.join(str(created["alias"]))
                if not isinstance(joined, JoinResponse):
                    raise RuntimeError(f"{user.user_id} could not join the topic: {joined}")
            plain_room = await room_with(alice, carol.user_id, joiner=carol)
            timeout = options.timeout_s
            in_topic = Probe("seen_by_ca", topic.room_id, "hello ca", carol, event_key)
            plain = Probe("plain", plain_room, "hello carol", carol, event_key)
            probes: list[tuple[str, Measurement]] = [
                ("seen_by_ca", lambda: round_trip(alice, in_topic, timeout)),
                (
                    "as_comment",
                    lambda: timed("as_comment", timeout, message_to_comment(alice, topic)),
                ),
                (
                    "ca_comment",
                    lambda: timed("ca_comment", timeout, message_to_comment(carol, topic)),
                ),
                ("plain", lambda: round_trip(alice, plain, timeout)),
            ]
            progress(f"Measuring {options.warmup} warm-up + {options.runs} iterations...")
            try:
                await measure_interleaved(probes, options.warmup, options.runs, result.samples)
            except RoundTripFailed as exc:
                result.error = str(exc)
            progress("Stopping the stack...")
    return result
