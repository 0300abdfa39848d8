"""Hostile strings against every command and every HTTP route of the running platform: no
unexpected error, no 5xx, and nothing of them unescaped in HTML."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mautrix.types import EventID, RoomID, UserID

from appservice.app import Platform
from commands.router import Outcome
from tests.matrix_user import MatrixUser

HOSTILE = [
    "<img src=x onerror=alert(1)>",
    "</code><script>alert(1)</script>",
    "line\r\nInjected: header",
    "nul\x00byte",
    "²³",  # digits to str.isdigit, not to int()
    "١٢٣",  # Arabic-Indic digits
    "9" * 40,
    "x" * 5000,
    "'; DROP TABLE users; --",
    '"quoted" --flag',
    "@someone:evil.example",
    "!room:evil.example",
    "%00%0d%0a",
    "../../etc/passwd",
    "\u202eevil",
]
TAG = re.compile(r"<(img|script)\b", re.IGNORECASE)


class _Rollback(Exception):
    """Ends the probe's transaction: nothing a hostile command did stays."""


async def _probe(
    platform: Platform, sender: str, room: str, text: str
) -> tuple[Outcome, list[str]]:
    replies: list[str] = []

    async def reply(html: str) -> None:
        replies.append(html)

    outcome = Outcome.ERROR
    try:
        async with platform.territory_db.transaction():
            outcome = await platform.router.handle(
                UserID(sender), RoomID(room), EventID("$probe"), text, reply
            )
            raise _Rollback
    except _Rollback:
        pass
    return outcome, replies


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_every_command_with_hostile_arguments(
    platform: Platform, admin: MatrixUser, hostile: str
) -> None:
    room = await admin.room_with_bot()
    for spec in platform.router.commands:
        for text in (
            f"!{spec.name} {hostile}",
            f"!{spec.name} {hostile} {hostile}",
            f"!{spec.name} @x:dk.localhost {hostile}",
            f"!{spec.name} --{hostile}",
        ):
            outcome, replies = await _probe(platform, admin.user_id, room, text)
            assert outcome is not Outcome.ERROR, text
            assert len(replies) == 1, (text, replies)
            assert not TAG.search(replies[0]), (text, replies[0])


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples every run: CI is not where new ones are searched
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.text(min_size=1, max_size=80))
async def test_random_text_after_a_command_word(
    platform: Platform, admin: MatrixUser, words: str
) -> None:
    room = "!nowhere:dk.localhost"  # never read: permission checks come from the admin list
    for name in ("course info", "badge info", "forum new", "help", "gate show"):
        outcome, replies = await _probe(platform, admin.user_id, room, f"!{name} {words}")
        assert outcome is not Outcome.ERROR
        for reply in replies:
            assert not TAG.search(reply)


async def test_every_http_route_with_hostile_paths_and_bodies(platform: Platform) -> None:
    base = platform.config.public_url
    routes = {
        (route.method, route.resource.canonical)
        for route in platform.web_app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    assert len(routes) > 10
    seen: list[tuple[str, str, int]] = []
    async with aiohttp.ClientSession() as session:
        for method, template in sorted(routes):
            for hostile in HOSTILE:
                path = re.sub(r"\{[^}]+\}", quote(hostile, safe=""), template)
                token = re.sub(r"[^\x21-\x7e]", "", hostile)[:200] or "x"
                json_body = json.dumps({"title": hostile, "body": hostile, "reply_to": hostile})
                for body in (hostile.encode(), json_body.encode()):
                    async with session.request(
                        method, base + path, data=body, headers={"Authorization": f"Bearer {token}"}
                    ) as resp:
                        seen.append((method, template, resp.status))
                        assert resp.status < 500, (method, path, resp.status, await resp.text())
                        if resp.status >= 400 and resp.content_type == "application/json":
                            answer: Any = await resp.json()
                            assert set(answer) >= {"errcode", "error"}
    assert seen
