"""Open Badges over HTTP: the issuer profile, each award's credential, and verification.

GET  /api/badges/issuer                the issuer Profile with its public key (the JWS kid)
GET  /api/badges/credentials/{id}      (a random id, not the award's) JSON {credential, jwt, status}; Accept: application/jwt
                                       (or application/vc+jwt) gives the signed token alone
POST /api/badges/verify                {"credential": "<jwt>"} (or the token as the body)
                                       -> {"valid", "reasons", "credential"}
"""

from __future__ import annotations

import json

from aiohttp import web

from core.errors import NotFound, Refused
from core.http import read_body
from workflows.badge_credentials import CREDENTIAL_ID, BadgeCredentials

MAX_TOKEN_BYTES = 64 * 1024


def add_badge_routes(app: web.Application, credentials: BadgeCredentials) -> None:
    async def issuer(_: web.Request) -> web.Response:
        return web.json_response(credentials.issuer.issuer_profile())

    async def credential(request: web.Request) -> web.Response:
        raw = request.match_info["credential_id"]
        issued = await credentials.issue(raw) if CREDENTIAL_ID.fullmatch(raw) else None
        if issued is None:
            raise NotFound("No such credential")
        award, document, token = issued
        accept = request.headers.get("Accept", "")
        if "application/jwt" in accept or "application/vc+jwt" in accept:
            return web.Response(text=token, content_type="application/jwt")
        status = {
            "revoked": award.revoked_at is not None,
            "revoked_at": award.revoked_at.isoformat() if award.revoked_at else None,
        }
        return web.json_response({"credential": document, "jwt": token, "status": status})

    async def verify(request: web.Request) -> web.Response:
        body = await read_body(request, MAX_TOKEN_BYTES)
        text = body.decode("utf-8", errors="replace").strip()
        if text.startswith("{"):
            try:
                token = json.loads(text).get("credential")
            except (ValueError, AttributeError):
                raise Refused("The body is not JSON", reason="not_json") from None
            if not isinstance(token, str):
                raise Refused('Expected {"credential": "<jwt>"}', reason="bad_json")
        else:
            token = text
        result = await credentials.verify(token)
        return web.json_response(
            {
                "valid": result.valid,
                "reasons": list(result.reasons),
                "credential": result.credential,
            }
        )

    app.router.add_get("/api/badges/issuer", issuer)
    app.router.add_get("/api/badges/credentials/{credential_id}", credential)
    app.router.add_post("/api/badges/verify", verify)
