"""The IPFS node's Kubo RPC API, through aioipfs (byteforge fork), with timeouts everywhere.

A missing CID makes ``cat`` hang on an offline node: every call here is bounded.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aioipfs

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

    async def round_trip_ms(self, timeout: float = 2.0) -> float:
        started = time.monotonic()
        await self.version(timeout)
        return (time.monotonic() - started) * 1000
