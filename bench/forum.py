"""`python -m bench forum`: the forum bridge in both directions, against plain delivery.

On one local stack alice creates a topic over the forum API; alice and bob join its room. Then,
interleaved N times (in an order that rotates):

- to_api:  alice sends a message into the topic room; time until ``GET .../comments?after=<last
           id>`` lists a comment with that event id (the API is polled every 5 ms);
- to_room: alice posts a comment over the API; time until bob's sync brings the event id the API
           answered with (the message alice's ghost sent into the room);
- plain:   alice sends a message to bob in their own room; time until bob's sync brings it.

Then the sustained ingest rate: transactions of 100 synthetic ``m.room.message`` events in the
topic room are PUT straight to the appservice, one after another, and timed from the first PUT to
the last 200 (the appservice answers only once every event is handled and committed). The topic's
comment count must grow by exactly the number of events sent.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from nio import JoinResponse, RoomSendResponse

from appservice.app import Platform

from .environment import Environment, running_environment
from .report import table
from .roundtrip import (
    Measurement,
    Probe,
    RoundTripFailed,
    measure_interleaved,
    progress,
    round_trip,
)
from .stats import Ratio, Summary
from .synced_user import SyncedUser, SyncFailed, event_key

KINDS = ("to_api", "to_room", "plain")
DESCRIPTIONS = {
    "to_api": "room message -> API comment",
    "to_room": "API comment -> bob's sync",
    "plain": "alice -> bob via sync",
}
POLL_INTERVAL_S = 0.005
EVENTS_PER_TRANSACTION = 100


class IngestFailed(RuntimeError):
    """A transaction was refused or timed out, or the comments did not grow as they should."""


@dataclass(frozen=True)
class ForumOptions:
    runs: int = 30
    warmup: int = 3
    timeout_s: float = 10.0
    transactions: int = 10


@dataclass
class Ingest:
    events: int
    seconds: float
    comments_added: int

    @property
    def rate(self) -> float:
        return self.events / self.seconds


@dataclass
class ForumResult:
    options: ForumOptions
    samples: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    ingest: Ingest | None = None
    error: str | None = None

    def as_text(self) -> str:
        summaries = {kind: Summary.of(self.samples[kind]) for kind in KINDS}
        text = table(
            f"Forum bridge on one local stack: {self.options.runs} interleaved iterations "
            f"after {self.options.warmup} warm-up, times in ms",
            [(kind, DESCRIPTIONS[kind], summaries[kind]) for kind in KINDS],
            {
                "to_api/plain": Ratio.of(summaries["to_api"], summaries["plain"]),
                "to_room/plain": Ratio.of(summaries["to_room"], summaries["plain"]),
            },
        )
        if self.ingest is not None:
            ingest = self.ingest
            text += (
                f"\n\ningest: {self.options.transactions} transactions of "
                f"{EVENTS_PER_TRANSACTION} events, {ingest.events} events in "
                f"{ingest.seconds * 1000:.0f} ms = {ingest.rate:,.0f} events/s "
                f"(comments added: {ingest.comments_added})"
            )
        if self.error:
            text += f"\n\nFAILED: {self.error}"
        return text


class ForumClient:
    """The forum HTTP API as alice uses it (her Matrix access token as the bearer token)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, token: str) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"}

    async def _call(self, method: str, path: str, expected: int, body: Any = None) -> Any:
        async with self.session.request(
            method, self.base_url + path, json=body, headers=self.headers
        ) as resp:
            answer = await resp.json()
            if resp.status != expected:
                raise RoundTripFailed(f"{method} {path}: {resp.status} {answer}")
            return answer

    async def create_topic(self, title: str) -> dict[str, Any]:
        return dict(await self._call("POST", "/api/forums/topics", 201, {"title": title}))

    async def post_comment(self, topic_id: int, body: str) -> dict[str, Any]:
        path = f"/api/forums/topics/{topic_id}/comments"
        return dict(await self._call("POST", path, 201, {"body": body}))

    async def comments_after(self, topic_id: int, after: int) -> list[dict[str, Any]]:
        path = f"/api/forums/topics/{topic_id}/comments?after={after}&limit=200"
        return list((await self._call("GET", path, 200))["comments"])


@dataclass
class Topic:
    api: ForumClient
    topic_id: int
    room_id: str
    last_id: int = 0  # the highest comment id seen so far

    def saw(self, comment_id: int) -> None:
        self.last_id = max(self.last_id, comment_id)


def _platform(env: Environment) -> Platform:
    platform = env.stack.platform
    assert platform is not None
    return platform


async def _setup(env: Environment, session: aiohttp.ClientSession) -> Topic:
    platform = _platform(env)
    token = env.alice.client.access_token
    api = ForumClient(session, platform.config.public_url, token)
    created = await api.create_topic(f"Bench forum {secrets.token_hex(3)}")
    room_id = str(created["room_id"])
    for user in (env.alice, env.bob):
        joined = await user.client.join(room_id)
        if not isinstance(joined, JoinResponse):
            raise RuntimeError(f"{user.user_id} could not join the topic room: {joined}")
    return Topic(api, int(created["id"]), room_id)


