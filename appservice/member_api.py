"""The member's own data over HTTP.

GET /api/me/export            everything the territory holds about the caller, as JSON
GET /api/me/export?format=zip the same as the chat delivers it: export.json and README.md, zipped
GET /api/me/export?format=markdown   the readable summary only

The caller is who their Matrix OpenID token (``Authorization: Bearer``) says, asked of this
territory's homeserver; every export is recorded in the audit log (``personal_data.exported``).
"""

from __future__ import annotations

from aiohttp import web

from bridges.forum.auth import TokenVerifier
from core.errors import Refused
from core.ratelimit import RateLimiter
from workflows.data_rights import MemberDataService

FORMATS = ("json", "zip", "markdown")


def add_member_routes(
    app: web.Application,
    data: MemberDataService,
    verifier: TokenVerifier,
    limit: RateLimiter | None = None,
) -> None:
    async def export(request: web.Request) -> web.StreamResponse:
        wanted = request.query.get("format", "json")
        if wanted not in FORMATS:
            raise Refused(f"format is one of {', '.join(FORMATS)}, not {wanted!r}.")
        user_id = await verifier.user_of(request.headers.get("Authorization"))
        if limit is not None:
            limit.hit(user_id)  # an export reads and signs a lot: within the user's write rate
        found = await data.export(user_id, via="api")
        headers = {"Cache-Control": "no-store"}
        if wanted == "zip":
            headers["Content-Disposition"] = f'attachment; filename="{found.filename}.zip"'
            return web.Response(
                body=found.to_zip(), content_type="application/zip", headers=headers
            )
        if wanted == "markdown":
            return web.Response(
                text=found.to_markdown(), content_type="text/markdown", headers=headers
            )
        return web.Response(body=found.to_json(), content_type="application/json", headers=headers)

    app.router.add_get("/api/me/export", export)
