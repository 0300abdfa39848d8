"""`python -m bench media`: a room file until its pinned CID is recorded, against the floor.

On one local stack (the appservice in its own process, as in production; homeserver and territory
limits raised to 200 MB) alice creates a forum topic over the API and joins its room. Then, for each size (100 KB, 5 MB,
100 MB), interleaved N times (in an order that rotates):

- ours:   alice uploads a file (``%PDF-1.4`` + random bytes) to the homeserver and sends an
          ``m.file`` event with it into the topic room; time from just before the upload until
          the territory's ``file_uploads`` row for the event exists (polled every 10 ms). The media bridge in between: appservice transaction, durable queue, the file
          streamed from the homeserver into the IPFS node (add + pin), type sniffing, database
          rows. The appservice process's RSS is sampled meanwhile: its peak over the start is
          what storing the file held in memory.
- floor:  what any bot that keeps room files on IPFS must do at least: alice uploads the file and
          sends it to bob, bob's sync brings the event, bob downloads the file (authenticated
          media), and the bytes are added + pinned directly.
- direct: a direct add + pin of other random bytes of the same size to the same IPFS node,
          through the client library the bridge's other paths use (``IpfsClient`` → aioipfs).

After each ``ours`` measurement (outside the timing) the exact bytes alice sent are added directly
as well; the same bytes give the same CID, so the CID the bridge recorded must equal it.
"""

from __future__ import annotations

import asyncio
import io
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncpg
import psutil
from nio import JoinResponse, RoomSendResponse, UploadResponse

from bridges.media.ipfs_client import IpfsClient
from db.territory import territory_schema

from .environment import Environment, running_environment
from .forum import ForumClient
from .report import table
from .roundtrip import progress
from .stats import Ratio, Summary
from .synced_user import event_key

KB = 1024
MB = 1024 * 1024
SMALL = 100 * KB
LARGE = 5 * MB
HUGE = 100 * MB
SIZES = (SMALL, LARGE, HUGE)
SIZE_NAMES = {SMALL: "100k", LARGE: "5m", HUGE: "100m"}
SIZE_TEXTS = {SMALL: "100 KB", LARGE: "5 MB", HUGE: "100 MB"}
RSS_SAMPLE_S = 0.02
PDF_HEADER = b"%PDF-1.4\n"
MIME = "application/pdf"
POLL_INTERVAL_S = 0.010

T = TypeVar("T")


class MediaFailed(RuntimeError):
    """A file was not stored in time, could not be sent, or was recorded with the wrong CID."""


@dataclass(frozen=True)
class MediaOptions:
    runs: int = 20  # measured iterations with 100 KB files
    runs_large: int = 5  # measured iterations with 5 MB files
    runs_huge: int = 3  # measured iterations with 100 MB files
    warmup: int = 1  # iterations per size run first and discarded
    timeout_s: float = 120.0

    def runs_of(self, size: int) -> int:
        return {SMALL: self.runs, LARGE: self.runs_large}.get(size, self.runs_huge)


@dataclass
class Samples:
    ours: list[float] = field(default_factory=list)  # ms, upload start -> upload row recorded
    upload: list[float] = field(default_factory=list)  # ms, the homeserver upload part of ours
    direct: list[float] = field(default_factory=list)  # ms, one direct add + pin
    # ms, the floor: alice uploads and sends the file to bob, bob's sync brings it, bob downloads
    # it, and the bytes are added + pinned directly
    floor: list[float] = field(default_factory=list)
    rss_growth_mb: list[float] = field(default_factory=list)  # peak RSS over the start, per ours