async def timed(kind: str, timeout_s: float, steps: Awaitable[float]) -> float:
    """Run ``steps`` (returning the arrival time) within the timeout; ms since the start."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s):
            arrived = await steps
    except TimeoutError:
        raise RoundTripFailed(f"{kind}: nothing within {timeout_s:g} s") from None
    except SyncFailed as exc:
        raise RoundTripFailed(f"{kind}: {exc}") from None
    return (arrived - started) * 1000


async def message_to_comment(sender: SyncedUser, topic: Topic) -> float:
    """``sender`` posts into the topic room; the time the API first lists it as a comment."""
    content = {"msgtype": "m.text", "body": f"bench message {secrets.token_hex(4)}"}
    sent = await sender.client.room_send(topic.room_id, "m.room.message", content)
    if not isinstance(sent, RoomSendResponse):
        raise RoundTripFailed(f"to_api: sending failed: {sent}")
    while True:
        comments = await topic.api.comments_after(topic.topic_id, topic.last_id)
        seen = time.perf_counter()
        for comment in comments:
            topic.saw(int(comment["id"]))
        if any(comment["event_id"] == sent.event_id for comment in comments):
            return seen
        await asyncio.sleep(POLL_INTERVAL_S)


async def _comment_to_message(env: Environment, topic: Topic) -> float:
    posted = await topic.api.post_comment(topic.topic_id, f"bench comment {secrets.token_hex(4)}")
    topic.saw(int(posted["id"]))
    if not posted.get("event_id"):
        raise RoundTripFailed(f"to_room: the comment has no event id: {posted}")
    return await env.bob.arrival_of(event_key(str(posted["event_id"])))


def _probes(env: Environment, topic: Topic, timeout_s: float) -> list[tuple[str, Measurement]]:
    plain = Probe("plain", env.bob_room, "hello bob", env.bob, event_key)
    return [
        ("to_api", lambda: timed("to_api", timeout_s, message_to_comment(env.alice, topic))),
        ("to_room", lambda: timed("to_room", timeout_s, _comment_to_message(env, topic))),
        ("plain", lambda: round_trip(env.alice, plain, timeout_s)),
    ]


def _transaction(sender: str, room_id: str, run: str, number: int) -> bytes:
    now = int(time.time() * 1000)
    events = [
        {
            "type": "m.room.message",
            "event_id": f"$bench-{run}-{number}-{n}",
            "room_id": room_id,
            "sender": sender,
            "origin_server_ts": now,
            "content": {"msgtype": "m.text", "body": f"bench ingest {number}.{n}"},
            "unsigned": {},
        }
        for n in range(EVENTS_PER_TRANSACTION)
    ]
    return json.dumps({"events": events}).encode()


async def _comment_count(platform: Platform, topic_id: int) -> int:
    schema = platform.forum.schema
    query = f"SELECT count(*) FROM {schema}.forum_comments WHERE topic_id = $1"
    return int(await platform.territory_db.fetchval(query, topic_id))


async def _put(
    session: aiohttp.ClientSession, url: str, token: str, body: bytes, timeout_s: float
) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    try:
        async with asyncio.timeout(timeout_s):
            async with session.put(url, data=body, headers=headers) as resp:
                if resp.status != 200:
                    raise IngestFailed(f"{url}: {resp.status} {await resp.text()}")
    except TimeoutError:
        raise IngestFailed(f"{url}: no answer within {timeout_s:g} s") from None


async def _ingest(
    env: Environment, session: aiohttp.ClientSession, topic: Topic, options: ForumOptions
) -> Ingest:
    platform = _platform(env)
    run = secrets.token_hex(4)
    base = f"{platform.config.appservice.address.rstrip('/')}/_matrix/app/v1/transactions"
    sender, room_id = env.alice.user_id, topic.room_id
    bodies = [
        (f"{base}/bench-{run}-{number}", _transaction(sender, room_id, run, number))
        for number in range(options.transactions)
    ]
    before = await _comment_count(platform, topic.topic_id)
    started = time.perf_counter()
    for url, body in bodies:
        await _put(session, url, platform.hs_token, body, options.timeout_s)
    seconds = time.perf_counter() - started
    added = await _comment_count(platform, topic.topic_id) - before
    return Ingest(options.transactions * EVENTS_PER_TRANSACTION, seconds, added)


async def run(options: ForumOptions) -> ForumResult:
    result = ForumResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack...")
        async with running_environment(Path(tmp)) as env, aiohttp.ClientSession() as session:
            topic = await _setup(env, session)
            try:
                progress(f"Measuring {options.warmup} warm-up + {options.runs} iterations...")
                await measure_interleaved(
                    _probes(env, topic, options.timeout_s),
                    options.warmup,
                    options.runs,
                    result.samples,
                )
                progress(f"Ingesting {options.transactions} transactions...")
                ingest = result.ingest = await _ingest(env, session, topic, options)
                if ingest.comments_added != ingest.events:
                    raise IngestFailed(
                        f"ingest: {ingest.events} events sent but the topic gained "
                        f"{ingest.comments_added} comments"
                    )
            except (RoundTripFailed, IngestFailed) as exc:
                result.error = str(exc)
            progress("Stopping the stack...")
    return result
