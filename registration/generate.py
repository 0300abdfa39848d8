"""Build the registration for a territory from its config; keep tokens unless asked to rotate."""

from __future__ import annotations

import io
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from core.ids import Namespace
from core.secrets import write_private


@dataclass(frozen=True)
class RegistrationSpec:
    """What the registration says, from the territory's config (``Config.registration_spec()``)."""

    id: str
    url: str
    namespace: Namespace
    alias_prefix: str


def user_namespace(spec: RegistrationSpec) -> str:
    return spec.namespace.user_regex


def alias_namespace(spec: RegistrationSpec) -> str:
    """Forum topic rooms: #forum_<slug>:server."""
    return f"#{re.escape(spec.alias_prefix)}.*:{re.escape(spec.namespace.server_name)}"


def managed_alias_namespace(spec: RegistrationSpec) -> str:
    """Other rooms the platform manages (e.g. gated rooms it creates): #unity_<name>:server."""
    ns = spec.namespace
    return f"#{re.escape(ns.user_prefix)}.*:{re.escape(ns.server_name)}"


def new_token() -> str:
    return secrets.token_urlsafe(48)


def build_registration(spec: RegistrationSpec, as_token: str, hs_token: str) -> dict[str, Any]:
    return {
        "id": spec.id,
        "url": spec.url,
        "as_token": as_token,
        "hs_token": hs_token,
        "sender_localpart": spec.namespace.bot_localpart,
        "rate_limited": False,
        "receive_ephemeral": True,
        # End-to-end encryption the appservice way: to-device messages, one-time key counts and
        # device lists in transactions (MSC2409, MSC3202), the bot's device made with the as_token
        # (MSC4190). The homeserver enables the matching experimental features.
        "org.matrix.msc3202": True,
        "io.element.msc4190": True,
        "namespaces": {
            "users": [{"regex": user_namespace(spec), "exclusive": True}],
            "aliases": [
                {"regex": alias_namespace(spec), "exclusive": True},
                {"regex": managed_alias_namespace(spec), "exclusive": True},
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


def generate(spec: RegistrationSpec, output: Path, *, rotate: bool = False) -> dict[str, Any]:
    """Write the registration to ``output``; existing tokens are kept unless ``rotate``."""
    as_token, hs_token = new_token(), new_token()
    if output.exists() and not rotate:
        existing = load_registration(output)
        as_token = existing.get("as_token") or as_token
        hs_token = existing.get("hs_token") or hs_token
    registration = build_registration(spec, as_token, hs_token)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_private(output, dump_registration(registration))
    return registration
