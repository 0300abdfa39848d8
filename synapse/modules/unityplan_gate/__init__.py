"""UnityPlan's badge gate for Synapse: refuse a local user's join before it exists.

In homeserver.yaml (with synapse/modules on Synapse's PYTHONPATH):

    modules:
      - module: unityplan_gate.BadgeGate
        config:
          url: http://127.0.0.1:29333          # the appservice
          token: "<gate.module_token of the appservice config>"   # or token_file: /run/secrets/…
          timeout_seconds: 3

For every join by a user of this homeserver, the module asks the appservice
(``GET /_unityplan/gate/check``). A refusal comes back to the client as 403 M_FORBIDDEN whose
``error`` names the missing badge and the course that earns it.

When the appservice does not answer, the module fails **closed for gated rooms** (rooms it has seen
gated, rooms whose ``org.unityplan.gate`` state event lists badges — the appservice keeps it in the
room's own state, so it survives a restart of the homeserver — and any room whose join rule is
``knock``: gated rooms are knock-only) and **open for all other rooms**, so an outage of the
appservice never locks people out of ordinary rooms.
Server admins and a creator joining their own new room are not checked (Synapse skips the callback).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from synapse.api.errors import Codes
from synapse.module_api import NOT_SPAM, ModuleApi
from twisted.internet import defer

logger = logging.getLogger("unityplan_gate")

GATE_STATE = "org.unityplan.gate"
UNAVAILABLE = "This room requires badges, and the badge check is unavailable right now. Try again in a minute."


@dataclass(frozen=True)
class GateConfig:
    url: str
    token: str
    timeout_seconds: float = 3.0


class BadgeGate:
    def __init__(self, config: GateConfig, api: ModuleApi) -> None:
        self.config = config
        self.api = api
        self.known_gated: set[str] = set()
        api.register_spam_checker_callbacks(user_may_join_room=self.user_may_join_room)

    @staticmethod
    def parse_config(config: dict[str, Any]) -> GateConfig:
        url, token = config.get("url"), config.get("token")
        if token is None and isinstance(config.get("token_file"), str):
            with open(config["token_file"], encoding="utf-8") as secret:
                token = secret.read().strip()
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("unityplan_gate: config.url must be the appservice's http(s) URL")
        if not isinstance(token, str) or len(token) < 16:
            raise ValueError("unityplan_gate: config.token must be the appservice's gate token")
        return GateConfig(url.rstrip("/"), token, float(config.get("timeout_seconds", 3.0)))

    async def user_may_join_room(self, user_id: str, room_id: str, is_invited: bool) -> Any:
        uri = f"{self.config.url}/_unityplan/gate/check"
        try:
            answer = await self._get_json(uri, {"user_id": user_id, "room_id": room_id})
        except Exception as exc:  # the appservice is down, slow or broken
            if await self._looks_gated(room_id):
                logger.warning(
                    "Badge check for %s in %s failed (%s); refusing", user_id, room_id, exc
                )
                return Codes.FORBIDDEN, {"error": UNAVAILABLE}
            logger.info(
                "Badge check for %s in %s failed (%s); room is not gated, allowing",
                user_id,
                room_id,
                exc,
            )
            return NOT_SPAM
        if answer.get("gated"):
            self.known_gated.add(room_id)
        else:
            self.known_gated.discard(room_id)
        if answer.get("allowed", False):
            return NOT_SPAM
        return Codes.FORBIDDEN, {
            "error": str(answer.get("reason") or "This room requires badges you do not hold."),
            "org.unityplan.missing_badges": list(answer.get("missing", [])),
        }

    async def _get_json(self, uri: str, args: dict[str, str]) -> dict[str, Any]:
        from twisted.internet import reactor

        request = defer.ensureDeferred(
            self.api.http_client.get_json(
                uri, args, headers={b"Authorization": [f"Bearer {self.config.token}".encode()]}
            )
        )
        request.addTimeout(self.config.timeout_seconds, reactor)
        answer = await request
        if not isinstance(answer, dict):
            raise ValueError("not a JSON object")
        return answer

    async def _looks_gated(self, room_id: str) -> bool:
        if room_id in self.known_gated:
            return True
        try:
            state = await self.api.get_room_state(
                room_id, [("m.room.join_rules", ""), (GATE_STATE, "")]
            )
        except Exception:
            return True  # cannot tell: be careful
        gate = state.get((GATE_STATE, ""))
        if gate is not None and gate.content.get("badges"):
            return True
        event = state.get(("m.room.join_rules", ""))
        return event is not None and event.content.get("join_rule") in ("knock", "knock_restricted")
