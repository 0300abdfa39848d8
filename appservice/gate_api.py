"""The question the Synapse gate module asks before a local user joins a room.

GET /_unityplan/gate/check?user_id=@a:dk.example&room_id=!r:dk.example
Authorization: Bearer <gate.module_token>
-> {"allowed": bool, "gated": bool, "missing": [...], "reason": "..."}
"""

from __future__ import annotations

import hmac

from aiohttp import web

from core.errors import Forbidden, Refused
from workflows.gate import GateService


def add_gate_routes(app: web.Application, gate: GateService, token: str) -> None:
    expected = token.encode()

    async def check(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not given or not hmac.compare_digest(given.encode(), expected):
            raise Forbidden("Wrong gate module token")
        user_id, room_id = request.query.get("user_id"), request.query.get("room_id")
        if not user_id or not room_id:
            raise Refused("user_id and room_id are required", reason="missing_param")
        decision = await gate.decide(user_id, room_id)
        return web.json_response(
            {
                "allowed": decision.allowed,
                "gated": decision.gated,
                "missing": list(decision.missing),
                "reason": decision.reason,
            }
        )

    app.router.add_get("/_unityplan/gate/check", check)
