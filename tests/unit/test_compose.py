"""docker-compose.yml and the files it mounts agree with each other and with the appservice's config.

No Docker and no services: the compose file is read with ruamel.yaml, ``${VAR}`` references are
resolved the way Compose does (each variable without a default gets its own dummy value), and every
cross-reference a deployment relies on is followed to the file it names: the mounted appservice config
must load, the registration both containers mount must be one host file that agrees with the config,
Synapse must list it, URLs must name compose services on shared networks and ports they listen on,
Prometheus must scrape the right ports, the PostgreSQL init script must create the roles and
databases the services log in with, from the same passwords.

Territories are found from the compose file: every ``appservice-<code>`` service with its
``synapse-<code>``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
from ruamel.yaml import YAML

from appservice.config import Config, ConfigError, load_config
from registration.generate import load_registration
from registration.validate import differences

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DATA_SERVICES = ("postgres", "nats-1", "nats-2", "nats-3", "ipfs")
ALL_INTERFACES = {"0.0.0.0", "::"}

# ---------------------------------------------------------------------------------------------------
# Reading compose the way Compose does


_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)
_BRACED = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:-|-|:\?|\?|:\+|\+)(?P<arg>.*))?", re.DOTALL
)


def _references(text: str) -> list[tuple[str, str | None]]:
    """Every ``(variable, operator)`` referenced in the compose text (comments included is fine)."""
    found = []
    for match in _REFERENCE.finditer(text):
        if match["escaped"]:
            continue
        if match["named"]:
            found.append((match["named"], None))
            continue
        braced = _BRACED.fullmatch(match["braced"])
        assert braced, f"unsupported interpolation ${{{match['braced']}}} in docker-compose.yml"
        found.append((braced["name"], braced["op"]))
    return found


def _interpolate(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {key: _interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        assert braced is not None
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        is_set, is_nonempty = name in env, bool(env.get(name))
        if op == ":-":
            return env[name] if is_nonempty else arg
        if op == "-":
            return env[name] if is_set else arg
        if op in (":?", "?"):
            if not (is_nonempty if op == ":?" else is_set):
                raise AssertionError(f"required variable {name} is missing: {arg}")
            return env[name]
        if op == ":+":
            return arg if is_nonempty else ""
        if op == "+":
            return arg if is_set else ""
        return env.get(name, "")

    return _REFERENCE.sub(replace, value)


def _dummy(name: str) -> str:
    """A distinct, URL-safe value per variable, so equal values mean "the same variable"."""
    return "dummy-" + name.lower().replace("_", "-")


def _load_compose() -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str | None]]]:
    text = COMPOSE_FILE.read_text("utf-8")
    raw = YAML(typ="safe").load(text)
    references = _references(text)
    with_default = {name for name, op in references if op in (":-", "-")}
    env = {name: _dummy(name) for name, _ in references if name not in with_default}
    return raw, _interpolate(raw, env), references


RAW, COMPOSE, REFERENCES = _load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
TERRITORIES = sorted(
    match[1]
    for name in SERVICES
    if (match := re.fullmatch(r"appservice-([a-z][a-z0-9_]{1,30})", name))
)


def _networks(service: str) -> set[str]:
    networks = SERVICES[service].get("networks")
    if not networks:
        return {"default"}
    return set(networks)


def _share_network(a: str, b: str) -> bool:
    return bool(_networks(a) & _networks(b))


def _environment(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def _mounts(service: str) -> list[dict[str, Any]]:
    """Volumes of a service as {"type", "source", "target", "read_only"}; bind sources as Paths."""
    mounts = []
    for volume in SERVICES[service].get("volumes", []):
        if isinstance(volume, str):
            parts = volume.split(":")
            assert len(parts) in (2, 3), f"{service}: can't read volume {volume!r}"
            source, target = parts[0], parts[1]
            read_only = len(parts) == 3 and "ro" in parts[2].split(",")
            kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        else:
            source, target = volume.get("source", ""), volume["target"]
            read_only = bool(volume.get("read_only"))
            kind = volume.get("type", "volume")
        mounts.append(
            {
                "type": kind,
                "source": (COMPOSE_FILE.parent / source).resolve() if kind == "bind" else source,
                "target": PurePosixPath(target),
                "read_only": read_only,
            }
        )
    return mounts


def _host_path(service: str, container_path: PurePosixPath | str) -> Path:
    """The host file that a service sees at container_path, through its bind mounts."""
    container_path = PurePosixPath(container_path)
    best = None
    for mount in _mounts(service):
        if mount["type"] != "bind":
            continue
        target = mount["target"]
        covers = container_path == target or target in container_path.parents
        if covers and (best is None or len(target.parts) > len(best["target"].parts)):
            best = mount
    assert best is not None, f"{service} has no bind mount for {container_path}"
    return best["source"] / container_path.relative_to(best["target"])


def _dockerfile(build: dict[str, Any]) -> Path:
    context = (COMPOSE_FILE.parent / build.get("context", ".")).resolve()
    return context / build.get("dockerfile", "Dockerfile")


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text("utf-8"))
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def _exec_form(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    values = [rest for key, rest in instructions if key == keyword]
    if not values:
        return []
    value = json.loads(values[-1])
    assert isinstance(value, list), f"{keyword} must use the exec (JSON) form"
    return value


def _argv(service: str) -> list[str]:
    """What the service's container runs: compose entrypoint/command over the Dockerfile's."""
    spec = SERVICES[service]
    instructions = _dockerfile_instructions(_dockerfile(spec["build"]))
    entrypoint = spec.get("entrypoint", _exec_form(instructions, "ENTRYPOINT"))
    command = spec.get("command", [] if "entrypoint" in spec else _exec_form(instructions, "CMD"))
    return list(entrypoint) + list(command)


def _config_container_path(service: str) -> PurePosixPath:
    argv = _argv(service)
    for flag in ("-c", "--config"):
        if flag in argv:
            return PurePosixPath(argv[argv.index(flag) + 1])
    return PurePosixPath("config.yaml")


def _load_yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text("utf-8"))


def _config(code: str) -> Config:
    service = f"appservice-{code}"
    return load_config(
        _host_path(service, _config_container_path(service)), environ=_environment(service)
    )


def _homeserver(code: str) -> tuple[dict[str, Any], Path]:
    service = f"synapse-{code}"
    container = _environment(service).get("SYNAPSE_CONFIG_PATH", "/data/homeserver.yaml")
    path = _host_path(service, container)
    return _load_yaml(path), path


def _registration_host_path(code: str, config: Config) -> Path:
    service = f"appservice-{code}"
    registration = PurePosixPath(config.appservice.registration)
    if not registration.is_absolute():
        registration = _config_container_path(service).parent / registration
    return _host_path(service, registration)


def _client_listener_ports(homeserver: dict[str, Any]) -> set[int]:
    ports = set()
    for listener in homeserver.get("listeners", []):
        names = {name for resource in listener.get("resources", []) for name in resource["names"]}
        if listener.get("type") == "http" and "client" in names:
            ports.add(int(listener["port"]))
    return ports


def _listener(homeserver: dict[str, Any], port: int) -> dict[str, Any]:
    return next(item for item in homeserver["listeners"] if int(item["port"]) == port)


def _init_text() -> str:
    """The PostgreSQL init scripts, without comments."""
    scripts: list[Path] = []
    for mount in _mounts("postgres"):
        if mount["type"] == "bind" and str(mount["target"]).startswith(
            "/docker-entrypoint-initdb.d"
        ):
            source = mount["source"]
            scripts += sorted(source.rglob("*.sql")) if source.is_dir() else [source]
    assert scripts, "postgres mounts no init script into /docker-entrypoint-initdb.d"
    text = "\n".join(path.read_text("utf-8") for path in scripts)
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))


def _init_sql() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(role -> env var holding its password, database -> owner, database -> CREATE statement)."""
    text = _init_text()
    getenv = dict(re.findall(r"^\\getenv\s+(\w+)\s+(\w+)\s*$", text, re.MULTILINE))
    roles = {
        role: getenv[var]
        for role, var in re.findall(
            r"CREATE ROLE (\w+) LOGIN (?:\w+ )*PASSWORD %L', :'(\w+)'", text
        )
    }
    owners = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", text))
    creates = {m[1]: m[0] for m in re.finditer(r"CREATE DATABASE (\w+)[^\n]*", text)}
    return roles, owners, creates


