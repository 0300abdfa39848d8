"""The IPFS node's Kubo RPC API, through aioipfs (byteforge fork), with timeouts everywhere.

A missing CID makes ``cat`` hang on an offline node: every call here is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterable, AsyncIterator
from urllib.parse import urlsplit

import aiohttp
import aioipfs
from aioipfs.exceptions import APIError

DEFAULT_TIMEOUT = 10.0


class IpfsClient:
    def __init__(self, api_url: str) -> None:
        parts = urlsplit(api_url)
        self.api_url = api_url
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if parts.scheme == "https" else 5001)
        self._scheme = parts.scheme or "http"
        self._client: aioipfs.AsyncIPFS | None = None

    async def start(self) -> None:
        self._client = aioipfs.AsyncIPFS(
            host=self._host, port=self._port, scheme=self._scheme, read_timeout=30
        )

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    @property
    def client(self) -> aioipfs.AsyncIPFS:
        if self._client is None:
            raise RuntimeError("the IPFS client is not started")
        return self._client

    async def version(self, timeout: float = DEFAULT_TIMEOUT) -> str:
        info = await asyncio.wait_for(self.client.core.version(), timeout)
        return str(info.get("Version", "?"))

    async def add(self, data: bytes, timeout: float = 60.0) -> str:
        """Add and pin ``data``; returns its CID (CIDv0, as Kubo gives by default)."""
        result = await asyncio.wait_for(self.client.core.add_bytes(data, pin=True), timeout)
        return str(result["Hash"])

    async def add_stream(self, chunks: AsyncIterable[bytes], timeout: float = 600.0) -> str:
        """Add and pin what ``chunks`` yields, sent to the node as it comes (never the whole
        file in memory); the same CID as ``add`` of the same bytes. An error raised by
        ``chunks`` aborts the upload and nothing is pinned."""
        url = f"{self.api_url.rstrip('/')}/api/v0/add"
        form = aiohttp.FormData()
        form.add_field(
            "file",
            aiohttp.AsyncIterablePayload(chunks),
            filename="file",
            content_type="application/octet-stream",
        )
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.post(url, params={"pin": "true"}, data=form) as resp,
        ):
            text = await resp.text()
            if resp.status != 200:
                raise APIError(code=resp.status, message=text)
        lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        if not lines or "Hash" not in lines[-1]:
            raise APIError(code=resp.status, message=f"no CID in the answer: {text[:200]}")
        return str(lines[-1]["Hash"])

    async def unpin(self, cid: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        await asyncio.wait_for(self.client.pin.rm(cid), timeout)

    async def is_pinned(self, cid: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
        try:
            found = await asyncio.wait_for(self.client.pin.ls(cid), timeout)
        except APIError:
            return False
        return cid in str(found)

    async def cat(self, cid: str, timeout: float = DEFAULT_TIMEOUT) -> bytes:
        return bytes(await asyncio.wait_for(self.client.core.cat(cid), timeout))

    async def stream(self, cid: str, timeout: float = 30.0) -> AsyncIterator[bytes]:
        """The content of ``cid`` in chunks, straight from the RPC API (never the whole file)."""
        url = f"{self.api_url.rstrip('/')}/api/v0/cat"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, params={"arg": cid}) as resp:
                if resp.status != 200:
                    raise APIError(code=resp.status, message=await resp.text())
                async for chunk in resp.content.iter_chunked(64 * 1024):
                    yield chunk

    async def round_trip_ms(self, timeout: float = 2.0) -> float:
        started = time.monotonic()
        await self.version(timeout)
        return (time.monotonic() - started) * 1000
