"""The HTTP server: the homeserver's Application Service API plus /health, /ready and /metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from .health import HealthChecks
from .metrics import Metrics

ReadyState = Callable[[], dict[str, Any]]


def add_operational_routes(
    app: web.Application, health: HealthChecks, ready_state: ReadyState, metrics: Metrics
) -> None:
    async def get_health(_: web.Request) -> web.Response:
        status, body = await health.health()
        return web.json_response(body, status=status)

    async def get_ready(_: web.Request) -> web.Response:
        checks = ready_state()
        ready = all(value in (True, "complete") for value in checks.values())
        return web.json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    async def get_metrics(_: web.Request) -> web.Response:
        response = web.Response(body=metrics.render())
        response.content_type = "text/plain"
        response.headers["Content-Type"] = metrics.content_type
        return response

    app.router.add_get("/health", get_health)
    app.router.add_get("/ready", get_ready)
    app.router.add_get("/metrics", get_metrics)


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Errors as {"errcode", "error"} JSON everywhere, never aiohttp's HTML pages."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        codes = {404: "M_NOT_FOUND", 405: "M_UNRECOGNIZED", 413: "M_TOO_LARGE"}
        return web.json_response(
            {"errcode": codes.get(exc.status, "M_UNKNOWN"), "error": exc.reason},
            status=exc.status,
        )
