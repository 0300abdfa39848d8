"""`python -m bench media`: a room file until its pinned CID is recorded, against a direct IPFS add.

On one local stack alice creates a forum topic (``platform.forum_service.create_topic``) and joins
its room. Then, for each size (100 KB, then 5 MB), interleaved N times (in an order that
alternates):

- ours:   alice uploads a file (``%PDF-1.4`` + random bytes) to the homeserver and sends an
          ``m.file`` event with it into the topic room; time from just before the upload until
          ``platform.media.upload_by_event(event_id)`` returns the recorded upload (polled every
          10 ms). The media bridge in between: appservice transaction, durable queue, worker
          download from the homeserver, type sniffing, IPFS add + pin, database rows.
- direct: a direct add + pin of *other* random bytes of the same size to the same IPFS node,
          through the same client library the bridge uses (``IpfsClient`` → aioipfs
          ``core.add_bytes(pin=True)``), awaited: the floor.

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

from nio import JoinResponse, RoomSendResponse, UploadResponse

from appservice.app import Platform
from bridges.media.ipfs_client import IpfsClient

from .environment import Environment, running_environment
from .report import table
from .roundtrip import progress
from .stats import Ratio, Summary

KB = 1024
MB = 1024 * 1024
SMALL = 100 * KB
LARGE = 5 * MB
SIZE_NAMES = {SMALL: "100k", LARGE: "5m"}
SIZE_TEXTS = {SMALL: "100 KB", LARGE: "5 MB"}
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
    warmup: int = 1  # iterations per size run first and discarded
    timeout_s: float = 60.0

    def runs_of(self, size: int) -> int:
        return self.runs if size == SMALL else self.runs_large


@dataclass
class Samples:
    ours: list[float] = field(default_factory=list)  # ms, upload start -> upload row recorded
    upload: list[float] = field(default_factory=list)  # ms, the homeserver upload part of ours
    direct: list[float] = field(default_factory=list)  # ms, one direct add + pin


@dataclass
class MediaResult:
    options: MediaOptions
    samples: dict[int, Samples] = field(
        default_factory=lambda: {size: Samples() for size in (SMALL, LARGE)}
    )
    verified: int = 0  # recorded CIDs checked against a direct add of the same bytes
    error: str | None = None

    def as_text(self) -> str:
        rows: list[tuple[str, str, Summary | None]] = []
        ratios: dict[str, Ratio | None] = {}
        rates: list[str] = []
        for size, samples in self.samples.items():
            name, text = SIZE_NAMES[size], SIZE_TEXTS[size]
            ours, upload, direct = (
                Summary.of(samples.ours),
                Summary.of(samples.upload),
                Summary.of(samples.direct),
            )
            rows += [
                (f"ours-{name}", "room file -> CID recorded", ours),
                (f"  upload-{name}", "  of it: upload to Synapse", upload),
                (f"direct-{name}", "direct add + pin, same node", direct),
            ]
            # padded alike: the table pads ratio names to 15 characters only
            ratios[f"ours/direct-{name}".ljust(16)] = Ratio.of(ours, direct)
            if ours is not None and direct is not None:
                rates.append(
                    f"{text} at p50: ours {_mb_per_s(size, ours.p50):.1f} MB/s, "
                    f"direct {_mb_per_s(size, direct.p50):.1f} MB/s"
                )
        options = self.options
        text = table(
            f"Room files to IPFS on one local stack ({os.cpu_count()} CPUs): "
            f"{options.runs} iterations at 100 KB and {options.runs_large} at 5 MB, "
            f"interleaved, after {options.warmup} warm-up each, times in ms",
            rows,
            ratios,
        )
        if rates:
            text += "\n\n" + "\n".join(rates)
        text += f"\nrecorded CIDs equal to a direct add of the same bytes: {self.verified}"
        if self.error:
            text += f"\n\nFAILED: {self.error}"
        return text


def _mb_per_s(size: int, ms: float) -> float:
    return size / MB / (ms / 1000) if ms > 0 else 0.0


def _platform(env: Environment) -> Platform:
    platform = env.stack.platform
    assert platform is not None
    return platform


def _document(size: int) -> bytes:
    """A file of exactly ``size`` bytes that sniffs as a PDF; random, so every one has its CID."""
    return PDF_HEADER + os.urandom(size - len(PDF_HEADER))


async def _setup(env: Environment) -> str:
    platform = _platform(env)
    topic = await platform.forum_service.create_topic(
        f"Bench media {secrets.token_hex(3)}", env.alice.user_id
    )
    if not topic.matrix_room_id:
        raise RuntimeError(f"topic {topic.id} has no room")
    room_id = str(topic.matrix_room_id)
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
    env: Environment, room_id: str, data: bytes, samples: Samples | None
) -> tuple[float, str]:
    """Upload and send ``data`` as alice; ms until the upload is recorded, and its CID."""
    platform = _platform(env)
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
    while (recorded := await platform.media.upload_by_event(str(sent.event_id))) is None:
        await asyncio.sleep(POLL_INTERVAL_S)
    stored = time.perf_counter()
    if recorded.size != len(data):
        raise MediaFailed(f"ours: {sent.event_id} recorded {recorded.size} bytes, sent {len(data)}")
    if samples is not None:
        samples.upload.append((upload_done - started) * 1000)
    return (stored - started) * 1000, recorded.cid


async def _ours(
    env: Environment,
    ipfs: IpfsClient,
    room_id: str,
    size: int,
    timeout_s: float,
    samples: Samples | None,
) -> float:
    data = _document(size)
    elapsed_ms, cid = await _within("ours", timeout_s, _room_file(env, room_id, data, samples))
    # Outside the timing: the same bytes, added directly, must give the CID the bridge recorded.
    direct_cid = await _add("ours (the check's direct add)", ipfs, data, timeout_s)
    if cid != direct_cid:
        raise MediaFailed(
            f"ours: the bridge recorded {cid} but a direct add of the same bytes gave {direct_cid}"
        )
    return elapsed_ms


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
        order = ("ours", "direct") if iteration % 2 == 0 else ("direct", "ours")
        for kind in order:
            try:
                if kind == "ours":
                    elapsed_ms = await _ours(
                        env, ipfs, room_id, size, options.timeout_s, samples if kept else None
                    )
                    if kept:
                        result.verified += 1
                else:
                    elapsed_ms = await _direct(ipfs, size, options.timeout_s)
            except MediaFailed as exc:
                raise MediaFailed(f"{SIZE_TEXTS[size]}, iteration {iteration + 1}, {exc}") from None
            if kept:
                (samples.ours if kind == "ours" else samples.direct).append(elapsed_ms)


async def run(options: MediaOptions) -> MediaResult:
    result = MediaResult(options)
    with tempfile.TemporaryDirectory(prefix="unityplan-bench-", ignore_cleanup_errors=True) as tmp:
        progress("Starting the local stack...")
        async with running_environment(Path(tmp)) as env:
            room_id = await _setup(env)
            ipfs = IpfsClient(env.stack.ipfs.api_url)
            await ipfs.start()
            try:
                for size in (SMALL, LARGE):
                    await _measure_size(env, ipfs, room_id, size, options, result)
            except MediaFailed as exc:
                result.error = str(exc)
            finally:
                await ipfs.stop()
            progress("Stopping the stack...")
    return result
