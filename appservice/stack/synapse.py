"""A Synapse homeserver (PyPI matrix-synapse) configured from synapse/homeserver.template.yaml."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from string import Template

import aiohttp

from .process import ManagedProcess, StackError
from .tls import Certificate

REPO_ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = REPO_ROOT / "synapse"


def _write_signing_key(path: Path) -> None:
    from signedjson.key import generate_signing_key, write_signing_keys

    with open(path, "w") as out:
        write_signing_keys(out, [generate_signing_key("a_" + secrets.token_hex(2))])


@dataclass(frozen=True)
class Federation:
    """A TLS federation listener on loopback: the server name is ``localhost:<port>``, its
    certificate is signed by the stack's local CA, which every homeserver of the stack trusts."""

    port: int
    certificate: Certificate
    ca_path: Path

    def listener(self) -> str:
        return (
            f"  - {{port: {self.port}, bind_addresses: ['127.0.0.1'], type: http, tls: true, "
            "x_forwarded: false, resources: [{names: [federation], compress: false}]}"
        )

    def settings(self) -> str:
        return "\n".join(
            [
                "# Federation on loopback, over TLS with the local stack's own CA.",
                f'tls_certificate_path: "{self.certificate.cert_path}"',
                f'tls_private_key_path: "{self.certificate.key_path}"',
                "federation_verify_certificates: true",
                f'federation_custom_ca_list: ["{self.ca_path}"]',
                'ip_range_whitelist: ["127.0.0.1/32", "::1/128"]',
                "allow_public_rooms_over_federation: true",
            ]
        )


class SynapseServer:
    def __init__(
        self,
        data_dir: Path,
        server_name: str,
        client_port: int,
        registrations: list[Path],
        modules: list[dict[str, object]] | None = None,
        federation: Federation | None = None,
        name: str = "synapse",
        run_dir: Path | None = None,
        python: str = sys.executable,
        module_path: Path | None = TEMPLATES / "modules",
        max_upload_size: str = "50M",
    ) -> None:
        self.max_upload_size = max_upload_size  # Synapse's own default
        self.name = name
        # The Python that runs Synapse, and where our modules are imported from (None: they are
        # installed into that Python's environment, as `pip install ./synapse/modules` does).
        self.python = python
        self.module_path = module_path
        # Where its pid file goes (the stack's run folder, so a killed stack's leftovers are found).
        self.run_dir = run_dir
        self.data_dir = data_dir
        self.server_name = server_name
        self.client_port = client_port
        self.registrations = registrations
        self.modules = modules or []
        self.federation = federation
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "homeserver.yaml"

    def _secrets(self) -> dict[str, str]:
        path = self.data_dir / "secrets.json"
        if path.exists():
            return json.loads(path.read_text())
        values = {
            key: secrets.token_urlsafe(32)
            for key in ("registration_shared_secret", "macaroon_secret_key", "form_secret")
        }
        path.write_text(json.dumps(values))
        path.chmod(0o600)
        return values

    @property
    def shared_secret(self) -> str:
        return self._secrets()["registration_shared_secret"]

    def write_config(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        values = {
            "server_name": self.server_name,
            "data_dir": str(self.data_dir),
            "client_port": str(self.client_port),
            "app_service_config_files": json.dumps([str(p) for p in self.registrations]),
            "modules": json.dumps(self.modules),
            "max_upload_size": self.max_upload_size,
            "federation_listener": self.federation.listener() if self.federation else "",
            "federation_settings": self.federation.settings() if self.federation else "",
            **self._secrets(),
        }
        for template, target in (
            ("homeserver.template.yaml", self.config_path),
            ("log.template.yaml", self.data_dir / "log.yaml"),
        ):
            text = Template((TEMPLATES / template).read_text()).substitute(values)
            target.write_text(text)
        signing_key = self.data_dir / "signing.key"
        if not signing_key.exists():
            _write_signing_key(signing_key)

    async def start(self) -> None:
        self.write_config()
        (self.data_dir / "homeserver.pid").unlink(missing_ok=True)
        self.process = ManagedProcess(
            self.name,
            [self.python, "-m", "synapse.app.homeserver", "-c", str(self.config_path)],
            log_path=self.data_dir / "synapse-stdout.log",
            cwd=self.data_dir,
            # Our Synapse modules are importable from synapse/modules in the dev stack.
            env={"PYTHONPATH": str(self.module_path)} if self.module_path else None,
            pid_file=self.run_dir / f"{self.name}.pid" if self.run_dir else None,
        )
        self.process.start()
        await self.process.wait_ready(self._answers, timeout=90, what="answering /versions")

    async def _answers(self) -> bool:
        async with aiohttp.ClientSession() as session:
            url = f"{self.url}/_matrix/client/versions"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                return resp.status == 200

    async def register_user(
        self, localpart: str, password: str, *, admin: bool = False, displayname: str | None = None
    ) -> str:
        """Create a user through the shared-secret admin API; an existing user is left as it is."""
        async with aiohttp.ClientSession() as session:
            endpoint = f"{self.url}/_synapse/admin/v1/register"
            async with session.get(endpoint) as resp:
                nonce = (await resp.json())["nonce"]
            mac = hmac.new(self.shared_secret.encode(), digestmod=hashlib.sha1)
            mac.update(
                b"\x00".join(
                    [
                        nonce.encode(),
                        localpart.encode(),
                        password.encode(),
                        b"admin" if admin else b"notadmin",
                    ]
                )
            )
            body = {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            }
            if displayname:
                body["displayname"] = displayname
            async with session.post(endpoint, json=body) as resp:
                data = await resp.json()
                if resp.status == 400 and data.get("errcode") == "M_USER_IN_USE":
                    return f"@{localpart}:{self.server_name}"
                if resp.status != 200:
                    raise StackError(f"registering {localpart} failed: {resp.status} {data}")
                return str(data["user_id"])

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
