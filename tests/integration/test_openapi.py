"""The HTTP API's OpenAPI document: equal to the routes the app registers, and true of the live
API when schemathesis throws generated requests at it (no 5xx, every answer as documented)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp

from appservice.app import Platform
from appservice.openapi import INTERNAL_PREFIXES, OPENAPI_PATH
from tests.matrix_user import MatrixUser


async def _document(platform: Platform) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session:
        async with session.get(platform.config.public_url + OPENAPI_PATH) as resp:
            assert resp.status == 200
            return dict(await resp.json())


async def test_the_document_lists_exactly_the_registered_routes(platform: Platform) -> None:
    document = await _document(platform)
    assert document["openapi"].startswith("3.1")
    documented = {
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    }
    registered = {
        (route.method, route.resource.canonical)
        for route in platform.web_app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and not route.resource.canonical.startswith(INTERNAL_PREFIXES)
    }
    if platform.metrics_app is not None:  # /metrics served apart: still part of the API
        registered.add(("GET", "/metrics"))
    assert documented == registered


async def test_schemathesis_finds_no_server_error_and_no_undocumented_answer(
    platform: Platform, user: MatrixUser, tmp_path: Path
) -> None:
    token = await user.openid_token()
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        platform.config.public_url + OPENAPI_PATH,
        "--checks",
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance",
        "--phases",
        "examples,fuzzing",
        "--max-examples",
        "8",
        "--seed",
        "20261201",
        "--generation-database",
        "none",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "20",
        "--max-time",
        "30",  # fuzzing goes on until then: a bounded run
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode()
    assert process.returncode == 0, text[-6000:]
    assert "passed" in text.lower(), text[-2000:]
