"""Request/reply between territories over core NATS: ``unityplan.<territory>.badge.check``.

The territory that owns a user (by the user's server name in the global registry) answers whether the
user holds a badge now: ``{"valid": bool, "expires_at": iso8601 | null}``, plus ``"error"`` when the
question cannot be answered (unknown badge, malformed request).

The stream captures ``unityplan.>``, request subjects included, so JetStream answers every request with
a PubAck as well. The requester therefore listens on its own inbox and takes the first reply that is
not a PubAck, instead of nats-py's ``request`` (which would return whichever came first).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from core.events import request_subject
from core.ids import server_of
from core.ports import BadgeCheckError, BadgeStatus
from db.repositories.territories import TerritoryRepository
from workflows.territory import TerritorySettings

from .metrics import EventMetrics
from .nats_client import NatsClient
from .trust import BusTrust

log = logging.getLogger("unityplan.events.requests")

BADGE_CHECK = "badge.check"


# (user_id, badge slug) -> whether the user holds it now, answered by the owning territory.
BadgeStatusLookup = Callable[[str, str], Awaitable[BadgeStatus]]


class BadgeCheckResponder:
    def __init__(
        self,
        nats: NatsClient,
        territory: str,
        lookup: BadgeStatusLookup,
        trust: BusTrust,
        *,
        settings: TerritorySettings | None = None,
    ) -> None:
        # A territory without cross-border sharing says whether, and nothing else (no expiry, no
        # reason): other territories learn no more about its members than a yes or a no.
        self.settings = settings
        self.nats = nats
        self.territory = territory
        self.lookup = lookup
        self.trust = trust
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        self._subscription = await self.nats.client.subscribe(
            request_subject(self.territory, BADGE_CHECK),
            queue=f"unityplan-{self.territory}",
            cb=self._answer,
        )

    async def stop(self) -> None:
        if self._subscription is not None:
            try:
                await self._subscription.unsubscribe()
            except Exception:
                log.debug("Unsubscribing the badge check responder failed", exc_info=True)
            self._subscription = None

    async def _answer(self, message: Msg) -> None:
        if not message.reply:
            return
        try:
            request = json.loads(message.data)
            user_id, badge = request["user_id"], request["badge"]
            if not (isinstance(user_id, str) and isinstance(badge, str)):
                raise TypeError("user_id and badge must be strings")
        except (ValueError, KeyError, TypeError) as exc:
            status = BadgeStatus(valid=False, error=f"malformed request: {exc}")
        else:
            try:
                status = await self.lookup(user_id, badge)
            except Exception:
                log.exception("Badge check for %s / %s failed", user_id, badge)
                status = BadgeStatus(valid=False, error="internal error")
        yes_no_only = self.settings is not None and not self.settings.allow_cross_border
        shown = {"valid": status.valid} if yes_no_only else status.as_json()
        answer = json.dumps(shown).encode()
        # Signed, and bound to the question: the asker believes only this territory's key.
        headers = self.trust.reply_headers(message.subject, message.data, answer)
        await self.nats.client.publish(message.reply, answer, headers=headers)


def _is_pub_ack(answer: Any) -> bool:
    return isinstance(answer, dict) and "stream" in answer and "seq" in answer


class BadgeCheckClient:
    def __init__(
        self,
        nats: NatsClient,
        territories: TerritoryRepository,
        trust: BusTrust,
        metrics: EventMetrics,
    ) -> None:
        self.nats = nats
        self.territories = territories
        self.trust = trust
        self.metrics = metrics

    async def check(self, user_id: str, badge: str, timeout: float = 3.0) -> BadgeStatus:
        server_name = server_of(user_id)
        territory = await self.territories.by_server_name(server_name)
        if territory is None:
            raise BadgeCheckError(f"{server_name or user_id} is not a UnityPlan territory")
        client = self.nats.client
        inbox = client.new_inbox()
        answered: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        subject = request_subject(territory.code, BADGE_CHECK)
        question = json.dumps({"user_id": user_id, "badge": badge}).encode()

        async def on_reply(message: Msg) -> None:
            try:
                answer = json.loads(message.data)
            except ValueError:
                return
            if _is_pub_ack(answer) or answered.done():
                return
            problem = await self.trust.reply_problem(
                territory.code, subject, question, message.data, message.headers
            )
            if problem is not None:  # a rogue responder: not believed, the real one may follow
                log.warning("badge.check answer for %s rejected: %s", territory.code, problem)
                self.metrics.answers_rejected.labels(problem).inc()
                return
            answered.set_result(answer)

        subscription = await client.subscribe(inbox, cb=on_reply)
        try:
            await client.publish(subject, question, reply=inbox)
            try:
                answer = await asyncio.wait_for(answered, timeout)
            except TimeoutError as exc:
                raise BadgeCheckError(
                    f"territory {territory.code} did not answer within {timeout:.0f} s"
                ) from exc
        finally:
            await subscription.unsubscribe()
        expires = answer.get("expires_at")
        return BadgeStatus(
            valid=bool(answer.get("valid")),
            expires_at=datetime.fromisoformat(expires) if expires else None,
            error=answer.get("error"),
            answered_by=territory.code,
        )
