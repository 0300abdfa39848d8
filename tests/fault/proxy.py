"""A small HTTP proxy between the appservice and its homeserver that can fail on purpose: answer
502 to the next N writes, or hold them past the client's timeout before passing them on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

Match = Callable[[web.Request], bool]


def writes(request: web.Request) -> bool:
    """Requests that change something in Matrix (sends, invites, kicks, state, room creation)."""
    return request.method in ("PUT", "POST") and request.path.startswith("/_matrix/client/")


@dataclass
class Fault:
    kind: str  # "fail" or "hang"
    remaining: int
    match: Match
    status: int = 502
    hang_seconds: float = 0.0
    hits: list[str] = field(default_factory=list)


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.forwarded = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail(self, count: int, *, status: int = 502, match: Match = writes) -> Fault:
        fault = Fault("fail", count, match, status=status)
        self.faults.append(fault)
        return fault

    def hang(self, count: int, seconds: float, *, match: Match = writes) -> Fault:
        """The next ``count`` matching requests reach the homeserver only after ``seconds``."""
        fault = Fault("hang", count, match, hang_seconds=seconds)
        self.faults.append(fault)
        return fault

    def _fault_for(self, request: web.Request) -> Fault | None:
        for fault in self.faults:
            if fault.remaining > 0 and fault.match(request):
                fault.remaining -= 1
                fault.hits.append(f"{request.method} {request.path}")
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        fault = self._fault_for(request)
        if fault is not None and fault.kind == "fail":
            return web.json_response(
                {"errcode": "M_UNKNOWN", "error": "injected fault"}, status=fault.status
            )
        if fault is not None and fault.kind == "hang":
            # The client gives up meanwhile; the homeserver still gets the request afterwards,
            # as when a proxy in production delivers late.
            asyncio.get_running_loop().create_task(self._late(request, body, fault.hang_seconds))
            await asyncio.sleep(fault.hang_seconds + 5)
            return web.Response(status=504)
        return await self._forward(request, body)

    async def _late(self, request: web.Request, body: bytes, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(Exception):
            await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {
            k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        }
        async with self._session.request(
            request.method, self.upstream + request.path_qs, data=body, headers=headers
        ) as resp:
            data = await resp.read()
            self.forwarded += 1
            out = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() in ("content-type", "content-disposition")
            }
            return web.Response(status=resp.status, body=data, headers=out)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=100 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
