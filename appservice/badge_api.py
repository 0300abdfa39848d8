"""Open Badges over HTTP: the issuer profile, each award's credential, and verification.

GET  /api/badges/issuer                the issuer Profile with its public key (the JWS kid)
GET  /api/badges/credentials/{id}      (a random id, not the award's) JSON {credential, jwt, status}; Accept: application/jwt
                                       (or application/vc+jwt) gives the signed token alone
POST /api/badges/verify                {"credential": "<jwt>"} (or the token as the body)
                                       -> {"valid", "reasons", "credential"}; another
                                       territory's credential is checked with its registry key
"""

from __future__ import annotations

import json
from datetime import datetime

import aiohttp
from aiohttp import web

from core.errors import NotFound, Refused, Unavailable
from core.http import read_body
from workflows.badge_credentials import CREDENTIAL_ID, BadgeCredentials

MAX_TOKEN_BYTES = 64 * 1024


class HttpCredentialStatus:
    """Whether another territory revoked its credential: the credential's own URL (under that
    territory's public URL in the registry) answers with its status."""

    def __init__(self, timeout_seconds: float = 5.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)

    async def revoked_at(self, credential_url: str) -> datetime | None:
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                async with session.get(
                    credential_url, headers={"Accept": "application/json"}
                ) as resp:
                    if resp.status != 200:
                        raise Unavailable(f"it answered {resp.status}")
                    status = (await resp.json()).get("status") or {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise Unavailable(f"{type(exc).__name__}") from exc
        if not status.get("revoked"):
            return None
        try:
            revoked = datetime.fromisoformat(str(status.get("revoked_at")))
        except ValueError as exc:
            raise Unavailable("its revocation date is not a date") from exc
        if revoked.tzinfo is None:
            raise Unavailable("its revocation date has no time zone")
        return revoked


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
