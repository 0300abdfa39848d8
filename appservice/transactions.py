"""The Application Service API that the homeserver calls: transactions, user/alias queries, ping.

Authentication: ``Authorization: Bearer <hs_token>`` compared in constant time; no token → 401
M_UNAUTHORIZED, a wrong one → 403 M_FORBIDDEN, and nothing is read or recorded. A transaction is
recorded durably once per (homeserver, txnId); replays do nothing twice. The 200 is sent only after
every event was handled and committed or dead-lettered; until then the answer is 503 and the
homeserver retries the same transaction.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from core.errors import Forbidden, NotFound, Refused, Unauthenticated, Unavailable
from core.tracing import span
from db.repositories.transactions import TransactionRepository, transaction_digest

from .dispatcher import Dispatcher
from .metrics import Metrics

log = logging.getLogger("unityplan.transactions")

QueryHandler = Callable[[str], Awaitable[dict[str, Any] | None]]

PREFIX = "/_matrix/app/v1"
MAX_BODY_BYTES = 50 * 1024 * 1024


def _valid_event(event: Any) -> bool:
    return (
        isinstance(event, dict)
        and isinstance(event.get("event_id"), str)
        and isinstance(event.get("type"), str)
        and isinstance(event.get("room_id"), str)
        and isinstance(event.get("sender"), str)
    )


class HomeserverEndpoints:
    def __init__(
        self,
        *,
        hs_token: str,
        homeserver: str,
        allow_legacy_token: bool,
        inbox: TransactionRepository,
        dispatcher: Dispatcher,
        metrics: Metrics,
        query_user: QueryHandler,
        query_alias: QueryHandler,
        encryption_parts: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        self.encryption_parts = encryption_parts
        self._hs_token = hs_token.encode()
        self.homeserver = homeserver
        self.allow_legacy_token = allow_legacy_token
        self.inbox = inbox
        self.dispatcher = dispatcher
        self.metrics = metrics
        self.query_user = query_user
        self.query_alias = query_alias
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_put(PREFIX + "/transactions/{txn_id}", self.put_transaction)
        app.router.add_get(PREFIX + "/users/{user_id}", self.get_user)
        app.router.add_get(PREFIX + "/rooms/{alias}", self.get_alias)
        app.router.add_post(PREFIX + "/ping", self.post_ping)

    def _authenticate(self, request: web.Request) -> None:
        """Raises unless the request carries our hs_token (compared in constant time)."""
        header = request.headers.get("Authorization", "")
        token: str | None = None
        if header.startswith("Bearer "):
            token = header.removeprefix("Bearer ").strip()
        elif self.allow_legacy_token and "access_token" in request.query:
            token = request.query["access_token"]
        if not token:
            raise Unauthenticated("Missing the homeserver token")
        if not hmac.compare_digest(token.encode(), self._hs_token):
            raise Forbidden("Wrong homeserver token")

    async def put_transaction(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            self._authenticate(request)
        except (Unauthenticated, Forbidden) as exc:
            result = "unauthorized" if isinstance(exc, Unauthenticated) else "forbidden"
            self.metrics.transactions.labels(result).inc()
            raise
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            self.metrics.transactions.labels("bad_request").inc()
            raise Refused("The transaction body is not JSON", reason="not_json") from None
        if not isinstance(body, dict) or not isinstance(body.get("events", []), list):
            self.metrics.transactions.labels("bad_request").inc()
            raise Refused("Expected an object with an 'events' list", reason="bad_json")
        raw_events = body.get("events", [])
        events = [e for e in raw_events if _valid_event(e)]
        if len(events) != len(raw_events):
            log.warning(
                "Transaction %s: skipped %d malformed events",
                request.match_info["txn_id"],
                len(raw_events) - len(events),
            )
        txn_id = request.match_info["txn_id"]
        if self.encryption_parts is not None:
            # To-device messages (room keys), key counts and device lists before the events, so
            # that a key sent with a message decrypts it.
            await self.encryption_parts(body)
        try:
            with span("homeserver.transaction", attributes={"matrix.txn_id": txn_id}) as current:
                current.set_attribute("matrix.events", len(events))
                replayed = await self._handle_once(txn_id, events)
        except Unavailable:
            self.metrics.transactions.labels("retry_later").inc()
            raise
        self.metrics.transactions.labels("replayed" if replayed else "handled").inc()
        self.metrics.transaction_seconds.observe(time.monotonic() - started)
        return web.json_response({})

    async def _handle_once(self, txn_id: str, events: list[dict[str, Any]]) -> bool:
        """Record and handle a transaction; True when it was a replay.

        Answered (returns) only once every event of it is done or dead-lettered: a replay first
        handles what is still pending or failed. Otherwise ``Unavailable`` is raised (503) and the
        homeserver retries the same transaction later, which keeps the order of later ones.
        """
        key = (txn_id, transaction_digest(events))
        running = self._in_flight.get(key)
        if running is not None:
            # The same transaction is being handled right now: its outcome is ours.
            await asyncio.shield(running)
            return True
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = done
        try:
            fresh = await self.inbox.record(self.homeserver, txn_id, events)
            replay = fresh is None
            if replay:
                fresh = await self.inbox.unsettled(self.homeserver, *key)
                if fresh:
                    log.info(
                        "Transaction %s: handling %d events left unsettled before",
                        txn_id,
                        len(fresh),
                    )
            if fresh:
                await self.dispatcher.dispatch(fresh)
            waiting = await self.inbox.complete_if_settled(self.homeserver, *key)
            if waiting:
                raise Unavailable(
                    f"{waiting} events of transaction {txn_id} wait for another attempt"
                )
            done.set_result(None)
            return replay
        except BaseException as exc:
            done.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            done.exception()  # retrieved: waiters re-raise it, nobody else needs to
            raise
        finally:
            del self._in_flight[key]

    async def recover(self) -> int:
        """Handle inbox events left pending by a crash (before the listener accepts new work)."""
        pending = await self.inbox.pending()
        if pending:
            log.info("Handling %d events left pending by the previous run", len(pending))
            await self.dispatcher.dispatch(pending)
            for homeserver, txn_id, digest in {
                (e.homeserver, e.txn_id, e.txn_digest) for e in pending
            }:
                await self.inbox.complete_if_settled(homeserver, txn_id, digest)
        return len(pending)

    async def get_user(self, request: web.Request) -> web.Response:
        return await self._query(request, self.query_user, request.match_info["user_id"])

    async def get_alias(self, request: web.Request) -> web.Response:
        return await self._query(request, self.query_alias, request.match_info["alias"])

    async def _query(self, request: web.Request, handler: QueryHandler, key: str) -> web.Response:
        self._authenticate(request)
        if not await handler(key):
            raise NotFound(f"{key} is not known to this appservice")
        return web.json_response({})

    async def post_ping(self, request: web.Request) -> web.Response:
        self._authenticate(request)
        try:
            body = await request.json()
        except json.JSONDecodeError:
            raise Refused("The ping body is not JSON", reason="not_json") from None
        log.info("Ping from the homeserver (transaction_id %s)", body.get("transaction_id"))
        return web.json_response({})