# ---------------------------------------------------------------------------------------------------
# The compose file as a whole


def test_has_the_platform_services_and_a_dk_territory() -> None:
    assert {"postgres", "nats-1", "nats-2", "nats-3", "ipfs", "prometheus"} <= set(SERVICES)
    assert "dk" in TERRITORIES
    for code in TERRITORIES:
        assert f"synapse-{code}" in SERVICES, f"appservice-{code} has no synapse-{code}"
    assert SERVICES["postgres"]["image"].startswith("timescale/timescaledb:")
    for node in ("nats-1", "nats-2", "nats-3"):
        assert SERVICES[node]["image"].startswith("nats:")
    assert SERVICES["ipfs"]["image"].startswith("ipfs/kubo:")
    assert SERVICES["prometheus"]["image"].startswith("prom/prometheus:")
    for code in TERRITORIES:
        # Synapse with the gate installed as a package: built FROM the pinned Synapse image.
        build = SERVICES[f"synapse-{code}"]["build"]
        dockerfile = (REPO / build["context"] / build["dockerfile"]).read_text()
        assert "FROM matrixdotorg/synapse:v" in dockerfile


def test_every_bind_mounted_host_path_exists_and_named_volumes_are_declared() -> None:
    declared_volumes = set(COMPOSE.get("volumes") or {})
    mounted: set[Path] = set()
    for service in SERVICES:
        for mount in _mounts(service):
            if mount["type"] == "bind":
                mounted.add(mount["source"])
                assert mount["source"].exists(), f"{service}: {mount['source']} does not exist"
                assert REPO in mount["source"].parents, (
                    f"{service}: {mount['source']} is outside the repo"
                )
                assert mount["read_only"], f"{service}: bind mount {mount['target']} should be :ro"
            else:
                assert mount["source"] in declared_volumes, (
                    f"{service}: volume {mount['source']!r} is not declared under volumes:"
                )
    # Every deployment file is used by some service (a stray one is usually a typo in a mount):
    # mounted, or the Dockerfile an image is built from.
    for service in SERVICES.values():
        build = service.get("build")
        if isinstance(build, dict):
            mounted.add((REPO / build["context"] / build["dockerfile"]).resolve())
    deploy_files = {path.resolve() for path in (REPO / "deploy").rglob("*") if path.is_file()}
    assert deploy_files, "deploy/ is empty"
    assert deploy_files <= mounted, f"not mounted by any service: {sorted(deploy_files - mounted)}"
    for name, secret in (COMPOSE.get("secrets") or {}).items():
        if "file" in secret:
            assert (COMPOSE_FILE.parent / secret["file"]).exists(), f"secret {name}: file missing"


