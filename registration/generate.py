"""Build the registration for a territory from its config; keep tokens unless asked to rotate."""

from __future__ import annotations

import io
import re
import secrets
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from appservice.config import Config


def user_namespace(config: Config) -> str:
    return f"@{re.escape(config.appservice.user_prefix)}.*:{re.escape(config.homeserver.domain)}"


def alias_namespace(config: Config) -> str:
    """Forum topic rooms: #forum_<slug>:server."""
    return f"#{re.escape(config.appservice.alias_prefix)}.*:{re.escape(config.homeserver.domain)}"


def managed_alias_namespace(config: Config) -> str:
    """Other rooms the platform manages (e.g. gated rooms it creates): #unity_<name>:server."""
    return f"#{re.escape(config.appservice.user_prefix)}.*:{re.escape(config.homeserver.domain)}"


def new_token() -> str:
    return secrets.token_urlsafe(48)


def build_registration(config: Config, as_token: str, hs_token: str) -> dict[str, Any]:
    return {
        "id": config.appservice.id,
        "url": config.appservice.address,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": config.appservice.bot_localpart,
        "rate_limited": False,
        "receive_ephemeral": True,
        "namespaces": {
            "users": [{"regex": user_namespace(config), "exclusive": True}],
            "aliases": [
                {"regex": alias_namespace(config), "exclusive": True},
                {"regex": managed_alias_namespace(config), "exclusive": True},
            ],
            "rooms": [],
        },
    }


def load_registration(path: Path) -> dict[str, Any]:
    data = YAML(typ="safe").load(path.read_text("utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a registration (expected a YAML mapping)")
    return data


def dump_registration(registration: dict[str, Any]) -> str:
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(registration, buffer)
    return buffer.getvalue()


def generate(config: Config, output: Path, *, rotate: bool = False) -> dict[str, Any]:
    """Write the registration to ``output``; existing tokens are kept unless ``rotate``."""
    as_token, hs_token = new_token(), new_token()
    if output.exists() and not rotate:
        existing = load_registration(output)
        as_token = existing.get("as_token") or as_token
        hs_token = existing.get("hs_token") or hs_token
    registration = build_registration(config, as_token, hs_token)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(output.name + ".tmp")
    tmp.write_text(dump_registration(registration), "utf-8")
    tmp.chmod(0o600)
    tmp.replace(output)
    return registration
