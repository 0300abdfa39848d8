"""The process's NATS connection: connects in the background and keeps reconnecting.

Start-up never fails because NATS is down; work that needs NATS waits for ``connected``.
"""

from __future__ import annotations

import asyncio
import logging
import time

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from core.secrets import without_password

log = logging.getLogger("unityplan.events.nats")


class NatsClient:
    def __init__(
        self,
        url: str,
        *,
        name: str,
        user: str | None = None,
        password: str | None = None,
        inbox_prefix: str = "_INBOX",
    ) -> None:
        self.url = url
        self.name = name
        self.user = user
        self.password = password
        self.inbox_prefix = inbox_prefix  # its own inboxes: the server lets only it read them
        self._client: Client | None = None
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._connect_loop(), name="nats-connect")

    async def _connect_loop(self) -> None:
        delay = 0.5
        while True:
            try:
                self._client = await nats.connect(
                    # One server or a cluster's, comma-separated: the client knows them all.
                    servers=[url.strip() for url in self.url.split(",")],
                    name=self.name,
                    user=self.user,
                    password=self.password,
                    inbox_prefix=self.inbox_prefix,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=1,
                    connect_timeout=2,
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                )
                self._connected.set()
                log.info("Connected to NATS at %s", without_password(self.url))
                return
            except (TimeoutError, NatsError, OSError) as exc:
                log.warning(
                    "NATS at %s not reachable (%s); retrying in %.1f s",
                    without_password(self.url),
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("Disconnected from NATS; reconnecting")

    async def _reconnected(self) -> None:
        log.info("Reconnected to NATS")

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS client error: %s", exc)

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("NATS is not connected yet")
        return self._client

    async def wait_connected(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout)

    async def round_trip_ms(self, timeout: float = 2.0) -> float:
        """PING/PONG with the server; raises when it does not answer."""
        client = self.client
        if not client.is_connected:
            raise ConnectionError("not connected to NATS")
        started = time.monotonic()
        await client.flush(timeout=max(1, round(timeout)))
        return (time.monotonic() - started) * 1000

    async def stop(self) -> None:
        self._closing = True
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        client = self._client
        if client is not None and not client.is_closed:
            try:
                if client.is_connected:
                    await client.flush(timeout=2)  # what we sent (acks included) reaches the server
                await client.close()
            except (NatsError, OSError, TimeoutError) as exc:
                log.debug("Closing the NATS connection: %s", exc)
        self._client = None
