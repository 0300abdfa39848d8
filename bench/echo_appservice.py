"""The floor for any appservice bot: a minimal echo appservice in a few lines of aiohttp.

It joins rooms its bot user is invited to and answers every ``!help`` text from someone else with
an ``m.notice`` "echo" that replies to the request (``m.relates_to.m.in_reply_to``), so the
benchmark can match each answer to its request. No database, no command parsing, no state:
transaction ids are deduplicated in memory, which is fine for a benchmark and wrong for a real bot.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import Counter
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web

from core.background import BackgroundTasks
from registration.generate import dump_registration

log = logging.getLogger("unityplan.bench.echo")


@dataclass(frozen=True)
class EchoRegistration:
    url: str
    server_name: str
    as_token: str
    hs_token: str
    id: str = "echo"
    sender_localpart: str = "echobot"

    @classmethod
    def new(cls, url: str, server_name: str) -> EchoRegistration:
        return cls(url, server_name, secrets.token_urlsafe(32), secrets.token_urlsafe(32))

    @property
    def bot_user_id(self) -> str:
        return f"@{self.sender_localpart}:{self.server_name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "as_token": self.as_token,
            "hs_token": self.hs_token,
            "sender_localpart": self.sender_localpart,
            "rate_limited": False,
            "namespaces": {
                "users": [{"regex": f"@echo_.*:{re.escape(self.server_name)}", "exclusive": True}],
                "aliases": [],
                "rooms": [],
            },
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dump_registration(self.as_dict()), "utf-8")
        path.chmod(0o600)


class EchoAppservice:
    def __init__(self, registration: EchoRegistration, homeserver_url: str, port: int) -> None:
        self.registration = registration
        self.homeserver_url = homeserver_url
        self.port = port
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._tasks = BackgroundTasks()
        self._seen_txns: set[str] = set()
        self._txn_ids = count()
        self.messages: Counter[str] = Counter()  # m.room.message events received, per room
        self.transactions = 0  # transactions received (replays included)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.registration.as_token}"}
        )
        self._runner = web.AppRunner(self._app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        await self._tasks.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def ping_homeserver(self) -> None:
        """Ask Synapse to ping us: proves it loaded the registration and can reach the server."""
        path = f"/_matrix/client/v1/appservice/{quote(self.registration.id, safe='')}/ping"
        await self._call("POST", path, {})

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/_matrix/app/v1/transactions/{txn_id}", self._transaction)
        app.router.add_post("/_matrix/app/v1/ping", self._ping)
        app.router.add_get("/_matrix/app/v1/users/{user_id}", self._not_found)
        app.router.add_get("/_matrix/app/v1/rooms/{alias}", self._not_found)
        return app

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.registration.hs_token}"

    async def _transaction(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        txn_id = request.match_info["txn_id"]
        self.transactions += 1
        if txn_id not in self._seen_txns:
            self._seen_txns.add(txn_id)
            body = await request.json()
            for event in body.get("events", []):
                if event.get("type") == "m.room.message":
                    self.messages[str(event.get("room_id"))] += 1
                self._tasks.start(self._handle(event), name=f"echo event {event.get('event_id')}")
        return web.json_response({})

    async def _ping(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        return web.json_response({})

    async def _not_found(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"errcode": "M_FORBIDDEN"}, status=403)
        return web.json_response({"errcode": "M_NOT_FOUND"}, status=404)

    async def _handle(self, event: dict[str, Any]) -> None:
        bot = self.registration.bot_user_id
        content = event.get("content") or {}
        room_id = str(event.get("room_id"))
        if (
            event.get("type") == "m.room.member"
            and event.get("state_key") == bot
            and content.get("membership") == "invite"
        ):
            await self._call("POST", f"/_matrix/client/v3/join/{quote(room_id, safe='')}", {})
        elif (
            event.get("type") == "m.room.message"
            and event.get("sender") != bot
            and content.get("msgtype") == "m.text"
            and str(content.get("body", "")).startswith("!help")
        ):
            await self._reply(room_id, str(event["event_id"]))

    async def _reply(self, room_id: str, event_id: str) -> None:
        txn_id = f"echo{next(self._txn_ids)}"
        path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/{txn_id}"
        await self._call(
            "PUT",
            path,
            {
                "msgtype": "m.notice",
                "body": "echo",
                "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
            },
        )

    async def _call(self, method: str, path: str, body: dict[str, Any]) -> None:
        assert self._session is not None, "start() the echo appservice first"
        async with self._session.request(method, self.homeserver_url + path, json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(
                    f"echo appservice: {method} {path} -> {resp.status} {await resp.text()}"
                )