def test_data_services_are_only_on_internal_networks_and_publish_nothing() -> None:
    networks = COMPOSE["networks"]
    for service in DATA_SERVICES:
        for network in _networks(service):
            assert network in networks, f"{service}: network {network} is not declared"
            assert networks[network].get("internal") is True, (
                f"{service} is on {network}, which is not internal"
            )
        assert not SERVICES[service].get("ports"), f"{service} publishes ports"


def _one_shot(service: dict[str, Any]) -> bool:
    return str(service.get("restart")) == "no"


def test_healthchecks_and_dependencies() -> None:
    for name, service in SERVICES.items():
        if not _one_shot(service):
            assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):
            depends = {dep: {"condition": "service_started"} for dep in depends}
        for dependency, spec in depends.items():
            assert dependency in SERVICES, f"{name} depends on unknown service {dependency}"
            if spec.get("condition") == "service_healthy":
                assert SERVICES[dependency].get("healthcheck"), (
                    f"{name} waits for {dependency} to be healthy, which has no healthcheck"
                )
            if spec.get("condition") == "service_completed_successfully":
                assert _one_shot(SERVICES[dependency]), f"{dependency} is not a one-shot service"
    for code in TERRITORIES:
        # The appservice starts once its role and the shared schemas are ready ...
        assert (
            SERVICES[f"appservice-{code}"]["depends_on"][f"migrate-{code}"]["condition"]
            == "service_completed_successfully"
        )
        # ... which the one-shot migration does as the admin, once PostgreSQL is up.
        migrate = SERVICES[f"migrate-{code}"]
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert migrate["command"][-2:] == ["db", "migrate"]
        assert (
            SERVICES[f"synapse-{code}"]["depends_on"]["postgres"]["condition"] == "service_healthy"
        )


