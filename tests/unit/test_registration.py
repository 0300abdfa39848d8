"""Registration generate/check, and that Synapse's own parser accepts what we write."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from appservice.config import load_config, write_config
from registration.generate import generate, load_registration
from registration.validate import differences

VALUES = {
    "territory": {"code": "dk", "name": "Denmark"},
    "homeserver": {"address": "http://127.0.0.1:8008", "domain": "dk.example"},
    "database": {"url": "postgresql://u:secret@127.0.0.1/unityplan"},
}


def _config(tmp_path: Path):
    path = tmp_path / "config.yaml"
    write_config(VALUES, path)
    return load_config(path, environ={})


def test_generate_writes_what_synapse_needs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    reg = generate(config.registration_spec(), tmp_path / "registration.yaml")
    assert reg["id"] == "unityplan" and reg["url"] == "http://127.0.0.1:29333"
    assert reg["sender_localpart"] == "unityplan"
    assert reg["rate_limited"] is False and reg["receive_ephemeral"] is True
    assert reg["as_token"] != reg["hs_token"] and len(reg["as_token"]) >= 32
    users = reg["namespaces"]["users"][0]
    assert users["exclusive"] is True
    pattern = re.compile(users["regex"])
    assert pattern.fullmatch("@unity_alice:dk.example")
    assert not pattern.fullmatch("@unity_alice:dk.example.evil.org")
    assert not pattern.fullmatch("@unity_alice:dkxexample")  # the dot is escaped
    assert not pattern.fullmatch("@alice:dk.example")
    alias = re.compile(reg["namespaces"]["aliases"][0]["regex"])
    assert alias.fullmatch("#forum_climate:dk.example") and not alias.fullmatch(
        "#forum_x:ca.example"
    )
    assert (tmp_path / "registration.yaml").stat().st_mode & 0o077 == 0


def test_synapse_accepts_the_registration(tmp_path: Path) -> None:
    from synapse.appservice import ApplicationService  # noqa: F401  (matrix-synapse's package)
    from synapse.config.appservice import load_appservices

    config = _config(tmp_path)
    path = tmp_path / "registration.yaml"
    generate(config.registration_spec(), path)
    services = load_appservices("dk.example", [str(path)])
    assert len(services) == 1
    service = services[0]
    assert service.is_interested_in_user("@unity_bob:dk.example")
    assert service.is_interested_in_user("@unityplan:dk.example")
    assert not service.is_interested_in_user("@bob:dk.example")
    assert service.is_exclusive_user("@unity_bob:dk.example")


def test_generate_again_keeps_tokens_unless_rotated(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "registration.yaml"
    first = generate(config.registration_spec(), path)
    again = generate(config.registration_spec(), path)
    assert (again["as_token"], again["hs_token"]) == (first["as_token"], first["hs_token"])
    rotated = generate(config.registration_spec(), path, rotate=True)
    assert rotated["as_token"] != first["as_token"] and rotated["hs_token"] != first["hs_token"]
    assert load_registration(path) == rotated


def test_check_says_what_differs(tmp_path: Path) -> None:
    config = _config(tmp_path)
    path = tmp_path / "registration.yaml"
    generate(config.registration_spec(), path)
    assert differences(config.registration_spec(), path) == []
    text = path.read_text().replace("http://127.0.0.1:29333", "http://elsewhere:1")
    path.write_text(text.replace("rate_limited: false", "rate_limited: true"))
    problems = differences(config.registration_spec(), path)
    assert any(p.startswith("url is 'http://elsewhere:1'") for p in problems)
    assert any(p.startswith("rate_limited is True") for p in problems)
    assert differences(config.registration_spec(), tmp_path / "missing.yaml")[0].endswith(
        "run `unityplan registration generate`."
    )


def test_cli_generate_and_check(tmp_path: Path) -> None:
    config_path = tmp_path / "config.yaml"
    write_config(VALUES, config_path)
    out = tmp_path / "reg.yaml"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "appservice", "-c", str(config_path), *args],
            capture_output=True,
            text=True,
        )

    generated = run("registration", "generate", "-o", str(out))
    assert generated.returncode == 0, generated.stderr
    tokens = load_registration(out)["hs_token"]
    assert run("registration", "generate", "-o", str(out)).returncode == 0
    assert load_registration(out)["hs_token"] == tokens
    assert run("registration", "check", "-r", str(out)).returncode == 0
    write_config(
        {**VALUES, "appservice": {"port": 30000, "address": "http://127.0.0.1:30000"}}, config_path
    )
    check = run("registration", "check", "-r", str(out))
    assert check.returncode == 1
    assert (
        "url is 'http://127.0.0.1:29333', the config wants 'http://127.0.0.1:30000'" in check.stderr
    )
    assert run("registration", "generate", "-o", str(out), "--rotate").returncode == 0
    assert load_registration(out)["hs_token"] != tokens
