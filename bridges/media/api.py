"""GET /api/media/{cid}: a recorded file, streamed from IPFS with its recorded type and name."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote

from aiohttp import web

from core.errors import NotFound
from db.repositories.media import MediaRepository

from .ipfs_client import IpfsClient

log = logging.getLogger("unityplan.media.api")

CID = re.compile(r"^[A-Za-z0-9]{20,100}$")


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback and the UTF-8 name (RFC 8187), as an attachment."""
    fallback = re.sub(r"[^A-Za-z0-9._ -]", "_", filename)[:200] or "file"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def add_media_routes(app: web.Application, media: MediaRepository, ipfs: IpfsClient) -> None:
    async def get_media(request: web.Request) -> web.StreamResponse:
        cid = request.match_info["cid"]
        found = await media.object(cid) if CID.match(cid) else None
        upload = await media.latest_upload_of(cid) if found else None
        if found is None or upload is None or not found[3] or found[2]:
            raise NotFound("No such file")
        size, mime, _, _ = found
        response = web.StreamResponse(
            headers={
                "Content-Type": mime,
                "Content-Length": str(size),
                "Content-Disposition": content_disposition(upload.filename),
                "X-Content-Type-Options": "nosniff",
                # A file from a stranger never runs as a page of ours.
                "Content-Security-Policy": "default-src 'none'; sandbox",
                "Cache-Control": "public, max-age=31536000, immutable",
            }
        )
        await response.prepare(request)
        try:
            async for chunk in ipfs.stream(cid):
                await response.write(chunk)
        except Exception as exc:
            log.warning("Streaming %s from IPFS failed: %s", cid, exc)
            raise
        await response.write_eof()
        return response

    app.router.add_get("/api/media/{cid}", get_media)
