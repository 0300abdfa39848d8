"""A real Matrix web client for the local stack: Hydrogen (npm ``hydrogen-view-sdk``), bundled with
esbuild and served on a local port, preconfigured for one territory's homeserver.

The build happens once into a cache folder keyed by the package files and the entry point (like
the IPFS node), so later starts serve it at once; it shows its steps as it goes. Each territory gets
its own server (its own port and ``config.json``: the homeserver to sign in to).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from aiohttp import web

from .process import StackError

PACKAGE_DIR = Path(__file__).parent / "web_client"
SOURCES = ("package.json", "package-lock.json", "main.js", "index.html")


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unityplan"


def build_dir() -> Path:
    digest = hashlib.sha256(b"".join((PACKAGE_DIR / n).read_bytes() for n in SOURCES))
    return _cache_root() / f"web-client-{digest.hexdigest()[:12]}"


def _say(line: str) -> None:
    print(f"web client: {line}", file=sys.stderr, flush=True)


def build(log_path: Path) -> Path:
    """The built client (its ``dist`` folder), built now if it is not cached yet."""
    target = build_dir()
    dist = target / "dist"
    if (dist / "app.js").exists():
        return dist
    npm, npx = shutil.which("npm"), shutil.which("npx")
    if npm is None or npx is None:
        raise StackError("npm was not found; install Node.js 20 and npm (`make deps` does).")
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in SOURCES:
        shutil.copy(PACKAGE_DIR / name, staging / name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    steps = [
        ("installing Hydrogen and esbuild from npm (once)", [npm, "ci", "--no-audit", "--no-fund"]),
        (
            "bundling it",
            [
                npx,
                "esbuild",
                "main.js",
                "--bundle",
                "--format=esm",
                "--minify",
                "--outfile=dist/app.js",
                # Olm is loaded at run time from olm/ (assetPaths); its Node fallbacks are not.
                "--external:crypto",
                "--external:path",
                "--external:fs",
            ],
        ),
    ]
    with open(log_path, "ab") as out:
        for number, (what, command) in enumerate(steps, 1):
            _say(f"step {number}/{len(steps) + 1}: {what}")
            result = subprocess.run(command, cwd=staging, stdout=out, stderr=subprocess.STDOUT)
            if result.returncode != 0:
                raise StackError(f"Building the web client failed ({what}); see {log_path}")
    _say(f"step {len(steps) + 1}/{len(steps) + 1}: collecting its assets")
    sdk = staging / "node_modules" / "hydrogen-view-sdk"
    olm = staging / "node_modules" / "@matrix-org" / "olm"
    shutil.copytree(sdk / "asset-build" / "assets", staging / "dist" / "assets")
    (staging / "dist" / "olm").mkdir()
    for name in ("olm.js", "olm.wasm", "olm_legacy.js"):
        shutil.copy(olm / name, staging / "dist" / "olm" / name)
    shutil.copy(sdk / "lib-build" / "sw.js", staging / "dist" / "sw.js")
    shutil.copy(staging / "index.html", staging / "dist" / "index.html")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return dist


class WebClientServer:
    """Serves the built client with a ``config.json`` naming one homeserver."""

    def __init__(self, dist: Path, port: int, homeserver_url: str) -> None:
        self.dist = dist
        self.port = port
        self.homeserver_url = homeserver_url
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        config = json.dumps({"defaultHomeServer": self.homeserver_url})

        async def config_json(_: web.Request) -> web.Response:
            return web.Response(
                text=config, content_type="application/json", headers={"Cache-Control": "no-store"}
            )

        async def index(_: web.Request) -> web.FileResponse:
            return web.FileResponse(self.dist / "index.html")

        app = web.Application()
        app.router.add_get("/config.json", config_json)
        app.router.add_get("/", index)
        app.router.add_static("/", self.dist)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


if __name__ == "__main__":
    # `python -m appservice.stack.webclient`: build it now (make dev and make test do this).
    print(f"web client: {build(_cache_root() / 'web-client-build.log')}", file=sys.stderr)
