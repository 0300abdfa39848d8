"""`unityplan dev`: the local stack in the foreground, with stack.json and login instructions."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core.secrets import write_private

from .app import Platform
from .stack.ipfs import jsipfs_path
from .stack.local import LocalStack, StackOptions
from .stack.seed import seed_demo, welcome
from .stack.webclient import build_dir

log = logging.getLogger("unityplan.dev")


def _name(code: str) -> str:
    return f"Local territory {code.upper()}"


class DevStack:
    def __init__(self, data_dir: Path, territories: list[str], *, second_db: bool = False) -> None:
        self.data_dir = data_dir.resolve()
        first, *more = territories
        # Federating homeservers have other server names (localhost:<port>), so a stack of several
        # territories keeps its data apart from the one-territory stack's; stack.json stays here.
        root = self.data_dir if not more else self.data_dir / f"territories-{'-'.join(territories)}"
        self.stack = LocalStack(
            StackOptions(
                data_dir=root,
                territory=first,
                territory_name=_name(first),
                well_known_ports=True,
                appservice_process=True,  # a supervised `unityplan run`, as in production
                more_territories=tuple((code, _name(code)) for code in more),
                second_postgres=second_db,
                web_client=True,
            )
        )
        self.stack.restart_listeners.append(self._appservice_restarted)
        self._info: dict[str, Any] | None = None
        self.stack_json = self.data_dir / "stack.json"

    async def start(self) -> None:
        logs = self.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(logs / "dev.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(handler)
        first_install = (
            ""
            if jsipfs_path().exists() and (build_dir() / "dist").exists()
            else " (first, the IPFS node and the web client are installed from npm: a few minutes)"
        )
        print(f"Starting the local stack in {self.data_dir}{first_install}...", flush=True)
        await self.stack.start()
        assert self.stack.config is not None
        admin = next(u.user_id for u in self.stack.demo_users if u.role == "admin")
        info = self.stack.info()
        async with Platform(self.stack.config).offline() as tools:
            info["demo"] = await seed_demo(tools, admin)
            for user in self.stack.demo_users:
                await welcome(tools, user.user_id)
        self._info = info
        self._write_stack_json()
        print(self._banner(info), flush=True)

    def _write_stack_json(self) -> None:
        assert self._info is not None
        info = {**self._info, **self.stack.pids()}
        write_private(self.stack_json, json.dumps(info, indent=2))  # passwords are in it

    def _appservice_restarted(self, pid: int) -> None:
        if self._info is not None:
            self._write_stack_json()  # appservice_pid stays current

    def _banner(self, info: dict) -> str:
        def listed(users: list[dict]) -> str:
            return "\n".join(
                f"    {u['role']:<7} {u['user_id']:<28} password: {u['password']}" for u in users
            )

        users = listed(info["demo_users"])
        others = "".join(
            f"""
  Territory {t["code"]} ({t["name"]}), federating with the others over TLS:
    Web client: {t.get("web_client_url", "-")}
    Homeserver: {t["homeserver_url"]}   server name {t["server_name"]}
    Bot: {t["bot_user_id"]}   API: {t["api_url"]}
{listed(t["demo_users"])}
"""
            for t in info["territories"][1:]
        )
        return f"""
UnityPlan is running.

  Web client (open it in a browser):   {info.get("web_client_url", "-")}
  Homeserver (for your Matrix client): {info["homeserver_url"]}
  Bot:                                 {info["bot_user_id"]}
  Appservice API, /health, /metrics:   {info["api_url"]}
  Demo users:
{users}
{others}
Open the web client and sign in as member (or use Element or any Matrix client with the
homeserver {info["homeserver_url"]}). Start a chat with {info["bot_user_id"]} and send !help. Try the demo course: !course enroll {info["demo"]["course"]}

Everything about this stack is in {self.stack_json}; logs are in {info["logs_dir"]}.
Press Ctrl-C to stop (your data stays in {self.data_dir}).
"""

    async def stop(self) -> None:
        self.stack_json.unlink(missing_ok=True)
        await self.stack.stop()
        print("Stopped.", flush=True)