@dataclass
class MediaResult:
    options: MediaOptions
    samples: dict[int, Samples] = field(default_factory=lambda: {size: Samples() for size in SIZES})
    verified: int = 0  # recorded CIDs checked against a direct add of the same bytes
    error: str | None = None

    def as_text(self) -> str:
        rows: list[tuple[str, str, Summary | None]] = []
        ratios: dict[str, Ratio | None] = {}
        rates: list[str] = []
        for size, samples in self.samples.items():
            name, text = SIZE_NAMES[size], SIZE_TEXTS[size]
            ours, upload, direct, floor = (
                Summary.of(samples.ours),
                Summary.of(samples.upload),
                Summary.of(samples.direct),
                Summary.of(samples.floor),
            )
            rows += [
                (f"ours-{name}", "room file -> CID recorded", ours),
                (f"  upload-{name}", "  of it: upload to Synapse", upload),
                (f"floor-{name}", "delivery + download + add", floor),
                (f"direct-{name}", "direct add + pin, same node", direct),
            ]
            # padded alike: the table pads ratio names to 15 characters only
            ratios[f"ours/floor-{name}".ljust(16)] = Ratio.of(ours, floor)
            ratios[f"ours/direct-{name}".ljust(16)] = Ratio.of(ours, direct)
            if ours is not None and direct is not None:
                rates.append(
                    f"{text} at p50: ours {_mb_per_s(size, ours.p50):.1f} MB/s, "
                    f"direct {_mb_per_s(size, direct.p50):.1f} MB/s"
                )
            if samples.rss_growth_mb:
                rates.append(
                    f"{text}: the appservice's peak RSS over its start while it stored "
                    f"the file: {max(samples.rss_growth_mb):+.1f} MB at most"
                )
        options = self.options
        text = table(
            f"Room files to IPFS on one local stack ({os.cpu_count()} CPUs): "
            f"{options.runs} iterations at 100 KB, {options.runs_large} at 5 MB and "
            f"{options.runs_huge} at 100 MB, interleaved, after {options.warmup} warm-up each, "
            "times in ms",
            rows,
            ratios,
        )
        if rates:
            text += "\n\n" + "\n".join(rates)
        text += f"\nrecorded CIDs equal to a direct add of the same bytes: {self.verified}"
        if self.error:
            text += f"\n\nFAILED: {self.error}"
        return text

    def as_json(self) -> dict[str, object]:
        sizes: dict[str, object] = {}
        for size, samples in self.samples.items():
            summaries = {
                kind: Summary.of(getattr(samples, kind))
                for kind in ("ours", "upload", "floor", "direct")
            }
            ratio = Ratio.of(summaries["ours"], summaries["floor"])
            sizes[SIZE_NAMES[size]] = {
                **{k: v.as_dict() if v else None for k, v in summaries.items()},
                "ours_over_floor": ratio.as_dict() if ratio else None,
                "rss_growth_mb": max(samples.rss_growth_mb, default=None),
            }
        return {
            "benchmark": "media",
            "sizes": sizes,
            "verified": self.verified,
            "error": self.error,
        }


def _mb_per_s(size: int, ms: float) -> float:
    return size / MB / (ms / 1000) if ms > 0 else 0.0


def _document(size: int) -> bytes:
    """A file of exactly ``size`` bytes that sniffs as a PDF; random, so every one has its CID."""
    return PDF_HEADER + os.urandom(size - len(PDF_HEADER))


@dataclass
class Bridge:
    """The appservice as the benchmark sees it: its own process, its database rows."""

    process: psutil.Process
    db: asyncpg.Connection
    schema: str

    async def upload_of(self, event_id: str) -> tuple[str, int] | None:
        row = await self.db.fetchrow(
            f"SELECT cid, size FROM {self.schema}.file_uploads WHERE matrix_event_id = $1",
            event_id,
        )
        return (str(row["cid"]), int(row["size"])) if row else None


async def _setup(env: Environment, session: aiohttp.ClientSession) -> str:
    info = env.stack.info()
    api = ForumClient(session, str(info["api_url"]), env.alice.client.access_token)
    topic = await api.create_topic(f"Bench media {secrets.token_hex(3)}")
    room_id = str(topic["room_id"])
    joined = await env.alice.client.join(room_id)
    if not isinstance(joined, JoinResponse):
        raise RuntimeError(f"{env.alice.user_id} could not join the topic room: {joined}")
    return room_id


