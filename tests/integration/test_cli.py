"""The `unityplan` CLI against the stack's real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys

import asyncpg
import pytest

from appservice.stack.local import LocalStack


async def _unityplan(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_db_migrate_is_up_to_date_after_start(stack: LocalStack) -> None:
    code, out, err = await _unityplan("-c", str(stack.config_path), "db", "migrate")
    assert code == 0, err
    assert out.splitlines() == [
        "global: up to date",
        "public: up to date",
        "territory_dk: up to date",
    ]


async def test_territory_info(stack: LocalStack) -> None:
    code, out, err = await _unityplan("-c", str(stack.config_path), "territory", "info")
    assert code == 0, err
    info = json.loads(out)
    assert info["code"] == "dk" and info["server_name"] == stack.server_name
    assert stack.postgres.password not in out


async def test_registration_check_against_the_running_stack(stack: LocalStack) -> None:
    code, out, err = await _unityplan("-c", str(stack.config_path), "registration", "check")
    assert code == 0, err
    assert out.strip().endswith("matches " + str(stack.config_path) + ".")


async def _dead_effect(stack: LocalStack, room: str) -> int:
    """An invite to a room that does not exist: the homeserver refuses, the effect is dead."""
    platform = stack.platform
    assert platform is not None
    txn = await platform.effects.membership("invite", room, "@nobody:" + stack.server_name)
    for _ in range(100):
        for effect in await platform.effect_repo.dead_letters(50):
            if effect.txn_id == txn:
                return effect.id
        await asyncio.sleep(0.1)
    raise AssertionError("the refused invite was not dead-lettered")


async def test_deadletters_list_retry_and_drop(stack: LocalStack) -> None:
    config = str(stack.config_path)
    room = f"!nowhere{int(asyncio.get_running_loop().time() * 1000)}:{stack.server_name}"
    effect_id = await _dead_effect(stack, room)

    code, out, err = await _unityplan("-c", config, "deadletters", "list", "--json")
    assert code == 0, err
    rows = {row["id"]: row for row in map(json.loads, out.splitlines())}
    assert rows[f"effect:{effect_id}"]["kind"] == "matrix.invite"
    assert rows[f"effect:{effect_id}"]["room"] == room and rows[f"effect:{effect_id}"]["error"]

    code, out, err = await _unityplan("-c", config, "deadletters", "retry", f"effect:{effect_id}")
    assert (code, out.strip()) == (0, "1 queued again."), err
    assert await _dead_effect_again(stack, effect_id)  # tried once more, refused once more

    code, out, err = await _unityplan("-c", config, "deadletters", "drop", f"effect:{effect_id}")
    assert (code, out.strip()) == (0, "1 dropped."), err
    code, _, err = await _unityplan("-c", config, "deadletters", "drop", f"effect:{effect_id}")
    assert code == 2 and f"No dead letter effect:{effect_id}" in err
    code, _, err = await _unityplan("-c", config, "deadletters", "retry", "bogus")
    assert code == 2 and "not an id" in err


async def _dead_effect_again(stack: LocalStack, effect_id: int) -> bool:
    platform = stack.platform
    assert platform is not None
    for _ in range(100):
        dead = {e.id: e for e in await platform.effect_repo.dead_letters(50)}
        if effect_id in dead and dead[effect_id].attempts == 1:
            return True
        await asyncio.sleep(0.1)
    return False


async def test_territory_registry_cli(stack: LocalStack) -> None:
    config = str(stack.config_path)
    code = f"t{secrets.token_hex(3)}"
    server = f"{code}.example"
    args = ["--name", "Test land", "--server-name", server, "--homeserver", f"https://{server}"]
    dsn = stack.postgres.dsn(user=f"territory_{code}", password="topsecret-" + code)
    # The territory's own role may not register another territory ...
    refused, _, err = await _unityplan(
        "-c", config, "territory", "add", code, *args, "--db", dsn, "--no-cross-border"
    )
    assert refused == 2 and "only its own territory" in err and "admin_url" in err
    # ... the admin role may, and gives the new territory a role of its own.
    admin = {"UNITYPLAN_DATABASE_ADMIN_URL": stack.postgres.dsn()}
    done, out, err = await _unityplan(
        "-c", config, "territory", "add", code, *args, "--db", dsn, "--no-cross-border", env=admin
    )
    assert done == 0 and f"Registered {code}" in out and f"territory_{code}" in out, err
    again, _, err = await _unityplan("-c", config, "territory", "add", code, *args, "--db", dsn)
    assert again == 2 and "registered already" in err
    newcomer = await asyncpg.connect(dsn)
    try:
        assert await newcomer.fetchval("SELECT global.own_territory()") == code
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await newcomer.fetch("SELECT * FROM territory_dk.user_badges LIMIT 1")
    finally:
        await newcomer.close()

    listed, out, _ = await _unityplan("-c", config, "territory", "list")
    entries = {e["code"]: e for e in map(json.loads, out.splitlines())}
    assert listed == 0 and {"dk", code} <= set(entries)
    assert entries[code]["settings"] == {"data_residency": "", "allow_cross_border": False}
    assert "topsecret" not in out  # the registry never keeps a password

    settings = ["territory", "settings", code, "allow_cross_border=true", "data_residency=eu"]
    refused, _, err = await _unityplan("-c", config, *settings)
    assert refused == 2 and "only its own territory" in err
    changed, out, err = await _unityplan("-c", config, *settings, env=admin)
    assert changed == 0, err
    shown, out, _ = await _unityplan("-c", config, "territory", "info", code)
    assert shown == 0
    assert json.loads(out)["settings"] == {"data_residency": "eu", "allow_cross_border": True}
    bad, _, err = await _unityplan("-c", config, "territory", "settings", code, "colour=blue")
    assert bad == 2 and "key=value" in err
    missing, _, err = await _unityplan("-c", config, "territory", "info", "nowhere")
    assert missing == 2 and "not registered" in err
