"""A newcomer's first minutes, in a real browser: `unityplan dev` serves a web client (Hydrogen)
for its homeserver; headless Chromium, driven by Playwright, signs in as the demo member, opens the
chat the bot invited them to, sends !help and sees the answer, and tries the badge-gated demo room
and sees why not. Screenshots go to $UNITYPLAN_TEST_ARTEFACTS (default: a folder under /tmp)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import aiohttp
import psutil
from playwright.async_api import Page, async_playwright

from tests.e2e.test_unityplan_dev import _clean_up, _descendants, _start_dev, _stop_dev

CHROMIUM = "/usr/bin/chromium"
# As root, in a closed network: no sandbox, no background connections to the outside.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = 90_000


def _artefacts() -> Path:
    folder = Path(
        os.environ.get("UNITYPLAN_TEST_ARTEFACTS") or Path(tempfile.gettempdir()) / "unityplan-ui"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def _shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(_artefacts() / f"{name}.png"), full_page=True)


async def test_a_newcomer_signs_in_with_the_web_client_and_talks_to_the_bot() -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="unityplan-web-e2e-"))
    devs = []
    children: list[psutil.Process] = []
    try:
        dev = await _start_dev(data_dir)
        devs.append(dev)
        children = _descendants(dev.pid)
        info = json.loads((data_dir / "stack.json").read_text())
        url = info["web_client_url"]
        assert url == info["territories"][0]["web_client_url"]
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "config.json") as resp:
                assert (await resp.json())["defaultHomeServer"] == info["homeserver_url"]
        member = next(u for u in info["demo_users"] if u["role"] == "member")
        demo = info["demo"]

        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                page.set_default_timeout(UI_TIMEOUT_MS)
                await page.goto(url)
                # Sign in: the homeserver is preset (config.json), name and password are typed.
                await page.fill("#username", member["user_id"].split(":")[0].lstrip("@"))
                await page.fill("#password", member["password"])
                await _shot(page, "1-sign-in")
                await page.click("button:has-text('Log In')")
                # The bot's invite waits in the room list: open it and accept.
                await page.click(f"text={demo['welcome_room_name']}")
                await page.click("button:has-text('Accept')")
                await page.wait_for_selector("text=Welcome to UnityPlan")
                composer = page.locator(
                    ".MessageComposer_input textarea, .MessageComposer textarea"
                )
                await composer.first.fill("!help")
                await composer.first.press("Enter")
                await page.wait_for_selector("text=Commands you can use here")
                await _shot(page, "2-help-answered")

                # The gated demo room: joining it is refused, and the client shows why.
                session_path = page.url.split("#", 1)[1].split("/room/")[0]
                await page.goto(f"{url}#{session_path}/room/{demo['gated_room_alias']}")
                await page.click("button:has-text('Join')")
                await page.wait_for_selector(f"text=requires the badge {demo['badge']}")
                await _shot(page, "3-gated-room-refused")
            finally:
                await browser.close()

        await _stop_dev(dev, children)
    finally:
        await _clean_up(devs, children, data_dir)
