"""Reading HTTP request bodies the same way everywhere (the forum API, badge verification)."""

from __future__ import annotations

from aiohttp import web

from .errors import TooLarge


async def read_body(request: web.Request, limit: int) -> bytes:
    """The whole body, however it is sent (Content-Length or chunked), or ``TooLarge`` past
    ``limit`` bytes: read as it arrives, never more than ``limit`` bytes kept."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"The request is larger than {max(limit // 1024, 1)} KB.")
        chunks.append(chunk)
    return b"".join(chunks)
