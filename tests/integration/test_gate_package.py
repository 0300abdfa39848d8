"""The badge gate installs as its own distribution into a fresh Synapse virtualenv (no PYTHONPATH),
and a Synapse started from it loads the module and enforces with it: with the appservice
unreachable, joins to a gated room are refused and joins elsewhere allowed."""

from __future__ import annotations

import asyncio
import secrets
import sys
from importlib.metadata import version
from pathlib import Path

import aiohttp

from appservice.stack.process import free_port
from appservice.stack.synapse import SynapseServer
from tests.matrix_user import password_login

MODULE = Path(__file__).resolve().parents[2] / "synapse" / "modules"


async def _run(*argv: str, timeout: float = 900) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, out.decode()[-3000:]
    return out.decode()


async def _login(synapse: SynapseServer, localpart: str) -> str:
    password = secrets.token_urlsafe(12)
    await synapse.register_user(localpart, password)
    return await password_login(synapse.url, localpart, password)


async def _call(
    synapse: SynapseServer, token: str, method: str, path: str, body: object
) -> tuple[int, dict]:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as session:
        async with session.request(
            method,
            f"{synapse.url}/_matrix/client/v3{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as resp:
            return resp.status, dict(await resp.json())


async def test_pip_install_into_a_fresh_synapse_venv_and_enforce(tmp_path: Path) -> None:
    venv = tmp_path / "synapse-venv"
    await _run(sys.executable, "-m", "venv", str(venv))
    python = str(venv / "bin" / "python")
    await _run(
        python,
        "-m",
        "pip",
        "install",
        "--quiet",
        f"matrix-synapse=={version('matrix-synapse')}",
        str(MODULE),
    )
    installed = await _run(
        python,
        "-c",
        "import importlib.metadata as m, unityplan_gate; print(m.version('unityplan-gate'))",
    )
    assert installed.strip() == "0.1.0"

    closed = free_port()  # nothing listens: the appservice is "down"
    synapse = SynapseServer(
        tmp_path / "synapse",
        "gate.localhost",
        free_port(),
        registrations=[],
        modules=[
            {
                "module": "unityplan_gate.BadgeGate",
                "config": {
                    "url": f"http://127.0.0.1:{closed}",
                    "token": secrets.token_urlsafe(24),
                    "timeout_seconds": 1,
                },
            }
        ],
        name="synapse-gate-package",
        python=python,
        module_path=None,  # only what pip installed
    )
    await synapse.start()
    try:
        owner = await _login(synapse, "owner")
        guest = await _login(synapse, "guest")
        status, gated = await _call(
            synapse,
            owner,
            "POST",
            "/createRoom",
            {
                "preset": "public_chat",
                "initial_state": [
                    {"type": "org.unityplan.gate", "state_key": "", "content": {"badges": ["x"]}}
                ],
            },
        )
        assert status == 200, gated
        status, plain = await _call(
            synapse, owner, "POST", "/createRoom", {"preset": "public_chat"}
        )
        assert status == 200, plain
        status, refused = await _call(synapse, guest, "POST", f"/join/{gated['room_id']}", {})
        assert status == 403 and "badge check is unavailable" in refused["error"], refused
        status, joined = await _call(synapse, guest, "POST", f"/join/{plain['room_id']}", {})
        assert status == 200, joined
    finally:
        await synapse.stop()
