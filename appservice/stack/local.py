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
from .synapse import SynapseServer

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


class LocalStack:
    def __init__(self, options: StackOptions) -> None:
        self.options = options
        self.root = options.data_dir.resolve()
        # A stack killed with SIGKILL left its servers running: stop them (clients first), before
        # their ports are chosen, so this start gets the same ones.
        reap_leftovers(self.root / "run", ("appservice", "synapse"))
        self.server_name = f"{options.territory}.localhost"
        self.database_role = default_role(territory_code(options.territory))
        self.ports = self._ports()
        self.postgres = PostgresServer(
            self.root / "postgres" / "data",
            self.ports["postgres"],
            log_path=self.root / "logs" / "postgres.log",
            fast=options.fast,
        )
        self.nats = NatsServer(
            self.root / "nats",
            self.ports["nats"],
            self.ports["nats_monitor"],
            log_path=self.root / "logs" / "nats.log",
            users={options.territory: self._secret(f"nats-{options.territory}")},
        )
        self.ipfs = IpfsNode(
            self.root / "ipfs",
            self.ports["ipfs_api"],
            self.ports["ipfs_gateway"],
            log_path=self.root / "logs" / "ipfs.log",
        )
        self.config_path = self.root / "appservice" / "config.yaml"
        self.registration_path = self.root / "appservice" / "registration.yaml"
        self.gate_token = self._secret("gate-token")
        self.synapse = SynapseServer(
            self.root / "synapse",
            self.server_name,
            self.ports["synapse"],
            [self.registration_path, *options.extra_registrations],
            modules=[
                {
                    "module": "unityplan_gate.BadgeGate",
                    "config": {
                        "url": f"http://127.0.0.1:{self.ports['appservice']}",
                        "token": self.gate_token,
                        "timeout_seconds": 3,
                    },
                }
            ],
        )
        self.platform: Platform | None = None
        self.appservice: SupervisedAppservice | None = None
        self.config: Config | None = None
        self.demo_users: list[DemoUser] = []
        self.restart_listeners: list[Callable[[int], None]] = []

    def _secret(self, name: str) -> str:
        """A random secret made once and kept in the data folder."""
        path = self.root / f"{name}.txt"
        if not path.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            write_private(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _ports(self) -> dict[str, int]:
        """Ports are remembered in the data folder so a restarted dev stack keeps its URLs."""
        known = {
            "synapse": 8008,
            "appservice": 29333,
            "postgres": 5432,
            "nats": 4222,
            "nats_monitor": 8222,
            "ipfs_api": 5001,
            "ipfs_gateway": 9090,
        }
        saved_path = self.root / "ports.json"
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        ports = {}
        for name, well_known in known.items():
            preferred = saved.get(name) or (well_known if self.options.well_known_ports else None)
            ports[name] = free_port(preferred)
        self.root.mkdir(parents=True, exist_ok=True)
        saved_path.write_text(json.dumps(ports, indent=2))
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
            await asyncio.gather(self.postgres.start(), self.nats.start(), self.ipfs.start())
            await self._provision_database()
            self._write_appservice_config()
            self.config = load_config(self.config_path, environ={})
            if self.options.appservice_process:
                self.appservice = SupervisedAppservice(
                    self.config_path,
                    ready_url=self.config.appservice.address + "/ready",
                    log_path=self.root / "logs" / "appservice.log",
                    on_restart=self._appservice_restarted,
                )
                self.appservice.start()
                await self.synapse.start()
                await self.appservice.first_ready()
            else:
                self.platform = Platform(self.config)
                await self.platform.start()
                await self.synapse.start()
                await self._wait_platform_connected()
            await self._create_demo_users()
        except BaseException:
            await self.stop()
            raise

    @property
    def database_url(self) -> str:
        """What the territory's appservice logs in as: its own role, not the admin."""
        return self.postgres.dsn(user=self.database_role, password=self._secret("db-role"))

    async def _provision_database(self) -> None:
        # As the admin: migrate the shared schemas and give the territory its own role, as an
        # operator does with `unityplan db migrate` and database.admin_url.
        await provision_territory(
            self.postgres.dsn(), territory_code(self.options.territory), self.database_url
        )

    def _write_appservice_config(self) -> None:
        from registration.generate import generate

        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        admin = f"@{self.options.demo_users[0][0]}:{self.server_name}"
        port = self.ports["appservice"]
        values: dict[str, dict[str, Any]] = {
            "territory": {
                "code": self.options.territory,
                "name": self.options.territory_name,
                "data_residency": self.options.territory,
            },
            "homeserver": {"address": self.synapse.url, "domain": self.server_name},
            "appservice": {
                "address": f"http://127.0.0.1:{port}",
                "hostname": "127.0.0.1",
                "port": port,
                "registration": str(self.registration_path),
                # Local scripts may use a demo user's access token against the API.
                "api_accepts_access_tokens": True,
            },
            "database": {"url": self.database_url},
            "nats": {
                "url": self.nats.url,
                "user": self.options.territory,
                "password": self.nats.users[self.options.territory],
            },
            "ipfs": {"api_url": self.ipfs.api_url},
            "gate": {"module_token": self.gate_token},
            "permissions": {
                "admins": [admin],
                "badge_issuers": [admin],
                "course_admins": [admin],
                "badge_admins": [admin],
            },
        }
        for section, keys in self.options.config_overrides.items():
            values.setdefault(section, {}).update(keys)
        write_config(values, self.config_path)
        generate(
            load_config(self.config_path, environ={}).registration_spec(), self.registration_path
        )

    async def restart_platform(self) -> Platform:
        """Stop the appservice and start a new one on the same config (as after a crash)."""
        assert self.config is not None
        if self.platform is not None:
            await self.platform.stop()
            self.platform = None
        self.platform = Platform(self.config)
        await self.platform.start()
        await self._wait_platform_connected()
        return self.platform

    async def _wait_platform_connected(self, timeout: float = 30) -> None:
        assert self.platform is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.platform._homeserver_connected:
            if loop.time() > deadline:
                raise StackError("the appservice could not ping the homeserver")
            await asyncio.sleep(0.05)

    async def _create_demo_users(self) -> None:
        saved_path = self.root / "demo-users.json"
        saved = json.loads(saved_path.read_text()) if saved_path.exists() else {}
        users = []
        for localpart, role in self.options.demo_users:
            password = saved.get(localpart) or secrets.token_urlsafe(12)
            user_id = await self.synapse.register_user(
                localpart, password, admin=(role == "admin"), displayname=localpart.title()
            )
            users.append(DemoUser(user_id, localpart, password, role))
        write_private(saved_path, json.dumps({u.localpart: u.password for u in users}))
        self.demo_users = users

    def pids(self) -> dict[str, Any]:
        """The keys of info() that change while the stack runs (the appservice's pid)."""
        if self.appservice is None:
            return {}
        pid = self.appservice.pid
        territories = [{**t, "appservice_pid": pid} for t in self.info()["territories"]]
        return {"appservice_pid": pid, "territories": territories}

    def info(self) -> dict[str, Any]:
        """What stack.json holds: how scripts and people reach every piece."""
        assert self.config is not None
        territory = {
            "code": self.options.territory,
            "name": self.options.territory_name,
            "homeserver_url": self.synapse.url,
            "server_name": self.server_name,
            "bot_user_id": self.config.bot_user_id,
            "appservice_url": self.config.appservice.address,
            "api_url": self.config.appservice.address,
            "config_path": str(self.config_path),
            "database_url": self.database_url,
            "demo_users": [u.as_json() for u in self.demo_users],
            **({"appservice_pid": self.appservice.pid} if self.appservice else {}),
        }
        return {
            "homeserver_url": self.synapse.url,
            "server_name": self.server_name,
            "bot_user_id": self.config.bot_user_id,
            "appservice_url": self.config.appservice.address,
            "api_url": self.config.appservice.address,
            "config_path": str(self.config_path),
            "registration_path": str(self.registration_path),
            "database_url": self.database_url,
            # The role that owns the shared schemas (migrations, `territory add`).
            "admin_database_url": self.postgres.dsn(),
            "nats_url": self.nats.url,
            "ipfs_api_url": self.ipfs.api_url,
            "logs_dir": str(self.root / "logs"),
            "demo_users": [u.as_json() for u in self.demo_users],
            "territories": [territory],
            **({"appservice_pid": self.appservice.pid} if self.appservice else {}),
        }

    def _appservice_restarted(self, pid: int) -> None:
        log.info("The appservice runs again (pid %d)", pid)
        for listener in self.restart_listeners:
            listener(pid)

    async def stop(self) -> None:
        if self.appservice is not None:
            await self.appservice.stop()
            self.appservice = None
        if self.platform is not None:
            await self.platform.stop()
            self.platform = None
        await self.synapse.stop()
        await asyncio.gather(self.ipfs.stop(), self.nats.stop(), self.postgres.stop())
