"""The HTTP server: the homeserver's Application Service API plus /health, /ready and /metrics."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

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

from .health import HealthChecks
from .metrics import Metrics

log = logging.getLogger("unityplan.http")

ReadyState = Callable[[], dict[str, Any]]
QueueState = Callable[[], Awaitable[dict[str, Any]]]


def add_operational_routes(
    app: web.Application,
    health: HealthChecks,
    ready_state: ReadyState,
    metrics: Metrics,
    queue_state: QueueState,
    *,
    metrics_app: web.Application | None = None,
) -> None:
    """/health and /ready on ``app``; /metrics there too, or only on ``metrics_app`` (a listener
    of its own, for production: label values are public information there)."""

    async def get_health(_: web.Request) -> web.Response:
        status, body = await health.health()
        return web.json_response(body, status=status)

    async def get_ready(_: web.Request) -> web.Response:
        checks = ready_state()
        ready = all(value in (True, "complete") for value in checks.values())
        body: dict[str, Any] = {"ready": ready, "checks": checks}
        try:
            body["queues"] = await queue_state()  # a growing dead-letter backlog shows here
        except Exception as exc:
            body["queues"] = {"error": f"unavailable: {type(exc).__name__}"}
        return web.json_response(body, status=200 if ready else 503)

    async def get_metrics(_: web.Request) -> web.Response:
        try:
            await queue_state()  # refreshes the queue gauges
        except Exception:
            log.debug("Queue gauges not refreshed", exc_info=True)
        response = web.Response(body=metrics.render())
        response.content_type = "text/plain"
        response.headers["Content-Type"] = metrics.content_type
        return response

    app.router.add_get("/health", get_health)
    app.router.add_get("/ready", get_ready)
    (metrics_app if metrics_app is not None else app).router.add_get("/metrics", get_metrics)


# The one table from a domain refusal to HTTP: (status, errcode) by kind, most specific first,
# and errcodes for the finer reasons some refusals give.
ERROR_KINDS: tuple[tuple[type[DomainError], int, str], ...] = (
    (NotFound, 404, "M_NOT_FOUND"),
    (Unauthenticated, 401, "M_UNAUTHORIZED"),
    (Forbidden, 403, "M_FORBIDDEN"),
    (Conflict, 409, "M_CONFLICT"),
    (Locked, 423, "M_LOCKED"),
    (TooLarge, 413, "M_TOO_LARGE"),
    (RateLimited, 429, "M_LIMIT_EXCEEDED"),
    (Unavailable, 503, "M_UNAVAILABLE"),
    (Refused, 400, "M_INVALID_PARAM"),
    (DomainError, 400, "M_UNKNOWN"),
)
REASON_CODES = {
    "not_json": "M_NOT_JSON",
    "bad_json": "M_BAD_JSON",
    "missing_param": "M_MISSING_PARAM",
    "missing_token": "M_MISSING_TOKEN",
    "unknown_token": "M_UNKNOWN_TOKEN",
}
HTTP_CODES = {404: "M_NOT_FOUND", 405: "M_UNRECOGNIZED", 413: "M_TOO_LARGE"}


def error_status(error: DomainError) -> tuple[int, str]:
    for kind, status, errcode in ERROR_KINDS:
        if isinstance(error, kind):
            return status, REASON_CODES.get(error.reason or "", errcode)
    raise AssertionError("DomainError is the last row")  # pragma: no cover


def error_body(status: int, errcode: str, message: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every error as {"errcode", "error"} JSON: domain refusals by the table above, aiohttp's own
    HTTP errors, and unexpected failures (500, logged with a reference number)."""
    try:
        return await handler(request)
    except DomainError as exc:
        status, errcode = error_status(exc)
        response = error_body(status, errcode, str(exc))
        if isinstance(exc, RateLimited):
            retry_ms = max(int(exc.retry_after * 1000), 1)
            response = web.json_response(
                {"errcode": errcode, "error": str(exc), "retry_after_ms": retry_ms},
                status=status,
                headers={"Retry-After": str(max(int(exc.retry_after + 0.999), 1))},
            )
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return error_body(exc.status, HTTP_CODES.get(exc.status, "M_UNKNOWN"), exc.reason)
    except asyncio.CancelledError:
        raise
    except Exception:
        ref = secrets.token_hex(3).upper()
        log.exception("%s %s failed (ref %s)", request.method, request.path, ref)
        return error_body(500, "M_UNKNOWN", f"Something went wrong (ref: {ref}).")
