"""Every error of the HTTP API is JSON {"errcode", "error"}: domain refusals by the one table,
aiohttp's own errors, and unexpected failures (forced here by a handler that breaks)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp import web

from appservice.server import error_status, json_errors
from core.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Locked,
    NotFound,
    RateLimited,
    Refused,
    TooLarge,
    Unauthenticated,
    Unavailable,
)
from core.ratelimit import RateLimiter


@pytest.mark.parametrize(
    ("error", "status", "errcode"),
    [
        (NotFound("x"), 404, "M_NOT_FOUND"),
        (Forbidden("x"), 403, "M_FORBIDDEN"),
        (Unauthenticated("x"), 401, "M_UNAUTHORIZED"),
        (Unauthenticated("x", reason="unknown_token"), 401, "M_UNKNOWN_TOKEN"),
        (Conflict("x"), 409, "M_CONFLICT"),
        (Locked("x"), 423, "M_LOCKED"),
        (TooLarge("x"), 413, "M_TOO_LARGE"),
        (Unavailable("x"), 503, "M_UNAVAILABLE"),
        (RateLimited("x", retry_after=1), 429, "M_LIMIT_EXCEEDED"),
        (Refused("x"), 400, "M_INVALID_PARAM"),
        (Refused("x", reason="not_json"), 400, "M_NOT_JSON"),
        (DomainError("x"), 400, "M_UNKNOWN"),
    ],
)
def test_one_table_maps_each_kind(error: DomainError, status: int, errcode: str) -> None:
    assert error_status(error) == (status, errcode)


def _app() -> web.Application:
    async def refuse(_: web.Request) -> web.Response:
        raise Locked("This topic is locked.")

    limiter = RateLimiter("writes", per_minute=60, burst=2)

    async def limited(_: web.Request) -> web.Response:
        limiter.hit("@a:dk.example")
        return web.json_response({})

    async def crash(_: web.Request) -> web.Response:
        raise RuntimeError("a bug, with a secret detail")

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/refuse", refuse)
    app.router.add_get("/crash", crash)
    app.router.add_post("/limited", limited)
    return app


async def test_unexpected_errors_are_json_with_a_reference(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/crash")
    assert resp.status == 500
    assert resp.content_type == "application/json"
    answer = await resp.json()
    assert answer["errcode"] == "M_UNKNOWN"
    assert "ref:" in answer["error"] and "secret" not in answer["error"]


async def test_refusals_and_aiohttp_errors_are_json(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    resp = await client.get("/refuse")
    assert (resp.status, await resp.json()) == (
        423,
        {"errcode": "M_LOCKED", "error": "This topic is locked."},
    )
    for method, path, status in (("GET", "/nowhere", 404), ("POST", "/refuse", 405)):
        resp = await client.request(method, path)
        assert resp.status == status
        assert set(await resp.json()) == {"errcode", "error"}


async def test_past_the_rate_the_answer_is_429_with_retry_after_ms(aiohttp_client: Any) -> None:
    client = await aiohttp_client(_app())
    assert [(await client.post("/limited")).status for _ in range(2)] == [200, 200]
    resp = await client.post("/limited")
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    answer = await resp.json()
    assert answer["errcode"] == "M_LIMIT_EXCEEDED" and 0 < answer["retry_after_ms"] <= 1000


def test_a_bucket_refills_at_its_rate() -> None:
    import time

    limiter = RateLimiter("things", per_minute=600, burst=1)  # one every 0.1 s
    limiter.hit("a")
    with pytest.raises(RateLimited):
        limiter.hit("a")
    limiter.hit("b")  # per key
    time.sleep(0.12)
    limiter.hit("a")
    RateLimiter("off", per_minute=0).hit("a")  # 0 switches a limit off
