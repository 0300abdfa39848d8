"""Configuration: the commented example YAML is the source of truth for keys and defaults.

Loading copies the operator's values over the example, applies ``UNITYPLAN_<SECTION>_<KEY>``
environment overrides and validates the result with pydantic. Any problem becomes one
``ConfigError`` sentence that the CLI prints before exiting non-zero.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from core.ids import MXID_PATTERN, Namespace
from db.territory import TERRITORY_CODE_PATTERN
from registration.generate import RegistrationSpec

ENV_PREFIX = "UNITYPLAN_"


class ConfigError(Exception):
    """A configuration problem, phrased as one sentence for the operator."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TerritoryConfig(_Section):
    code: str
    name: str = Field(min_length=1)
    data_residency: str = ""
    allow_cross_border: bool = True
    # Members' data rights (docs/data-rights.md): how long the audit log, forum comments and quiz
    # answers are kept (days; 0 keeps them for good) and what `!me forget` does with comments.
    audit_retention_days: int = Field(default=365, ge=0)
    comment_retention_days: int = Field(default=0, ge=0)
    answer_retention_days: int = Field(default=0, ge=0)
    erasure_comments: Literal["remove", "keep"] = "remove"

    @field_validator("code")
    @classmethod
    def _code(cls, value: str) -> str:
        if not TERRITORY_CODE_PATTERN.fullmatch(value):
            raise ValueError(
                "a territory code is 2-31 characters: a lower case letter, then lower case "
                "letters, digits or _ (like dk or north_sea)"
            )
        return value


