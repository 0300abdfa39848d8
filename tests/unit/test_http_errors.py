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
    Refused,
    TooLarge,
    Unauthenticated,
    Unavailable,
)


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

    async def crash(_: web.Request) -> web.Response:
        raise RuntimeError("a bug, with a secret detail")

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/refuse", refuse)
    app.router.add_get("/crash", crash)
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