def test_secrets_come_from_required_variables_listed_in_env_example() -> None:
    example = dict(
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text("utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    required = {name for name, op in REFERENCES if op in (":?", "?")}
    assert required, "docker-compose.yml requires no variables; where do the passwords come from?"
    for name in required:
        assert name in example, f"{name} is required by docker-compose.yml but not in .env.example"
        assert example[name].strip() == "", (
            f".env.example gives {name} a value; leave it empty so an unedited copy fails loudly"
        )
    # Secret-looking settings are never literals in the compose file.
    for service in RAW["services"]:
        for key, value in _environment_raw(service).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", key):
                assert re.fullmatch(r"\$\{\w+:\?[^}]*\}", value), (
                    f"{service}: {key} must be ${{VAR:?...}}, not {value!r}"
                )
    # Compose secrets sourced from the environment: the variable must be required too.
    for name, secret in (COMPOSE.get("secrets") or {}).items():
        if "environment" in secret:
            assert secret["environment"] in required, (
                f"secret {name}: {secret['environment']} is never required with ${{VAR:?...}}"
            )
            assert secret["environment"] in example


def _environment_raw(service: str) -> dict[str, str]:
    env = RAW["services"][service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env if "=" in item)
    return {str(key): str(value) for key, value in env.items()}


def test_dockerfile_builds_the_package_and_runs_the_appservice() -> None:
    packages = tomllib.loads((REPO / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"][
        "packages"
    ]
    top_level = {package.split(".")[0] for package in packages}
    assert TERRITORIES
    for code in TERRITORIES:
        service = f"appservice-{code}"
        build = SERVICES[service]["build"]
        assert isinstance(build, dict)
        assert (COMPOSE_FILE.parent / build.get("context", ".")).resolve().is_dir()
        dockerfile = _dockerfile(build)
        assert dockerfile.is_file(), f"{service}: {dockerfile} does not exist"
        instructions = _dockerfile_instructions(dockerfile)
        assert instructions[0] == ("FROM", "python:3.11-slim")
        copied = " ".join(rest for key, rest in instructions if key == "COPY")
        for package in top_level | {"pyproject.toml", "README.md"}:
            assert re.search(rf"(^|\s){re.escape(package)}(\s|/|$)", copied), (
                f"the Dockerfile does not COPY {package}, which `pip install .` needs"
            )
        assert any(key == "RUN" and "pip install" in rest for key, rest in instructions)
        assert any(key == "USER" and rest not in ("root", "0") for key, rest in instructions), (
            "the appservice image should not run as root"
        )

        argv = _argv(service)
        config_path = _config_container_path(service)
        assert argv == ["unityplan", "-c", str(config_path), "run"]
        assert _host_path(service, config_path).is_file()
        exposed = {
            int(port.split("/")[0])
            for key, rest in instructions
            if key == "EXPOSE"
            for port in rest.split()
        }
        assert _config(code).appservice.port in exposed
    ignored = (REPO / ".dockerignore").read_text("utf-8").split()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


# ---------------------------------------------------------------------------------------------------
# Each territory: appservice <-> registration <-> Synapse


@pytest.mark.parametrize("code", TERRITORIES)
def test_config_loads_with_the_environment_compose_gives_it(code: str) -> None:
    service = f"appservice-{code}"
    config_file = _host_path(service, _config_container_path(service))
    config = _config(code)
    assert config.territory.code == code
    # Without compose's UNITYPLAN_DATABASE_URL the committed placeholder is refused: the real
    # password lives only in .env.
    with pytest.raises(ConfigError, match=r"database\.url"):
        load_config(config_file, environ={})
    url = urlsplit(_environment(service)["UNITYPLAN_DATABASE_URL"])
    assert url.username == f"territory_{code}"
    assert url.password == _dummy(f"UNITYPLAN_{code.upper()}_DB_PASSWORD")
    assert config.database.url == _environment(service)["UNITYPLAN_DATABASE_URL"]
    # The running appservice never holds the admin's credentials; the one-shot migration does.
    assert config.database.admin_url is None
    assert "UNITYPLAN_DATABASE_ADMIN_URL" not in _environment(service)
    migrate = _environment(f"migrate-{code}")
    assert migrate["UNITYPLAN_DATABASE_URL"] == config.database.url
    admin = urlsplit(migrate["UNITYPLAN_DATABASE_ADMIN_URL"])
    assert admin.password == _dummy("UNITYPLAN_DB_PASSWORD")
    assert (admin.hostname, admin.path) == (url.hostname, url.path)


@pytest.mark.parametrize("code", TERRITORIES)
def test_appservice_listens_where_the_registration_says(code: str) -> None:
    service = f"appservice-{code}"
    config = _config(code)
    registration = load_registration(_registration_host_path(code, config))
    url = urlsplit(registration["url"])
    assert url.scheme == "http"
    assert url.hostname == service
    assert url.port == config.appservice.port
    assert registration["url"] == config.appservice.address
    assert config.appservice.hostname in ALL_INTERFACES, (
        "the appservice must listen on all interfaces of its container to be reachable"
    )
    health = " ".join(SERVICES[service]["healthcheck"]["test"])
    match = re.search(r"https?://(?:127\.0\.0\.1|localhost):(\d+)/health\b", health)
    assert match, f"{service}'s healthcheck does not GET /health: {health}"
    assert int(match[1]) == config.appservice.port


@pytest.mark.parametrize("code", TERRITORIES)
def test_synapse_and_appservice_mount_the_same_registration_which_agrees_with_the_config(
    code: str,
) -> None:
    config = _config(code)
    registration_file = _registration_host_path(code, config)
    assert registration_file.is_file()
    # The host CLI (`unityplan -c deploy/<code>/config.yaml registration generate`) writes the same file.
    assert config.registration_path.resolve() == registration_file.resolve()
    assert differences(config.registration_spec(), registration_file) == []

    homeserver, _ = _homeserver(code)
    listed = homeserver.get("app_service_config_files") or []
    synapse_sees = {_host_path(f"synapse-{code}", path).resolve() for path in listed}
    assert registration_file.resolve() in synapse_sees, (
        f"synapse-{code} does not list the appservice's registration in app_service_config_files"
    )
    assert homeserver["server_name"] == config.homeserver.domain

    # Committed tokens are placeholders, and say how to replace them.
    head = registration_file.read_text("utf-8").split("\nas_token", 1)[0]
    assert "registration generate --rotate" in head
    tokens = load_registration(registration_file)
    assert "PLACEHOLDER" in tokens["as_token"] and "PLACEHOLDER" in tokens["hs_token"]


@pytest.mark.parametrize("code", TERRITORIES)
def test_appservice_reaches_synapse_on_its_client_listener(code: str) -> None:
    synapse = f"synapse-{code}"
    config = _config(code)
    homeserver, _ = _homeserver(code)
    address = urlsplit(config.homeserver.address)
    assert address.hostname == synapse
    port = address.port or (443 if address.scheme == "https" else 80)
    assert port in _client_listener_ports(homeserver)
    assert set(_listener(homeserver, port).get("bind_addresses", [])) & ALL_INTERFACES
    assert _share_network(f"appservice-{code}", synapse)
    # Users reach the same listener through the published port (on a non-internal network).
    published = {str(item).rsplit(":", 1)[-1].split("/")[0] for item in SERVICES[synapse]["ports"]}
    assert str(port) in published
    assert any(not COMPOSE["networks"][net].get("internal") for net in _networks(synapse))


@pytest.mark.parametrize("code", TERRITORIES)
def test_synapse_files_and_secrets_are_mounted(code: str) -> None:
    synapse = f"synapse-{code}"
    homeserver, _ = _homeserver(code)
    assert _host_path(synapse, homeserver["log_config"]).is_file()
    granted = set(SERVICES[synapse].get("secrets") or [])
    declared = set(COMPOSE.get("secrets") or {})
    for key, value in homeserver.items():
        if key.endswith("_path") and str(value).startswith("/run/secrets/"):
            name = PurePosixPath(value).name
            assert name in granted, f"{synapse}: {key} names secret {name}, not granted to it"
            assert name in declared
    for key in ("macaroon_secret_key", "form_secret", "registration_shared_secret"):
        assert key not in homeserver, f"homeserver.yaml holds {key} inline; use {key}_path"
        assert f"{key}_path" in homeserver


@pytest.mark.parametrize("code", TERRITORIES)
def test_services_reach_their_data_stores(code: str) -> None:
    service = f"appservice-{code}"
    config = _config(code)
    nats_urls = config.nats.url.split(",")
    for url in (config.database.url, *nats_urls, config.ipfs.api_url):
        host = urlsplit(url).hostname
        assert host in SERVICES, f"{url} does not name a compose service"
        assert _share_network(service, host), f"{service} shares no network with {host}"
    homeserver, _ = _homeserver(code)
    database = homeserver["database"]
    assert database["name"] == "psycopg2"
    assert database["args"]["host"] in SERVICES
    assert _share_network(f"synapse-{code}", database["args"]["host"])


@pytest.mark.parametrize("code", TERRITORIES)
def test_postgres_init_creates_the_roles_and_databases_with_the_same_passwords(code: str) -> None:
    roles, owners, creates = _init_sql()
    postgres_env = _environment("postgres")

    # The admin of the appservices' database (the migration's admin_url) is made by init.sql and
    # owns the database; the territory's own role is made by `db migrate` from its URL.
    url = urlsplit(_environment(f"migrate-{code}")["UNITYPLAN_DATABASE_ADMIN_URL"])
    user, database = url.username, url.path.lstrip("/")
    assert user in roles, f"init.sql does not create role {user}"
    assert re.search(rf"CREATE ROLE {user} LOGIN CREATEROLE", _init_text())
    assert owners.get(database) == user, (
        f"init.sql does not create database {database} owned by {user}"
    )
    assert postgres_env.get(roles[user]) == url.password, (
        f"role {user}'s password ({roles[user]} in postgres) differs from the admin URL's"
    )
    territory_role = urlsplit(_config(code).database.url).username
    assert territory_role not in roles and territory_role != user

    synapse = f"synapse-{code}"
    args = _homeserver(code)[0]["database"]["args"]
    user, database = args["user"], args.get("database") or args.get("dbname")
    assert "password" not in args, "homeserver.yaml must not hold the database password"
    assert user in roles and owners.get(database) == user
    assert postgres_env.get(roles[user]) == _environment(synapse)["PGPASSWORD"]
    # Synapse refuses databases that are not UTF8 with C collation.
    assert all(part in creates[database] for part in ("'UTF8'", "LC_COLLATE ''C''", "template0"))


def test_prometheus_scrapes_every_appservice_on_its_metrics_port() -> None:
    config_path = "/etc/prometheus/prometheus.yml"
    prometheus = _load_yaml(_host_path("prometheus", config_path))
    targets: dict[str, str] = {}
    for job in prometheus["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                targets[target] = job.get("metrics_path", "/metrics")
    for target in targets:
        host = target.rsplit(":", 1)[0]
        assert host in SERVICES, f"prometheus target {target} is not a compose service"
        assert _share_network("prometheus", host), f"prometheus shares no network with {host}"
    for code in TERRITORIES:
        config = _config(code)
        target = f"appservice-{code}:{config.appservice.port}"
        assert targets.get(target) == "/metrics", f"prometheus does not scrape {target}/metrics"
        homeserver, _ = _homeserver(code)
        for target in targets:
            host, port = target.rsplit(":", 1)
            if host == f"synapse-{code}":
                assert _listener(homeserver, int(port))["type"] == "metrics"


@pytest.mark.parametrize("code", TERRITORIES)
def test_gate_module_is_loaded_and_shares_the_token_with_the_appservice(code: str) -> None:
    """Synapse has unityplan_gate installed as a package (pip, in its image), asks this
    territory's appservice, and reads the same secret the appservice gets as
    UNITYPLAN_GATE_MODULE_TOKEN."""
    synapse, appservice = f"synapse-{code}", f"appservice-{code}"
    homeserver, _ = _homeserver(code)
    [module] = [
        m for m in homeserver.get("modules", []) if m["module"].startswith("unityplan_gate.")
    ]
    assert module["module"] == "unityplan_gate.BadgeGate"
    config = _config(code)
    assert module["config"]["url"] == config.appservice.address
    build = SERVICES[synapse]["build"]
    dockerfile = (REPO / build["context"] / build["dockerfile"]).read_text()
    assert "COPY synapse/modules " in dockerfile and "pip install" in dockerfile
    assert (REPO / "synapse" / "modules" / "pyproject.toml").is_file()
    assert "PYTHONPATH" not in _environment(synapse)  # installed, not mounted
    token_file = PurePosixPath(module["config"]["token_file"])
    assert token_file.parent == PurePosixPath("/run/secrets")
    secret = COMPOSE["secrets"][token_file.name]
    assert token_file.name in SERVICES[synapse]["secrets"]
    raw_env = RAW["services"][appservice]["environment"]["UNITYPLAN_GATE_MODULE_TOKEN"]
    assert f"${{{secret['environment']}:?" in raw_env
    assert config.gate.module_token == _dummy(secret["environment"])


def test_the_nats_authorisation_is_current_and_valid() -> None:
    """deploy/nats/nats.conf is what the code's rules make, and nats-server accepts it."""
    import os
    import subprocess

    from appservice.stack.nats import CLUSTER, deploy_config, find_nats_server

    committed = (REPO / "deploy" / "nats" / "nats.conf").read_text()
    assert committed == deploy_config(TERRITORIES, cluster=CLUSTER)
    result = subprocess.run(
        [find_nats_server(), "-c", str(REPO / "deploy" / "nats" / "nats.conf"), "-t"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            **{f"{c.upper()}_NATS_PASSWORD": "a-password-for-the-check" for c in TERRITORIES},
        },
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_grafana_shows_a_provisioned_dashboard_of_metrics_the_appservice_has() -> None:
    """Grafana reads Prometheus, and every metric its dashboard plots is one the code defines."""
    import re

    grafana = SERVICES["grafana"]
    assert grafana["image"].startswith("grafana/grafana:")
    datasource = YAML(typ="safe").load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert set(grafana["networks"]) >= {"backend"}  # where prometheus is
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/unityplan.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {
        m.removesuffix("_bucket").removesuffix("_total")
        for e in exprs
        for m in re.findall(r"unityplan_[a-z_]+", e)
    }
    known = _all_metric_names()
    assert used and used <= known, sorted(used - known)


def _all_metric_names() -> set[str]:
    """Every metric name the appservice's code declares (its Prometheus collectors)."""
    import re

    names = set()
    for folder in ("appservice", "bridges", "workflows", "core"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r'"(unityplan_[a-z_]+)"', path.read_text()))
    return {name.removesuffix("_total") for name in names}


@pytest.mark.parametrize("code", TERRITORIES)
def test_the_appservice_uses_the_whole_nats_cluster_with_three_replicas(code: str) -> None:
    """Three NATS servers route to each other (each its own --name, JetStream on); every
    appservice knows all three and keeps the stream on all three, so one may be down."""
    from appservice.stack.nats import CLUSTER

    config = _config(code)
    hosts = [urlsplit(url).hostname for url in config.nats.url.split(",")]
    assert hosts == CLUSTER
    assert config.nats.stream_replicas == 3
    conf = (REPO / "deploy" / "nats" / "nats.conf").read_text()
    for host in CLUSTER:
        assert f'"nats-route://{host}:6222"' in conf
    assert '"listen": "0.0.0.0:6222"' in conf
    for node in CLUSTER:
        command = SERVICES[node]["command"]
        assert command[command.index("--name") + 1] == node and "-js" in command


@pytest.mark.parametrize("code", TERRITORIES)
def test_synapse_runs_with_workers_over_redis(code: str) -> None:
    """Each Synapse: the main process with a replication listener, Redis between it and three
    workers (a generic worker, the appservice sender, the federation sender), each with its own
    config and health check, on the networks they need."""
    homeserver, _ = _homeserver(code)
    assert homeserver["redis"]["enabled"] is True
    assert homeserver["redis"]["host"] == "redis" and _share_network(f"synapse-{code}", "redis")
    main = homeserver["instance_map"]["main"]
    assert main["host"] == f"synapse-{code}"
    assert any(
        listener["port"] == main["port"]
        and any("replication" in r["names"] for r in listener.get("resources", []))
        for listener in homeserver["listeners"]
    )
    assert homeserver["notify_appservices_from_worker"] == f"synapse-{code}-appservice-sender"
    assert homeserver["federation_sender_instances"] == [f"synapse-{code}-federation-sender"]
    for name in ("worker", "appservice-sender", "federation-sender"):
        service_name = f"synapse-{code}-{name}"
        service = SERVICES[service_name]
        worker = YAML(typ="safe").load(
            (REPO / "deploy" / code / "workers" / f"{name}.yaml").read_text()
        )
        assert worker["worker_app"] == "synapse.app.generic_worker"
        assert worker["worker_name"] == service_name
        assert f"/config/workers/{name}.yaml" in service["entrypoint"]
        assert _host_path(service_name, f"/config/workers/{name}.yaml") == (
            REPO / "deploy" / code / "workers" / f"{name}.yaml"
        )
        port = worker["worker_listeners"][0]["port"]
        assert f"localhost:{port}/health" in " ".join(service["healthcheck"]["test"])
        assert _share_network(service_name, f"synapse-{code}")
        assert _share_network(service_name, "redis")
        assert _share_network(service_name, "postgres")
    # The appservice sender is what calls the appservice now.
    assert _share_network(f"synapse-{code}-appservice-sender", f"appservice-{code}")