async def _within(what: str, timeout_s: float, steps: Awaitable[T]) -> T:
    try:
        async with asyncio.timeout(timeout_s):
            return await steps
    except TimeoutError:
        raise MediaFailed(f"{what}: not done within {timeout_s:g} s") from None


async def _room_file(
    env: Environment, bridge: Bridge, room_id: str, data: bytes, samples: Samples | None
) -> tuple[float, str]:
    """Upload and send ``data`` as alice; ms until the upload is recorded, and its CID."""
    client = env.alice.client
    filename = f"bench-{secrets.token_hex(4)}.pdf"
    started = time.perf_counter()
    uploaded, _ = await client.upload(
        io.BytesIO(data), content_type=MIME, filename=filename, filesize=len(data)
    )
    upload_done = time.perf_counter()
    if not isinstance(uploaded, UploadResponse):
        raise MediaFailed(f"ours: the upload to the homeserver failed: {uploaded}")
    content = {
        "msgtype": "m.file",
        "body": filename,
        "filename": filename,
        "url": uploaded.content_uri,
        "info": {"mimetype": MIME, "size": len(data)},
    }
    sent = await client.room_send(room_id, "m.room.message", content)
    if not isinstance(sent, RoomSendResponse):
        raise MediaFailed(f"ours: sending the file event failed: {sent}")
    while (recorded := await bridge.upload_of(str(sent.event_id))) is None:
        await asyncio.sleep(POLL_INTERVAL_S)
    stored = time.perf_counter()
    cid, size = recorded
    if size != len(data):
        raise MediaFailed(f"ours: {sent.event_id} recorded {size} bytes, sent {len(data)}")
    if samples is not None:
        samples.upload.append((upload_done - started) * 1000)
    return (stored - started) * 1000, cid


async def _ours(
    env: Environment,
    bridge: Bridge,
    ipfs: IpfsClient,
    room_id: str,
    size: int,
    timeout_s: float,
    samples: Samples | None,
) -> float:
    data = _document(size)
    process = bridge.process
    start_rss = peak_rss = process.memory_info().rss

    async def sample() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, process.memory_info().rss)
            await asyncio.sleep(RSS_SAMPLE_S)

    sampler = asyncio.create_task(sample())
    try:
        elapsed_ms, cid = await _within(
            "ours", timeout_s, _room_file(env, bridge, room_id, data, samples)
        )
    finally:
        sampler.cancel()
    if samples is not None:
        samples.rss_growth_mb.append((peak_rss - start_rss) / MB)
    # Outside the timing: the same bytes, added directly, must give the CID the bridge recorded.
    direct_cid = await _add("ours (the check's direct add)", ipfs, data, timeout_s)
    if cid != direct_cid:
        raise MediaFailed(
            f"ours: the bridge recorded {cid} but a direct add of the same bytes gave {direct_cid}"
        )
    return elapsed_ms


async def _floor(env: Environment, ipfs: IpfsClient, size: int, timeout_s: float) -> float:
    """Plain delivery of the file to bob, bob's download of it, and a direct add of the bytes."""

    async def steps() -> None:
        data = _document(size)
        client = env.alice.client
        uploaded, _ = await client.upload(
            io.BytesIO(data), content_type=MIME, filename="floor.pdf", filesize=len(data)
        )
        if not isinstance(uploaded, UploadResponse):
            raise MediaFailed(f"floor: the upload to the homeserver failed: {uploaded}")
        content = {
            "msgtype": "m.file",
            "body": "floor.pdf",
            "url": uploaded.content_uri,
            "info": {"mimetype": MIME, "size": len(data)},
        }
        sent = await client.room_send(env.bob_room, "m.room.message", content)
        if not isinstance(sent, RoomSendResponse):
            raise MediaFailed(f"floor: sending the file event failed: {sent}")
        await env.bob.arrival_of(event_key(str(sent.event_id)))
        body = await _download(env, str(uploaded.content_uri))
        if len(body) != len(data):
            raise MediaFailed(f"floor: bob downloaded {len(body)} bytes of {len(data)}")
        await _add("floor", ipfs, body, timeout_s)

    started = time.perf_counter()
    await _within("floor", timeout_s, steps())
    return (time.perf_counter() - started) * 1000