class HomeserverConfig(_Section):
    address: str = Field(pattern=r"^https?://")
    domain: str = Field(pattern=r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$")
    verify_ssl: bool = True
    admin_token: str | None = None  # a homeserver admin's token: erasure deactivates accounts


class AppserviceConfig(_Section):
    id: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    address: str = Field(pattern=r"^https?://")
    public_url: str | None = Field(default=None, pattern=r"^https?://")
    hostname: str
    port: int = Field(ge=1, le=65535)
    registration: str
    bot_localpart: str = Field(pattern=r"^[a-z0-9._=\-/]+$")
    bot_displayname: str = ""
    user_prefix: str = Field(pattern=r"^[a-z0-9._=\-/]+$")
    alias_prefix: str = Field(pattern=r"^[a-z0-9._=\-/]+$")
    allow_legacy_access_token: bool = False
    api_accepts_access_tokens: bool = False
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    max_concurrent_events: int = Field(default=8, ge=1, le=64)
    event_max_attempts: int = Field(default=5, ge=1, le=100)
    effect_max_attempts: int = Field(default=12, ge=1, le=100)
    effect_timeout_seconds: float = Field(default=30, gt=0, le=600)
    retry_base_seconds: float = Field(default=0.5, gt=0, le=60)


class DatabaseConfig(_Section):
    url: str = Field(pattern=r"^postgres(ql)?://")
    territory_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    # The role that owns the shared schemas: used once, to migrate them and to provision this
    # territory's own role (the one in url), never for the appservice's own queries.
    admin_url: str | None = Field(default=None, pattern=r"^postgres(ql)?://")
    pool_min: int = Field(default=1, ge=0)
    pool_max: int = Field(default=10, ge=1)
    connect_wait_seconds: float = Field(default=30, ge=0)

    @field_validator("url")
    @classmethod
    def _not_example(cls, value: str) -> str:
        if ":change-me@" in value:
            raise ValueError("still has the example password 'change-me'")
        return value


class NatsConfig(_Section):
    # One server, or a cluster's servers separated by commas (nats://nats-1:4222,nats://nats-2:4222).
    url: str = Field(pattern=r"^(nats|tls)://[^,\s]+(,(nats|tls)://[^,\s]+)*$")
    # The territory's own NATS user: it may publish only under unityplan.<code>.> (see docs).
    user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+$")
    password: str | None = Field(default=None, min_length=8)
    stream: str = Field(default="UNITYPLAN", pattern=r"^[A-Za-z0-9_-]+$")
    duplicate_window_seconds: int = Field(default=120, ge=1)
    max_age_days: int = Field(default=30, ge=1)
    max_deliver: int = Field(default=5, ge=1, le=100)
    ack_wait_seconds: float = Field(default=30, gt=0)
    # How many servers of a cluster keep the stream (3 in the compose file's three-node cluster).
    stream_replicas: int = Field(default=1, ge=1, le=5)


class IpfsConfig(_Section):
    api_url: str = Field(pattern=r"^https?://")


class CommandsConfig(_Section):
    prefix: str = Field(min_length=1, max_length=8, pattern=r"^\S+$")


class PermissionsConfig(_Section):
    admins: tuple[str, ...] = ()
    badge_issuers: tuple[str, ...] = ()
    course_admins: tuple[str, ...] = ()
    badge_admins: tuple[str, ...] = ()
    # An issuer (a Matrix user ID or badge:<slug>) listed here awards only these badges.
    issuer_scopes: dict[str, tuple[str, ...]] = Field(default_factory=dict)

    @field_validator("issuer_scopes")
    @classmethod
    def _scopes(cls, scopes: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for who, badges in scopes.items():
            if not (MXID_PATTERN.match(who) or re.match(r"^badge:[a-z0-9-]+$", who)):
                raise ValueError(f"{who!r} is neither a Matrix user ID nor badge:<slug>")
            for badge in badges:
                if not re.match(r"^[a-z0-9][a-z0-9-]{0,62}$", badge):
                    raise ValueError(f"{badge!r} is not a badge slug")
        return scopes

    @field_validator("admins")
    @classmethod
    def _mxids(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not MXID_PATTERN.match(value):
                raise ValueError(f"{value!r} is not a Matrix user ID like @name:server")
        return values

    @field_validator("badge_issuers", "course_admins", "badge_admins")
    @classmethod
    def _mxids_or_badges(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        for value in values:
            if not (MXID_PATTERN.match(value) or re.match(r"^badge:[a-z0-9-]+$", value)):
                raise ValueError(f"{value!r} is neither a Matrix user ID nor badge:<slug>")
        return values


class LimitsConfig(_Section):
    api_writes_per_minute: float = Field(default=30, ge=0)
    topics_per_hour: float = Field(default=10, ge=0)
    knocks_per_hour: float = Field(default=30, ge=0)
    # Knocks from, and DMs to, the users of one remote homeserver together.
    remote_server_per_hour: float = Field(default=1200, ge=0)


class CoursesConfig(_Section):
    max_attempts: int = Field(default=5, ge=0)
    attempt_cooldown_seconds: float = Field(default=60, ge=0)


class BadgesConfig(_Section):
    reminder_lead_hours: float = Field(default=168, ge=0)
    expiry_check_seconds: float = Field(default=60, gt=0)
    signing_key: str = "badge-signing-key.pem"


class EncryptionConfig(_Section):
    # The bot in encrypted rooms (docs/encryption.md). Off: it says once in each encrypted room
    # that it cannot read it there.
    enabled: bool = True
    device_name: str = "UnityPlan bot"
    # Files beside the config (mode 0600, made on first start): the key that encrypts the bot's
    # Olm account and sessions in the database, and the recovery key of its cross-signing keys.
    pickle_key: str = "bot-crypto-pickle-key"
    recovery_key: str = "bot-recovery-key"
    # How long a message waits for its room key (then the sender is told it could not be read).
    key_wait_seconds: float = Field(default=600, gt=0)


class TracingConfig(_Section):
    # OpenTelemetry spans over OTLP/HTTP (e.g. http://otel-collector:4318); off when empty.
    otlp_endpoint: str | None = None
    export_delay_ms: int = Field(default=2000, ge=10)


class RetentionConfig(_Section):
    # How often the retention purge runs (the periods themselves are territory settings).
    check_seconds: float = Field(default=3600, gt=0)


class MediaConfig(_Section):
    max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)


class GateConfig(_Section):
    module_token: str | None = Field(default=None, min_length=16)
    decision_cache_seconds: float = Field(default=60, ge=0)


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


class Config(_Section):
    territory: TerritoryConfig
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database: DatabaseConfig
    nats: NatsConfig
    ipfs: IpfsConfig
    commands: CommandsConfig
    permissions: PermissionsConfig
    badges: BadgesConfig
    courses: CoursesConfig
    limits: LimitsConfig
    media: MediaConfig
    retention: RetentionConfig = RetentionConfig()
    encryption: EncryptionConfig = EncryptionConfig()
    tracing: TracingConfig = TracingConfig()
    gate: GateConfig
    logging: LoggingConfig
    # Where the file was read from; relative paths in it are resolved against its folder.
    path: Path | None = None

    @model_validator(mode="after")
    def _pool_sizes(self) -> Config:
        if self.database.pool_min > self.database.pool_max:
            raise ValueError("database.pool_min is larger than database.pool_max")
        return self

    @property
    def namespace(self) -> Namespace:
        """The bot and its ghosts on this territory's server (the one namespace test)."""
        return Namespace(
            server_name=self.homeserver.domain,
            user_prefix=self.appservice.user_prefix,
            bot_localpart=self.appservice.bot_localpart,
        )

    @property
    def bot_user_id(self) -> str:
        return self.namespace.bot_user_id

    def registration_spec(self) -> RegistrationSpec:
        return RegistrationSpec(
            id=self.appservice.id,
            url=self.appservice.address,
            namespace=self.namespace,
            alias_prefix=self.appservice.alias_prefix,
        )

    @property
    def registration_path(self) -> Path:
        return self._relative(self.appservice.registration)

    @property
    def signing_key_path(self) -> Path:
        return self._relative(self.badges.signing_key)

    @property
    def pickle_key_path(self) -> Path:
        return self._relative(self.encryption.pickle_key)

    @property
    def recovery_key_path(self) -> Path:
        return self._relative(self.encryption.recovery_key)

    @property
    def public_url(self) -> str:
        return (self.appservice.public_url or self.appservice.address).rstrip("/")

    def _relative(self, value: str) -> Path:
        path = Path(value)
        if not path.is_absolute() and self.path is not None:
            path = self.path.parent / path
        return path


def example_config_text() -> str:
    return resources.files("appservice").joinpath("example-config.yaml").read_text("utf-8")


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.indent(mapping=4, sequence=4, offset=4)
    return yaml


def _plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str = "") -> None:
    for key, value in override.items():
        path = f"{where}{key}"
        if key not in base:
            raise ConfigError(f"Unknown configuration key '{path}' (see example-config.yaml).")
        if isinstance(base[key], dict) and base[key] and value is not None:  # {}: a free map
            if not isinstance(value, Mapping):
                raise ConfigError(f"Configuration key '{path}' must be a section, not {value!r}.")
            _merge(base[key], value, f"{path}.")
        else:
            base[key] = value


def _env_overrides(base: dict[str, Any], environ: Mapping[str, str]) -> None:
    parser = YAML(typ="safe")
    for section, keys in base.items():
        if not isinstance(keys, dict):
            continue
        for key in keys:
            name = f"{ENV_PREFIX}{section}_{key}".upper()
            if name in environ:
                raw = environ[name]
                if _literal(key):
                    keys[key] = raw or None  # a secret is taken as written, never parsed
                    continue
                try:
                    keys[key] = parser.load(raw) if raw.strip() else None
                except YAMLError:
                    keys[key] = raw


SECRET_WORDS = ("password", "token", "secret", "url", "key")


def _literal(key: str) -> bool:
    """Values taken from the environment as the exact string: secrets and addresses (a password
    "0123" or "yes" must not become a number or a boolean)."""
    return any(word in key for word in SECRET_WORDS)


def _shown(location: str, value: Any) -> str:
    """The offending value as the operator wrote it; secrets, and passwords in URLs, masked."""
    if any(word in location for word in ("password", "token", "secret")):
        return "(a secret, not shown)"
    text = repr(value)
    if "url" in location and isinstance(value, str):
        text = repr(re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", value))
    return text if len(text) <= 80 else text[:77] + "..."


def _describe(error: ValidationError, environ: Mapping[str, str]) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    env = f"{ENV_PREFIX}{location.replace('.', '_').upper()}" if location.count(".") == 1 else None
    if first["type"] == "missing":
        hint = f" (set it in the config file or with {env})" if env else ""
        return f"Configuration value '{location}' is missing{hint}."
    source = f" from {env}" if env and env in environ else ""
    value = _shown(location, first.get("input"))
    return f"Configuration value '{location}' = {value}{source} is invalid: {message}."


def load_config(path: Path | str | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read, merge, override and validate. Raises ConfigError with one sentence."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = _plain(_yaml().load(example_config_text()))
    resolved: Path | None = None
    if path is not None:
        resolved = Path(path).resolve()
        if not resolved.is_file():
            dev_config = Path(".unityplan/dev/appservice/config.yaml")
            hint = (
                f" (the local stack of `unityplan dev` uses {dev_config})"
                if dev_config.is_file()
                else ""
            )
            raise ConfigError(
                f"Config file {resolved} does not exist; copy appservice/example-config.yaml "
                f"there and edit it{hint}."
            )
        try:
            user_values = _plain(_yaml().load(resolved.read_text("utf-8")))
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"Config file {resolved} is not valid YAML{line}.") from exc
        if user_values is not None:
            if not isinstance(user_values, dict):
                raise ConfigError(f"Config file {resolved} must be a YAML mapping of sections.")
            _merge(values, user_values)
    _env_overrides(values, environ)
    try:
        return Config.model_validate({**values, "path": resolved})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, environ)) from exc


def write_config(values: Mapping[str, Any], path: Path) -> None:
    """Write a config: the example with ``values`` (section -> key -> value) filled in.

    Comments of the example stay; the file is written to a temporary name and renamed.
    """
    document = _yaml().load(example_config_text())
    for section, keys in values.items():
        for key, value in keys.items():
            if key not in document[section]:
                raise ConfigError(f"Unknown configuration key '{section}.{key}'.")
            document[section][key] = list(value) if isinstance(value, tuple) else value
    buffer = io.StringIO()
    _yaml().dump(document, buffer)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), "utf-8")
    tmp.chmod(0o600)  # a config holds database passwords
    tmp.replace(path)
