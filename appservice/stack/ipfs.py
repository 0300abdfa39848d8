"""An IPFS node speaking the Kubo RPC API: js-ipfs from npm, offline, API on 127.0.0.1.

The npm packages are installed on first use into a cache folder keyed by the lock file, so a fresh
clone on a machine that ran once before starts in seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

from .process import ManagedProcess, StackError

PACKAGE_DIR = Path(__file__).parent / "ipfs_node"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "unityplan"


def node_install_dir() -> Path:
    lock = (PACKAGE_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock + (PACKAGE_DIR / "package.json").read_bytes()).hexdigest()[:12]
    return _cache_root() / f"ipfs-node-{digest}"


def jsipfs_path() -> Path:
    return node_install_dir() / "node_modules" / ".bin" / "jsipfs"


def install_node(log_path: Path) -> Path:
    """Install the IPFS node's npm packages (once); returns the jsipfs executable."""
    target = node_install_dir()
    jsipfs = jsipfs_path()
    if jsipfs.exists():
        return jsipfs
    npm = shutil.which("npm")
    if npm is None:
        raise StackError("npm was not found; install Node.js 20 and npm (`make deps` does).")
    print(
        "IPFS node: installing its npm packages (once; a few minutes)...",
        file=sys.stderr,
        flush=True,
    )
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copy(PACKAGE_DIR / name, staging / name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        result = subprocess.run(
            # `npm install` with the lock file: `npm ci` trips over an optional package the lock
            # records without a version ("headless"), and refuses to install at all.
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=staging,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if result.returncode != 0:
        raise StackError(f"npm ci for the IPFS node failed; see {log_path}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return jsipfs


OFFLINE_SETTINGS = {
    ("Addresses", "Swarm"): [],
    ("Addresses", "Delegates"): [],
    ("Addresses", "Announce"): [],
    ("Bootstrap",): [],
    ("Discovery", "MDNS", "Enabled"): False,
    ("Discovery", "webRTCStar", "Enabled"): False,
    ("Routing", "Type"): "none",
    ("Pubsub", "Enabled"): False,
}


class IpfsNode:
    def __init__(self, repo_dir: Path, api_port: int, gateway_port: int, *, log_path: Path) -> None:
        self.repo_dir = repo_dir
        self.api_port = api_port
        self.gateway_port = gateway_port
        self.log_path = log_path
        self.process: ManagedProcess | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _configure(self) -> None:
        config_path = self.repo_dir / "config"
        config = json.loads(config_path.read_text())
        for path, value in OFFLINE_SETTINGS.items():
            node = config
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value
        config["Addresses"]["API"] = f"/ip4/127.0.0.1/tcp/{self.api_port}"
        config["Addresses"]["Gateway"] = f"/ip4/127.0.0.1/tcp/{self.gateway_port}"
        config["Addresses"].pop("RPC", None)  # js-ipfs' gRPC-over-websocket API: not used
        config_path.write_text(json.dumps(config, indent=2))

    async def start(self) -> None:
        jsipfs = await asyncio.to_thread(install_node, self.log_path.with_name("npm.log"))
        env = {"IPFS_PATH": str(self.repo_dir)}
        if not (self.repo_dir / "config").exists():
            init = await asyncio.create_subprocess_exec(
                str(jsipfs),
                "init",
                "--empty-repo",
                env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await init.communicate()
            if init.returncode != 0:
                raise StackError(f"jsipfs init failed: {output.decode(errors='replace')[-500:]}")
        self._configure()
        # A killed daemon leaves its API file and repo lock behind; both would stop the next start.
        (self.repo_dir / "api").unlink(missing_ok=True)
        shutil.rmtree(self.repo_dir / "repo.lock", ignore_errors=True)
        self.process = ManagedProcess(
            "ipfs",
            [str(jsipfs), "daemon", "--offline", "--enable-preload=false"],
            log_path=self.log_path,
            env=env,
        )
        self.process.start()
        await self.process.wait_ready(self._answers, timeout=60, what="answering its RPC API")

    async def _answers(self) -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"{self.api_url}/api/v0/version", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp,
        ):
            return resp.status == 200

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()


if __name__ == "__main__":
    # `python -m appservice.stack.ipfs`: install the npm packages now (make dev/test do this).
    import sys

    log_file = _cache_root() / "npm-install.log"
    print(f"IPFS node: {install_node(log_file)}", file=sys.stderr)