async def _download(env: Environment, mxc: str) -> bytes:
    """What bob's client does with a file: the authenticated media download."""
    server, media_id = mxc.removeprefix("mxc://").split("/")
    url = f"{env.stack.synapse.url}/_matrix/client/v1/media/download/{server}/{media_id}"
    headers = {"Authorization": f"Bearer {env.bob.client.access_token}"}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        if resp.status != 200:
            raise MediaFailed(f"floor: bob's download answered {resp.status}")
        return await resp.read()


async def _direct(ipfs: IpfsClient, size: int, timeout_s: float) -> float:
    data = _document(size)
    started = time.perf_counter()
    await _add("direct", ipfs, data, timeout_s)
    return (time.perf_counter() - started) * 1000


async def _add(what: str, ipfs: IpfsClient, data: bytes, timeout_s: float) -> str:
    """Add and pin ``data`` on the node directly; its CID."""
    try:
        return await ipfs.add(data, timeout=timeout_s)
    except TimeoutError:
        raise MediaFailed(f"{what}: not done within {timeout_s:g} s") from None
    except Exception as exc:  # the node refused: aioipfs' APIError, aiohttp's errors
        raise MediaFailed(f"{what}: {type(exc).__name__}: {exc}") from None


async def _measure_size(
    env: Environment,
    bridge: Bridge,
    ipfs: IpfsClient,
    room_id: str,
    size: int,
    options: MediaOptions,
    result: MediaResult,
) -> None:
    samples = result.samples[size]
    runs = options.runs_of(size)
    progress(f"Measuring {SIZE_TEXTS[size]}: {options.warmup} warm-up + {runs} iterations...")
    for iteration in range(options.warmup + runs):
        kept = iteration >= options.warmup
        kinds = ["ours", "floor", "direct"]
        shift = iteration % len(kinds)
        for kind in kinds[shift:] + kinds[:shift]:
            try:
                if kind == "ours":
                    elapsed_ms = await _ours(
                        env,
                        bridge,
                        ipfs,
                        room_id,
                        size,
                        options.timeout_s,
                        samples if kept else None,
                    )
                    if kept:
                        result.verified += 1
                elif kind == "floor":
                    elapsed_ms = await _floor(env, ipfs, size, options.timeout_s)
                else:
                    elapsed_ms = await _direct(ipfs, size, options.timeout_s)
            except MediaFailed as exc:
                raise MediaFailed(f"{SIZE_TEXTS[size]}, iteration {iteration + 1}, {exc}") from None
            if kept:
                getattr(samples, kind).append(elapsed_ms)


async def run(options: MediaOptions) -> MediaResult:
    result = MediaResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack...")
        async with (
            running_environment(
                Path(tmp), max_file_mb=2 * HUGE // MB, appservice_process=True
            ) as env,
            aiohttp.ClientSession() as session,
        ):
            assert env.stack.appservice is not None and env.stack.appservice.pid
            db = await asyncpg.connect(env.stack.database_url)
            bridge = Bridge(
                psutil.Process(env.stack.appservice.pid), db, territory_schema(env.stack.first.code)
            )
            room_id = await _setup(env, session)
            ipfs = IpfsClient(env.stack.ipfs.api_url)
            await ipfs.start()
            try:
                for size in SIZES:
                    await _measure_size(env, bridge, ipfs, room_id, size, options, result)
            except MediaFailed as exc:
                result.error = str(exc)
            finally:
                await ipfs.stop()
                await db.close()
            progress("Stopping the stack...")
    return result
