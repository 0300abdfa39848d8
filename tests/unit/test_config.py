"""Config loading: example defaults, operator values, environment overrides, one-sentence errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appservice.config import ConfigError, load_config, write_config

GOOD = {
    "territory": {"code": "dk", "name": "Denmark"},
    "homeserver": {"address": "http://127.0.0.1:8008", "domain": "dk.example"},
    "database": {"url": "postgresql://u:secret@127.0.0.1/unityplan"},
}

DB = "database: {url: 'postgresql://u:pw@127.0.0.1/unityplan'}\n"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_operator_values_merge_over_the_example(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_config(GOOD, path)
    config = load_config(path, environ={})
    assert config.territory.code == "dk"
    assert config.database.url == "postgresql://u:secret@127.0.0.1/unityplan"
    assert config.commands.prefix == "!"  # from the example
    assert config.bot_user_id == "@unityplan:dk.example"
    assert config.registration_path == tmp_path / "registration.yaml"
    assert "# Short code of the territory" in path.read_text()  # comments survive


def test_environment_overrides_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_config(GOOD, path)
    config = load_config(
        path,
        environ={
            "UNITYPLAN_DATABASE_URL": "postgresql://other:pw@db/unityplan",
            "UNITYPLAN_APPSERVICE_PORT": "4000",
            "UNITYPLAN_PERMISSIONS_ADMINS": '["@a:dk.example"]',
            "UNITYPLAN_DATABASE_TERRITORY_URL": "postgresql://t:pw@db2/unityplan",
        },
    )
    assert config.database.url == "postgresql://other:pw@db/unityplan"
    assert config.database.territory_url == "postgresql://t:pw@db2/unityplan"
    assert config.appservice.port == 4000
    assert config.permissions.admins == ("@a:dk.example",)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("territory: {code: 'DK; drop'}\n", "territory.code"),
        ("territory: {code: dk, name: x}\nhomeserver: {domain: dk.example}\n", "database.url"),
        ("nope: 1\n", "Unknown configuration key 'nope'"),
        ("territory: [1, 2]\n", "must be a section"),
        ("territory: {code: dk\n", "not valid YAML"),
        (f"{DB}permissions: {{admins: [alice]}}\n", "permissions.admins"),
        (f"{DB}appservice: {{port: 70000}}\n", "appservice.port"),
    ],
)
def test_bad_values_give_one_sentence(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), environ={})
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message and message.endswith(".")


def test_example_password_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="example password"):
        load_config(_write(tmp_path, ""), environ={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_cli_exits_non_zero_with_the_sentence(tmp_path: Path) -> None:
    path = _write(tmp_path, "territory: {code: '1bad'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "appservice", "-c", str(path), "registration", "check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "unityplan: Configuration value 'territory.code' = '1bad' is invalid: a territory code is"
    )
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_run_without_config_writes_the_example(tmp_path: Path) -> None:
    path = tmp_path / "new.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "appservice", "-c", str(path), "run"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert path.exists() and "territory:" in path.read_text()
    assert "wrote the example config" in result.stderr


def test_unreachable_database_is_one_sentence(tmp_path: Path) -> None:
    from appservice.stack.process import free_port
    from registration.generate import generate

    port = free_port()  # nothing listens there
    path = tmp_path / "config.yaml"
    write_config(
        {
            **GOOD,
            "database": {
                "url": f"postgresql://u:secret@127.0.0.1:{port}/unityplan",
                "connect_wait_seconds": 1,
            },
        },
        path,
    )
    generate(load_config(path, environ={}).registration_spec(), tmp_path / "registration.yaml")
    for args in (["db", "migrate"], ["run"]):
        result = subprocess.run(
            [sys.executable, "-m", "appservice", "-c", str(path), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 3, result.stderr
        last = result.stderr.strip().splitlines()[-1]
        assert f"Cannot use the global database at 127.0.0.1:{port}/unityplan" in last
        assert "secret" not in result.stderr
        assert "Traceback" not in result.stderr


def test_placeholder_registration_tokens_are_refused_at_start(tmp_path: Path) -> None:
    """The shipped deploy/ registration has placeholder tokens: running with them is refused."""
    path = tmp_path / "config.yaml"
    write_config(GOOD, path)
    (tmp_path / "registration.yaml").write_text(
        "id: unityplan\nurl: http://127.0.0.1:29333\n"
        "as_token: PLACEHOLDER-as_token-replace-me-run-registration-generate-rotate\n"
        "hs_token: PLACEHOLDER-hs_token-replace-me-run-registration-generate-rotate\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "appservice", "-c", str(path), "run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "placeholder" in line and "registration generate --rotate" in line


def test_a_failed_start_stops_what_had_started() -> None:
    """E.g. `unityplan dev` whose demo seeding fails after the servers are up."""
    from appservice.__main__ import EXIT_STARTUP, _run_until_signal

    stopped: list[str] = []

    async def start() -> None:
        raise RuntimeError("seeding failed")

    async def stop() -> None:
        stopped.append("stopped")

    assert _run_until_signal(start, stop) == EXIT_STARTUP
    assert stopped == ["stopped"]


def test_secrets_from_the_environment_are_taken_as_written(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_config(GOOD, path)
    config = load_config(
        path,
        environ={
            "UNITYPLAN_NATS_PASSWORD": "012345678",  # YAML would make it an integer
            "UNITYPLAN_GATE_MODULE_TOKEN": "yes-no-null-0x1f-0123456789",
            "UNITYPLAN_APPSERVICE_PORT": "29334",  # not a secret: still parsed
        },
    )
    assert config.nats.password == "012345678"
    assert config.gate.module_token == "yes-no-null-0x1f-0123456789"
    assert config.appservice.port == 29334


def test_a_rejected_secret_is_not_repeated_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_config(GOOD, path)
    with pytest.raises(ConfigError) as refused:
        load_config(path, environ={"UNITYPLAN_NATS_PASSWORD": "short"})
    assert "nats.password" in str(refused.value) and "short" not in str(refused.value)
