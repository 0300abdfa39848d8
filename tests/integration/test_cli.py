"""The `unityplan` CLI against the stack's real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import sys

from appservice.stack.local import LocalStack


async def _unityplan(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "appservice",
        *args,
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
