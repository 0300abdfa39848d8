"""The whole local stack, started in dependency order and stopped in reverse.

PostgreSQL, NATS and the IPFS node start together; then the appservice (so its HTTP server is up
before the homeserver sends anything), then Synapse with the registration, then the appservice pings
the homeserver.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.secrets import write_private
from db.roles import default_role
from db.setup import provision_territory
from db.territory import territory_code

from ..app import Platform
from ..config import Config, load_config, write_config
from .ipfs import IpfsNode
from .nats import NatsServer
from .postgres import PostgresServer
from .process import StackError, free_port, reap_leftovers
from .supervisor import SupervisedAppservice
from .synapse import Federation, SynapseServer
from .tls import LocalCA
from .webclient import WebClientServer, build

log = logging.getLogger("unityplan.stack")


@dataclass(frozen=True)
class DemoUser:
    user_id: str
    localpart: str
    password: str
    role: str  # "admin" | "member"

    def as_json(self) -> dict[str, str]:
        return {"user_id": self.user_id, "password": self.password, "role": self.role}


@dataclass
class StackOptions:
    data_dir: Path
    territory: str = "dk"
    territory_name: str = "Denmark"
    # Dev uses the well-known ports when free (Synapse 8008); tests take any free ones.
    well_known_ports: bool = False
    # fsync off and similar: for throwaway stacks (tests, benchmarks).
    fast: bool = False
    demo_users: tuple[tuple[str, str], ...] = (("admin", "admin"), ("member", "member"))
    # More registration files for Synapse (e.g. the benchmark's echo appservice).
    extra_registrations: list[Path] = field(default_factory=list)
    # Config values (section -> key -> value) over the stack's own, e.g. short badge timers.
    config_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The appservice as a supervised `unityplan run` child (as `unityplan dev` and production run
    # it) instead of in this process (as most tests do, to look inside it).
    appservice_process: bool = False
    # More territories, (code, name) each: then every territory's homeserver federates with the
    # others over TLS on loopback (server names localhost:<port>), each with its own appservice.
    more_territories: tuple[tuple[str, str], ...] = ()
    # Config values for one territory only (code -> section -> key -> value), over the above.
    territory_overrides: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # A second, empty PostgreSQL server to move a territory to (`unityplan territory migrate`).
    second_postgres: bool = False
    # A web client (Hydrogen) for each territory's homeserver, as `unityplan dev` serves it.
    web_client: bool = False
    # The homeserver's largest upload (Synapse's max_upload_size; the benchmarks send 100 MB).
    max_upload_size: str = "50M"

    @property
    def federating(self) -> bool:
        return bool(self.more_territories)


class TerritoryNode:
    """One territory of the stack: its homeserver, its appservice (in this process or a child) and
    its config, registration, secrets and demo users."""

    def __init__(self, stack: LocalStack, index: int, code: str, name: str) -> None:
        self.stack = stack
        self.index = index
        self.code = code
        self.name = name
        # The first territory keeps the folders and port names a one-territory stack always had.
        suffix = "" if index == 0 else f"_{code}"
        self.root = stack.root if index == 0 else stack.root / "territories" / code
        self.synapse_port = stack.ports[f"synapse{suffix}"]
        self.appservice_port = stack.ports[f"appservice{suffix}"]
        self.web_client_port = stack.ports.get(f"web_client{suffix}")
        self.web_client: WebClientServer | None = None
        federation: Federation | None = None
        if stack.options.federating:
            port = stack.ports[f"synapse_federation{suffix}"]
            federation = Federation(port, stack.ca.issue(f"synapse-{code}"), stack.ca.cert_path)
            self.server_name = f"localhost:{port}"
        else:
            self.server_name = f"{code}.localhost"
        self.database_role = default_role(territory_code(code))
        self.nats_password = stack.secret(f"nats-{code}")
        self.config_path = self.root / "appservice" / "config.yaml"
        self.registration_path = self.root / "appservice" / "registration.yaml"
        self.gate_token = stack.secret("gate-token" if index == 0 else f"gate-token-{code}")
        extra = stack.options.extra_registrations if index == 0 else []
        self.synapse = SynapseServer(
            self.root / "synapse",
            self.server_name,
            self.synapse_port,
            [self.registration_path, *extra],
            modules=[
                {
                    "module": "unityplan_gate.BadgeGate",
                    "config": {
                        "url": f"http://127.0.0.1:{self.appservice_port}",
                        "token": self.gate_token,
                        "timeout_seconds": 3,
                    },
                }
            ],
            federation=federation,
            name="synapse" if index == 0 else f"synapse-{code}",
            run_dir=stack.root / "run",
            max_upload_size=stack.options.max_upload_size,
        )
        self.platform: Platform | None = None
        self.appservice: SupervisedAppservice | None = None
        self.config: Config | None = None
        self.demo_users: list[DemoUser] = []

    @property
    def database_url(self) -> str:
        """What the territory's appservice logs in as: its own role, not the admin."""
        secret = self.stack.secret("db-role" if self.index == 0 else f"db-role-{self.code}")
        return self.stack.postgres.dsn(user=self.database_role, password=secret)

    async def provision_database(self) -> None:
        # As the admin: migrate the shared schemas and give the territory its own role, as an
        # operator does with `unityplan db migrate` and database.admin_url.
        await provision_territory(
            self.stack.postgres.dsn(), territory_code(self.code), self.database_url
        )

    def write_config(self) -> None:
        from registration.generate import generate

        options = self.stack.options
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        admin = f"@{options.demo_users[0][0]}:{self.server_name}"
        values: dict[str, dict[str, Any]] = {
            "territory": {"code": self.code, "name": self.name, "data_residency": self.code},
            "homeserver": {"address": self.synapse.url, "domain": self.server_name},
            "appservice": {
                "address": f"http://127.0.0.1:{self.appservice_port}",
                "hostname": "127.0.0.1",
                "port": self.appservice_port,
                "registration": str(self.registration_path),
                # Local scripts may use a demo user's access token against the API.
                "api_accepts_access_tokens": True,
            },
            "database": {"url": self.database_url},
            "nats": {"url": self.stack.nats.url, "user": self.code, "password": self.nats_password},
            "ipfs": {"api_url": self.stack.ipfs.api_url},
            "gate": {"module_token": self.gate_token},
            "permissions": {
                "admins": [admin],
                "badge_issuers": [admin],
                "course_admins": [admin],
                "badge_admins": [admin],
            },
        }
        for overrides in (options.config_overrides, options.territory_overrides.get(self.code, {})):
            for section, keys in overrides.items():
                values.setdefault(section, {}).update(keys)
        write_config(values, self.config_path)
        generate(
            load_config(self.config_path, environ={}).registration_spec(), self.registration_path
        )
        self.config = load_config(self.config_path, environ={})

    async def start_appservice(self) -> None:
        """The appservice first (its HTTP server is up before the homeserver sends anything), then
        the homeserver, then wait until the appservice has pinged it."""
        assert self.config is not None
        if self.stack.options.appservice_process:
            log_name = "appservice.log" if self.index == 0 else f"appservice-{self.code}.log"
            self.appservice = SupervisedAppservice(
                self.config_path,
                ready_url=self.config.appservice.address + "/ready",
                log_path=self.stack.root / "logs" / log_name,
                on_restart=self._restarted,
                name="appservice" if self.index == 0 else f"appservice-{self.code}",
            )
            self.appservice.start()
            await self.synapse.start()
            await self.appservice.first_ready()
        else:
            self.platform = Platform(self.config)
            await self.platform.start()
            await self.synapse.start()
            await self.wait_platform_connected()

    async def wait_platform_connected(self, timeout: float = 30) -> None:
        assert self.platform is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.platform._homeserver_connected:
            if loop.time() > deadline:
                raise StackError("the appservice could not ping the homeserver")
            await asyncio.sleep(0.05)

    def _restarted(self, pid: int) -> None:
        log.info("The appservice of %s runs again (pid %d)", self.code, pid)
        for listener in self.stack.restart_listeners:
            listener(pid)

    async def create_demo_users(self) -> None:
        name = "demo-users.json" if self.index == 0 else f"demo-users-{self.code}.json"
        saved_path = self.stack.root / name
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        users = []
        for localpart, role in self.stack.options.demo_users:
            password = saved.get(localpart) or secrets.token_urlsafe(12)
            user_id = await self.synapse.register_user(
                localpart, password, admin=(role == "admin"), displayname=localpart.title()
            )
            users.append(DemoUser(user_id, localpart, password, role))
        write_private(saved_path, json.dumps({u.localpart: u.password for u in users}))
        self.demo_users = users

    def info(self) -> dict[str, Any]:
        assert self.config is not None
        return {
            "code": self.code,
            "name": self.name,
            "homeserver_url": self.synapse.url,
            "server_name": self.server_name,
            "bot_user_id": self.config.bot_user_id,
            "appservice_url": self.config.appservice.address,
            "api_url": self.config.appservice.address,
            "config_path": str(self.config_path),
            "registration_path": str(self.registration_path),
            "database_url": self.database_url,
            "demo_users": [u.as_json() for u in self.demo_users],
            **({"appservice_pid": self.appservice.pid} if self.appservice else {}),
            **({"web_client_url": self.web_client.url} if self.web_client else {}),
        }

    async def start_web_client(self, dist: Path) -> None:
        assert self.web_client_port is not None
        self.web_client = WebClientServer(dist, self.web_client_port, self.synapse.url)
        await self.web_client.start()

    async def stop(self) -> None:
        if self.web_client is not None:
            await self.web_client.stop()
            self.web_client = None
        if self.appservice is not None:
            await self.appservice.stop()
            self.appservice = None
        if self.platform is not None:
            await self.platform.stop()
            self.platform = None
        await self.synapse.stop()


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.root = options.data_dir.resolve()
        # A stack killed with SIGKILL left its servers running: stop them (clients first), before
        # their ports are chosen, so this start gets the same ones.
        reap_leftovers(self.root / "run", ("appservice", "synapse"))
        codes = [options.territory, *(code for code, _ in options.more_territories)]
        if len(set(codes)) != len(codes):
            raise StackError(f"territory codes must differ: {', '.join(codes)}")
        self.ports = self._ports(codes)
        self.ca = LocalCA(self.root / "tls")
        self.postgres = PostgresServer(
            self.root / "postgres" / "data",
            self.ports["postgres"],
            log_path=self.root / "logs" / "postgres.log",
            fast=options.fast,
        )
        self.postgres2 = (
            PostgresServer(
                self.root / "postgres2" / "data",
                self.ports["postgres2"],
                log_path=self.root / "logs" / "postgres2.log",
                fast=options.fast,
                name="postgres2",
            )
            if options.second_postgres
            else None
        )
        names = [options.territory_name, *(name for _, name in options.more_territories)]
        self.territories = [
            TerritoryNode(self, index, code, name)
            for index, (code, name) in enumerate(zip(codes, names, strict=True))
        ]
        self.nats = NatsServer(
            self.root / "nats",
            self.ports["nats"],
            self.ports["nats_monitor"],
            log_path=self.root / "logs" / "nats.log",
            users={node.code: node.nats_password for node in self.territories},
        )
        self.ipfs = IpfsNode(
            self.root / "ipfs",
            self.ports["ipfs_api"],
            self.ports["ipfs_gateway"],
            log_path=self.root / "logs" / "ipfs.log",
        )
        self.restart_listeners: list[Callable[[int], None]] = []

    # The first territory, as a one-territory stack always described itself.
    @property
    def first(self) -> TerritoryNode:
        return self.territories[0]

    def territory(self, code: str) -> TerritoryNode:
        return next(t for t in self.territories if t.code == code)

    @property
    def server_name(self) -> str:
        return self.first.server_name

    @property
    def synapse(self) -> SynapseServer:
        return self.first.synapse

    @property
    def config_path(self) -> Path:
        return self.first.config_path

    @property
    def registration_path(self) -> Path:
        return self.first.registration_path

    @property
    def gate_token(self) -> str:
        return self.first.gate_token

    @property
    def database_role(self) -> str:
        return self.first.database_role

    @property
    def database_url(self) -> str:
        return self.first.database_url

    @property
    def config(self) -> Config | None:
        return self.first.config

    @property
    def demo_users(self) -> list[DemoUser]:
        return self.first.demo_users

    @property
    def platform(self) -> Platform | None:
        return self.first.platform

    @property
    def appservice(self) -> SupervisedAppservice | None:
        return self.first.appservice

    def secret(self, name: str) -> str:
        """A random secret made once and kept in the data folder."""
        path = self.root / f"{name}.txt"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_private(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _ports(self, codes: list[str]) -> dict[str, int]:
        """Ports are remembered in the data folder so a restarted dev stack keeps its URLs."""
        known: dict[str, int | None] = {
            "synapse": 8008,
            "appservice": 29333,
            "postgres": 5432,
            "nats": 4222,
            "nats_monitor": 8222,
            "ipfs_api": 5001,
            "ipfs_gateway": 9090,
        }
        if self.options.federating:
            known["synapse_federation"] = 8448
        if self.options.second_postgres:
            known["postgres2"] = 5433
        if self.options.web_client:
            known["web_client"] = 8080
        for code in codes[1:]:
            known |= {f"synapse_{code}": None, f"appservice_{code}": None}
            known[f"synapse_federation_{code}"] = None
            if self.options.web_client:
                known[f"web_client_{code}"] = None
        saved_path = self.root / "ports.json"
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        ports: dict[str, int] = {}
        for name, well_known in known.items():
            preferred = saved.get(name) or (well_known if self.options.well_known_ports else None)
            ports[name] = free_port(preferred)  # never one handed out already
        self.root.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps({**saved, **ports}, indent=2))
        return ports

    def _make_traversable(self) -> None:
        # PostgreSQL runs as an unprivileged user when we are root: it must reach its folder.
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            for folder in [self.root, *self.root.parents]:
                mode = folder.stat().st_mode
                if not mode & 0o001:
                    folder.chmod(mode | 0o011)

    async def start(self) -> None:
        self._make_traversable()
        try:
            starts = [self.postgres.start(), self.nats.start(), self.ipfs.start()]
            if self.postgres2 is not None:
                starts.append(self.postgres2.start())
            await asyncio.gather(*starts)
            for node in self.territories:
                await node.provision_database()
                node.write_config()
            # The territories start side by side: each its appservice, then its homeserver.
            await asyncio.gather(*(node.start_appservice() for node in self.territories))
            for node in self.territories:
                await node.create_demo_users()
            if self.options.web_client:
                dist = await asyncio.to_thread(build, self.root / "logs" / "web-client-build.log")
                for node in self.territories:
                    await node.start_web_client(dist)
        except BaseException:
            await self.stop()
            raise

    async def restart_platform(self) -> Platform:
        """Stop the first territory's appservice and start a new one on the same config (as
        after a crash)."""
        await self.stop_platform()
        return await self.start_platform()

    async def stop_platform(self) -> None:
        """Stop the first territory's in-process appservice (the homeserver queues its events)."""
        node = self.first
        if node.platform is not None:
            await node.platform.stop()
            node.platform = None

    async def start_platform(self) -> Platform:
        """Start the first territory's appservice in this process again, until it has pinged
        the homeserver (which then sends what it queued)."""
        node = self.first
        assert node.config is not None and node.platform is None
        node.platform = Platform(node.config)
        await node.platform.start()
        await node.wait_platform_connected()
        return node.platform

    def pids(self) -> dict[str, Any]:
        """The keys of info() that change while the stack runs (the appservices' pids)."""
        if self.appservice is None:
            return {}
        territories = [node.info() for node in self.territories]
        return {"appservice_pid": self.appservice.pid, "territories": territories}

    def info(self) -> dict[str, Any]:
        """What stack.json holds: how scripts and people reach every piece."""
        first = self.first.info()
        return {
            **{
                key: first[key]
                for key in (
                    "homeserver_url",
                    "server_name",
                    "bot_user_id",
                    "appservice_url",
                    "api_url",
                    "config_path",
                    "registration_path",
                    "database_url",
                )
            },
            # The role that owns the shared schemas (migrations, `territory add`).
            "admin_database_url": self.postgres.dsn(),
            "nats_url": self.nats.url,
            "ipfs_api_url": self.ipfs.api_url,
            "logs_dir": str(self.root / "logs"),
            **({"web_client_url": first["web_client_url"]} if "web_client_url" in first else {}),
            "demo_users": first["demo_users"],
            "territories": [node.info() for node in self.territories],
            **({"appservice_pid": self.appservice.pid} if self.appservice else {}),
            **({"tls_ca_path": str(self.ca.cert_path)} if self.options.federating else {}),
            # The second server's admin: the --to of `unityplan territory migrate`.
            **(
                {"second_database_admin_url": self.postgres2.dsn()}
                if self.postgres2 is not None
                else {}
            ),
        }

    async def stop(self) -> None:
        await asyncio.gather(*(node.stop() for node in self.territories))
        stops = [self.ipfs.stop(), self.nats.stop(), self.postgres.stop()]
        if self.postgres2 is not None:
            stops.append(self.postgres2.stop())
        await asyncio.gather(*stops)
