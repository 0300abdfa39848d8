"""The composition root: small builders that make every component from the config, used alike by
`unityplan run` (the ``Platform``), the CLI subcommands and the local stack; and the order in which
the running platform starts and stops."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from aiohttp import web
from mautrix.types import RoomID

from bridges.events.bus import EventBus
from bridges.events.consumers import ConsumerSettings
from bridges.events.metrics import EventMetrics
from bridges.events.nats_client import NatsClient
from bridges.events.publisher import EventPublisher
from bridges.events.requests import BadgeCheckClient, BadgeCheckResponder
from bridges.events.trust import BusTrust
from bridges.forum.api import ForumApi
from bridges.forum.auth import TokenVerifier
from bridges.forum.bridge import ForumBridge
from bridges.media.api import add_media_routes
from bridges.media.bridge import MediaBridge
from bridges.media.ipfs_client import IpfsClient
from commands.badge import BadgeCommands
from commands.course import CourseCommands
from commands.forum import ForumCommands
from commands.gate import GateCommands
from commands.help import HelpCommands
from commands.me import MeCommands
from commands.mod import ModerationCommands
from commands.permissions import PermissionChecker
from commands.router import CommandRouter
from commands.territory import TerritoryCommands
from core.background import BackgroundTasks
from core.effects import EffectMetrics, Effects, EffectSender, RetryPolicy
from core.encryption import BotEncryption, EncryptionSettings, load_or_create_secret
from core.events import EventEmitter
from core.matrix import DirectMessenger, MatrixConnection, MatrixSettings
from core.ports import ContentStore
from core.ratelimit import RateLimiter
from core.signing import public_key_text
from core.tracing import setup_tracing, shutdown_tracing
from db.database import Database, describe_dsn
from db.repositories.audit import AuditLog
from db.repositories.badges import AwardRepository, BadgeDefinitionRepository
from db.repositories.consumed import ConsumedEventsRepository
from db.repositories.courses import CourseRepository
from db.repositories.direct_rooms import DirectRoomRepository
from db.repositories.effects import EffectRepository
from db.repositories.forum import ForumRepository
from db.repositories.gates import GateRepository
from db.repositories.media import MediaRepository
from db.repositories.member_data import MemberDataRepository
from db.repositories.outbox import OutboxRepository
from db.repositories.territories import Territory, TerritoryRepository
from db.repositories.transactions import TransactionRepository
from db.setup import migrate_all, on_same_server, provision_territory
from db.territory import TerritoryCode, territory_code, territory_schema
from registration.generate import load_registration
from workflows.badge_credentials import BadgeCredentials
from workflows.badge_events import BadgeNotifier, CourseBadgeAwarder
from workflows.badges import BadgeService
from workflows.courses import CourseService
from workflows.credentials import CredentialIssuer, load_or_create_signing_key
from workflows.data_rights import MemberDataService
from workflows.expiry import ExpiryScheduler
from workflows.forum import ForumService
from workflows.gate import GateMetrics, GateService
from workflows.materials import DELIVERY, MaterialStore
from workflows.retention import RetentionMetrics, RetentionPurge
from workflows.territory import TerritorySettings

from .badge_api import HttpCredentialStatus, add_badge_routes
from .command_events import CommandMessageHandler
from .config import Config, ConfigError
from .dispatcher import Dispatcher
from .encrypted_events import CANNOT_READ, EncryptedEvents
from .gate_api import add_gate_routes
from .health import HealthChecks
from .homeserver_admin import SynapseAdmin
from .invites import JOIN_EFFECT, BotInviteHandler, InviteCatchUp
from .member_api import add_member_routes
from .metrics import Metrics
from .openapi import add_openapi_route
from .queries import NamespaceQueries
from .server import add_operational_routes, json_errors
from .transactions import HomeserverEndpoints

log = logging.getLogger("unityplan.as")

MAX_REQUEST_BYTES = 50 * 1024**2
# Words that mark a token somebody was meant to replace (the shipped examples use them).
PLACEHOLDER_WORDS = ("placeholder", "replace-me", "change-me", "changeme", "example")


# --- databases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Databases:
    """The global database and the territory's (the same pool when they share a server)."""

    global_db: Database
    territory_db: Database

    @property
    def distinct(self) -> list[Database]:
        return list({id(d): d for d in (self.global_db, self.territory_db)}.values())


def build_databases(config: Config, *, max_size: int | None = None) -> Databases:
    db = config.database
    code = territory_code(config.territory.code)
    size = max_size or db.pool_max
    minimum = min(db.pool_min, size)
    global_db = Database(db.url, name="global", min_size=minimum, max_size=size)
    territory_db = (
        Database(db.territory_url, name=f"territory_{code}", min_size=minimum, max_size=size)
        if db.territory_url and db.territory_url != db.url
        else global_db
    )
    return Databases(global_db, territory_db)


async def territory_home(config: Config) -> Config:
    """The config with database.territory_url pointing where the registry says the territory's
    schema is (after `unityplan territory migrate`), with the role's own password."""
    db = config.database
    current = db.territory_url or db.url
    try:
        conn = await asyncpg.connect(db.url, timeout=10)
    except (OSError, asyncpg.PostgresError):
        return config  # start-up reports the database itself
    try:
        if not await conn.fetchval("SELECT to_regclass('global.territories') IS NOT NULL"):
            return config
        registered = await conn.fetchval(
            "SELECT database_dsn FROM global.territories WHERE code = $1", config.territory.code
        )
    finally:
        await conn.close()
    if not registered or on_same_server(registered, current):
        return config
    password = urlsplit(current).password
    home = urlsplit(registered)
    netloc = f"{home.username}:{password}@{home.netloc.rsplit('@', 1)[-1]}"
    moved = home._replace(netloc=netloc).geturl()
    log.info("The registry puts territory %s on %s", config.territory.code, describe_dsn(moved))
    return config.model_copy(update={"database": db.model_copy(update={"territory_url": moved})})


async def provisioned(config: Config) -> dict[str, list[int]]:
    """With database.admin_url: migrate the shared schemas and provision this territory's role
    (the one database.url logs in as), before any pool of that role opens."""
    db = config.database
    assert db.admin_url is not None
    code = territory_code(config.territory.code)
    # On a server of its own (territory_url), the territory's role there owns its database.
    same_server = on_same_server(db.admin_url, db.territory_url or db.url)
    applied = await provision_territory(db.admin_url, code, db.url, same_server=same_server)
    log.info("As the admin role: %s", {k: v for k, v in applied.items() if v} or "up to date")
    return applied


@asynccontextmanager
async def opened_databases(
    config: Config, *, migrate: bool, max_size: int = 2
) -> AsyncIterator[Databases]:
    """For one-shot CLI work: start the pools (and migrate), stop them afterwards."""
    if migrate and config.database.admin_url:
        await provisioned(config)
    databases = build_databases(config, max_size=max_size)
    async with AsyncExitStack() as stack:
        for database in databases.distinct:
            await database.start()
            stack.push_async_callback(database.stop)
        if migrate:
            await migrate_all(
                databases.global_db, databases.territory_db, territory_code(config.territory.code)
            )
        yield databases


# --- the domain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CourseServices:
    definitions: BadgeDefinitionRepository
    awards: AwardRepository
    course_repo: CourseRepository
    media: MediaRepository
    badges: BadgeService
    courses: CourseService


def build_course_services(
    config: Config,
    databases: Databases,
    *,
    events: EventEmitter,
    audit: AuditLog,
    content: ContentStore | None,
    matrix: MatrixConnection | None = None,
    messenger: DirectMessenger | None = None,
) -> CourseServices:
    """Courses and badges over their repositories (the appservice and `unityplan course import`)."""
    code = territory_code(config.territory.code)
    prefix = config.commands.prefix
    tdb = databases.territory_db
    definitions = BadgeDefinitionRepository(databases.global_db)
    awards = AwardRepository(tdb, code)
    course_repo = CourseRepository(tdb, code)
    media = MediaRepository(tdb, code)
    badges = BadgeService(
        db=tdb,
        definitions=definitions,
        awards=awards,
        courses=course_repo,
        events=events,
        audit=audit,
        territory=code,
        command_prefix=prefix,
    )
    courses = CourseService(
        db=tdb,
        courses=course_repo,
        definitions=definitions,
        badges=badges,
        events=events,
        audit=audit,
        territory=code,
        command_prefix=prefix,
        materials=MaterialStore(media, content, matrix, messenger) if content is not None else None,
        max_attempts=config.courses.max_attempts,
        cooldown_seconds=config.courses.attempt_cooldown_seconds,
    )
    return CourseServices(definitions, awards, course_repo, media, badges, courses)


def outbox_emitter(databases: Databases, code: TerritoryCode) -> EventPublisher:
    """Events go into the territory's outbox; the running appservice's relay publishes them."""
    return EventPublisher(OutboxRepository(databases.territory_db, code), code)


def matrix_settings(config: Config, as_token: str) -> MatrixSettings:
    return MatrixSettings(
        homeserver_url=config.homeserver.address,
        bot_user_id=config.bot_user_id,
        appservice_id=config.appservice.id,
        as_token=as_token,
        bot_displayname=config.appservice.bot_displayname or None,
        verify_ssl=config.homeserver.verify_ssl,
    )


# --- the running platform ---------------------------------------------------------------------


class Platform:
    """One territory's appservice: everything the process runs, wired in one place."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.territory = code = territory_code(config.territory.code)
        registration_path = config.registration_path
        if not registration_path.is_file():
            raise ConfigError(
                f"The registration file {registration_path} does not exist; create it with "
                "`unityplan registration generate`."
            )
        registration = load_registration(registration_path)
        self.as_token: str = str(registration.get("as_token") or "")
        self.hs_token: str = str(registration.get("hs_token") or "")
        for name, token in (("as_token", self.as_token), ("hs_token", self.hs_token)):
            if len(token) < 32 or any(w in token.lower() for w in PLACEHOLDER_WORDS):
                raise ConfigError(
                    f"The {name} in {registration_path} is a placeholder or too short; make real "
                    "tokens with `unityplan registration generate --rotate`."
                )
        namespace = config.namespace
        server_name = config.homeserver.domain
        prefix = config.commands.prefix

        self.metrics = Metrics()
        self.background = BackgroundTasks()
        databases = build_databases(config)
        self.databases = databases
        self.global_db, self.territory_db = databases.global_db, databases.territory_db
        self.nats = NatsClient(
            config.nats.url,
            name=f"unityplan-{code}",
            user=config.nats.user,
            password=config.nats.password,
            inbox_prefix=f"_INBOX_{code}",
        )
        self.ipfs = IpfsClient(config.ipfs.api_url)
        self.matrix = MatrixConnection(matrix_settings(config, self.as_token))

        self.territories = TerritoryRepository(self.global_db)
        # From the config (written to the registry at start), then read again from the registry
        # whenever territory.settings_changed names this territory.
        self.territory_settings = TerritorySettings(
            self.territories,
            code,
            {
                "data_residency": config.territory.data_residency,
                "allow_cross_border": config.territory.allow_cross_border,
                "audit_retention_days": config.territory.audit_retention_days,
                "comment_retention_days": config.territory.comment_retention_days,
                "answer_retention_days": config.territory.answer_retention_days,
                "erasure_comments": config.territory.erasure_comments,
            },
        )
        self.audit = AuditLog(self.global_db, code)
        self.inbox = TransactionRepository(self.territory_db, code)
        self.outbox = OutboxRepository(self.territory_db, code)
        self.consumed = ConsumedEventsRepository(self.territory_db, code)
        self.events = EventPublisher(
            self.outbox, code, lambda: not self.territory_settings.allow_cross_border
        )
        self.event_metrics = EventMetrics(self.metrics.registry)
        self.signing_key = load_or_create_signing_key(config.signing_key_path)
        self.bus_trust = BusTrust(self.signing_key, code, self.territories)
        self.badge_checks = BadgeCheckClient(
            self.nats, self.territories, self.bus_trust, self.event_metrics
        )
        self.direct_rooms = DirectRoomRepository(self.territory_db, code)
        self.messenger = DirectMessenger(self.matrix, self.direct_rooms)
        self.effect_repo = EffectRepository(self.territory_db, code)
        self.effects = Effects(self.effect_repo)
        self.effect_sender = EffectSender(
            self.effect_repo,
            self.effects,
            self.matrix,
            self.messenger,
            EffectMetrics(self.metrics.registry),
            policy=RetryPolicy(
                max_attempts=config.appservice.effect_max_attempts,
                base_seconds=config.appservice.retry_base_seconds,
                timeout_seconds=config.appservice.effect_timeout_seconds,
            ),
        )

        # Courses and badges.
        services = build_course_services(
            config,
            databases,
            events=self.events,
            audit=self.audit,
            content=self.ipfs,
            matrix=self.matrix,
            messenger=self.messenger,
        )
        self.badge_definitions = services.definitions
        self.awards = services.awards
        self.course_repo = services.course_repo
        self.media = services.media
        self.badges = services.badges
        self.courses = services.courses
        self.credentials = BadgeCredentials(
            CredentialIssuer(
                self.signing_key,
                base_url=config.public_url,
                territory_code=code,
                territory_name=config.territory.name,
            ),
            self.awards,
            self.badge_definitions,
            self.territories,
            HttpCredentialStatus(),
        )
        self.expiry = ExpiryScheduler(
            db=self.territory_db,
            awards=self.awards,
            definitions=self.badge_definitions,
            badges=self.badges,
            effects=self.effects,
            reminder_lead_seconds=config.badges.reminder_lead_hours * 3600,
            interval_seconds=config.badges.expiry_check_seconds,
            command_prefix=prefix,
        )
        self.gate = GateService(
            gates=GateRepository(self.territory_db, code),
            awards=self.awards,
            definitions=self.badge_definitions,
            badge_checks=self.badge_checks,
            matrix=self.matrix,
            effects=self.effects,
            audit=self.audit,
            metrics=GateMetrics(self.metrics.registry),
            namespace=namespace,
            territory=code,
            territories=self.territories,
            settings=self.territory_settings,
            events=self.events,
            command_prefix=prefix,
            cache_seconds=config.gate.decision_cache_seconds,
            knock_limit=RateLimiter("knocks", config.limits.knocks_per_hour / 60),
            server_limit=RateLimiter(
                "knocks and DMs for one server", config.limits.remote_server_per_hour / 60
            ),
        )
        self.event_bus = self._event_bus()

        # The forum, and its files on IPFS.
        self.forum = ForumRepository(self.territory_db, code)
        self.forum_service = ForumService(
            db=self.territory_db,
            forum=self.forum,
            matrix=self.matrix,
            events=self.events,
            effects=self.effects,
            audit=self.audit,
            namespace=namespace,
            alias_prefix=config.appservice.alias_prefix,
            moderators=config.permissions.admins,
            topic_limit=RateLimiter("new topics", config.limits.topics_per_hour / 60),
            settings=self.territory_settings,
        )
        self.media_bridge = MediaBridge(
            db=self.territory_db,
            media=self.media,
            forum=self.forum,
            ipfs=self.ipfs,
            effects=self.effects,
            events=self.events,
            matrix=self.matrix,
            max_bytes=config.media.max_bytes,
        )

        self.permissions = PermissionChecker(
            admins=config.permissions.admins,
            badge_issuers=config.permissions.badge_issuers,
            course_admins=config.permissions.course_admins,
            badge_admins=config.permissions.badge_admins,
            power_levels=self._power_levels,
            holds_badge=self.awards.holds,
            issuer_scopes=config.permissions.issuer_scopes,
        )
        # Members' data rights: export, erasure, retention.
        self.member_data_repo = MemberDataRepository(self.territory_db, self.global_db, code)
        admin_token = config.homeserver.admin_token or None
        self.member_data = MemberDataService(
            db=self.territory_db,
            repo=self.member_data_repo,
            credentials=self.credentials,
            audit=self.audit,
            effects=self.effects,
            events=self.events,
            settings=self.territory_settings,
            matrix=self.matrix,
            namespace=namespace,
            pins=self.ipfs,
            territory=code,
            account_eraser=(
                SynapseAdmin(config.homeserver.address, admin_token) if admin_token else None
            ),
        )
        self.retention = RetentionPurge(
            self.member_data_repo,
            self.territory_settings,
            RetentionMetrics(self.metrics.registry),
            interval_seconds=config.retention.check_seconds,
        )
        self.router = self._router()

        self.encrypted_events = EncryptedEvents(
            self.matrix,
            self.inbox,
            self.effects,
            enabled=config.encryption.enabled,
            key_wait_seconds=config.encryption.key_wait_seconds,
        )
        self.queries = NamespaceQueries()
        self.queries.add_alias_resolver(self.forum_service.resolve_alias)
        self.dispatcher = Dispatcher(
            namespace=namespace,
            handlers=[
                BotInviteHandler(
                    config.bot_user_id,
                    server_name,
                    self.messenger,
                    self.effects,
                    cannot_read_encrypted=None if config.encryption.enabled else CANNOT_READ,
                ),
                CommandMessageHandler(self.router, self.effects),
                self.gate,
                ForumBridge(self.forum, self.forum_service, self.events, self.router.is_command),
                self.media_bridge,
            ],
            inbox=self.inbox,
            db=self.territory_db,
            state_store=self.matrix.state_store,
            metrics=self.metrics,
            max_concurrent=config.appservice.max_concurrent_events,
            max_attempts=config.appservice.event_max_attempts,
            retry_base_seconds=config.appservice.retry_base_seconds,
            encrypted=self.encrypted_events,
        )
        self.endpoints = HomeserverEndpoints(
            hs_token=self.hs_token,
            homeserver=server_name,
            allow_legacy_token=config.appservice.allow_legacy_access_token,
            inbox=self.inbox,
            dispatcher=self.dispatcher,
            metrics=self.metrics,
            query_user=self.queries.query_user,
            query_alias=self.queries.query_alias,
            encryption_parts=self.encrypted_events.handle_transaction,
        )
        self.health = HealthChecks(
            {
                "database": self.global_db.ping,
                **(
                    {"territory_database": self.territory_db.ping}
                    if self.territory_db is not self.global_db
                    else {}
                ),
                "nats": self.nats.round_trip_ms,
                "ipfs": self.ipfs.round_trip_ms,
                "homeserver": self.matrix.check_reachable,
            }
        )
        self.invite_catch_up = InviteCatchUp(self.matrix, self.inbox, server_name)
        for kind, executor in {
            **self.forum_service.executors(),
            **self.member_data.executors(),
            JOIN_EFFECT: self.invite_catch_up.join,
        }.items():
            self.effect_sender.register(kind, executor)
        if self.courses.materials is not None:
            self.effect_sender.register(DELIVERY, self.courses.materials.deliver)
        self.token_verifier = TokenVerifier(
            config.homeserver.address,
            config.homeserver.domain,
            accept_access_tokens=config.appservice.api_accepts_access_tokens,
        )
        self.web_app = self._web_app()

        self._migrated = False
        self._homeserver_connected = False
        # Called when the registry moves the territory's schema (see _follow_registry).
        self.on_moved: Callable[[], None] | None = None
        self._exit = AsyncExitStack()

    # --- builders -----------------------------------------------------------------------------

    def _event_bus(self) -> EventBus:
        nats = self.config.nats
        bus = EventBus(
            nats=self.nats,
            db=self.territory_db,
            outbox=self.outbox,
            consumed=self.consumed,
            publisher=self.events,
            metrics=self.event_metrics,
            responder=BadgeCheckResponder(
                self.nats,
                self.territory,
                self.badges.status,
                self.bus_trust,
                settings=self.territory_settings,
            ),
            trust=self.bus_trust,
            settings=ConsumerSettings(
                stream=nats.stream, max_deliver=nats.max_deliver, ack_wait=nats.ack_wait_seconds
            ),
            duplicate_window=nats.duplicate_window_seconds,
            max_age=nats.max_age_days * 86400,
            replicas=nats.stream_replicas,
        )
        prefix = self.config.commands.prefix
        bus.add_consumer(
            CourseBadgeAwarder(self.badges, self.course_repo, self.config.bot_user_id).spec(
                self.territory
            )
        )
        bus.add_consumer(BadgeNotifier(self.effects, self.awards, prefix).spec(self.territory))
        bus.add_consumer(self.gate.consumer(self.territory))
        bus.add_consumer(self.gate.remote_gates_consumer(self.territory))
        bus.add_consumer(self.territory_settings.consumer())
        return bus

    def _router(self) -> CommandRouter:
        config = self.config
        router = CommandRouter(
            config.commands.prefix, self.permissions, self.territory_db.transaction, self.metrics
        )
        router.register(HelpCommands(router))
        router.register(TerritoryCommands(self.territories, self.territory, config.bot_user_id))
        router.register(
            BadgeCommands(
                self.badges,
                self.badge_checks,
                self.credentials,
                config.homeserver.domain,
                self.permissions,
            )
        )
        router.register(CourseCommands(self.courses, self.matrix, self.effects))
        router.register(GateCommands(self.gate))
        router.register(ForumCommands(self.forum_service, self.permissions))
        router.register(ModerationCommands(self.matrix, self.effects, self.audit, self.events))
        router.register(MeCommands(self.member_data, self.direct_rooms, self.territory))
        return router

    def _web_app(self) -> web.Application:
        config = self.config
        app = web.Application(middlewares=[json_errors], client_max_size=MAX_REQUEST_BYTES)
        self.endpoints.add_routes(app)
        self.metrics_app = (
            web.Application(middlewares=[json_errors]) if config.appservice.metrics_port else None
        )
        add_operational_routes(
            app,
            self.health,
            self._ready_state,
            self.metrics,
            self._queue_state,
            metrics_app=self.metrics_app,
        )
        add_badge_routes(app, self.credentials)
        ForumApi(
            self.forum,
            self.forum_service,
            self.token_verifier,
            self.media,
            self.gate,
            self.territories,
            RateLimiter("writes", config.limits.api_writes_per_minute),
        ).add_routes(app)
        add_media_routes(app, self.media, self.ipfs)
        add_openapi_route(app, config.public_url, self.territory)
        add_member_routes(
            app,
            self.member_data,
            self.token_verifier,
            RateLimiter("exports", config.limits.api_writes_per_minute),
        )
        if config.gate.module_token:
            add_gate_routes(app, self.gate, config.gate.module_token)
        return app

    async def _power_levels(self, room_id: RoomID) -> Any:
        return await self.matrix.effective_power_levels(room_id)

    def _ready_state(self) -> dict[str, Any]:
        return {
            "configuration_loaded": True,
            "database_migrations": "complete" if self._migrated else "pending",
            "homeserver_connected": self._homeserver_connected,
        }

    async def _queue_state(self) -> dict[str, Any]:
        """What waits and what was given up (for /ready and /metrics)."""
        inbox = await self.inbox.counts()
        effects = await self.effect_repo.counts()
        new_dead = await self.inbox.dead_since(3600) + await self.effect_repo.dead_since(3600)
        self.metrics.inbox.clear()
        for state in ("pending", "done", "failed", "dead"):
            self.metrics.inbox.labels(state).set(inbox.get(state, 0))
        await self.effect_sender.refresh_gauges()
        return {
            "inbox": {s: inbox.get(s, 0) for s in ("pending", "failed", "dead")},
            "effects": {s: effects.get(s, 0) for s in ("pending", "dead")},
            "dead_letters_last_hour": new_dead,
            "dead_letters_growing": new_dead > 0,
        }

    # --- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        """Start in dependency order; on failure, stop what already started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        if setup_tracing(
            f"unityplan-{self.territory}",
            config.tracing.otlp_endpoint or None,
            config.tracing.export_delay_ms,
        ):
            self._exit.callback(shutdown_tracing)
        if config.database.admin_url:
            await provisioned(config)
        for database in self.databases.distinct:
            await database.start(wait=config.database.connect_wait_seconds)
            self._exit.push_async_callback(database.stop)
        applied = await migrate_all(self.global_db, self.territory_db, self.territory)
        log.info("Migrations applied: %s", {k: v for k, v in applied.items() if v} or "none")
        await self.territories.upsert(
            Territory(
                code=self.territory,
                name=config.territory.name,
                server_name=config.homeserver.domain,
                homeserver_url=config.homeserver.address,
                database_dsn=config.database.territory_url or config.database.url,
                # The config's settings (a `territory settings` change lasts until a restart).
                settings=self.territory_settings.as_dict(),
                public_key=public_key_text(self.signing_key),
                public_url=config.public_url,
            )
        )
        self._migrated = True

        for component in (self.nats, self.event_bus, self.ipfs, self.matrix):
            await component.start()
            self._exit.push_async_callback(component.stop)
        self._exit.push_async_callback(self.background.stop)
        self._exit.push_async_callback(self.token_verifier.close)

        self.background.start(self.effect_sender.run(), name="effects")
        self._exit.push_async_callback(self.effect_sender.stop)
        # What a previous run left pending is handled before new transactions are accepted, so a
        # room's old events never fall behind its new ones.
        await self.endpoints.recover()
        self.background.start(self.dispatcher.sweep(), name="inbox-sweeper")

        runner = web.AppRunner(self.web_app, access_log=None)
        await runner.setup()
        self._exit.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.appservice.hostname, config.appservice.port)
        await site.start()
        log.info("Listening on %s:%d", config.appservice.hostname, config.appservice.port)
        if self.metrics_app is not None and config.appservice.metrics_port:
            metrics_runner = web.AppRunner(self.metrics_app, access_log=None)
            await metrics_runner.setup()
            self._exit.push_async_callback(metrics_runner.cleanup)
            await web.TCPSite(
                metrics_runner, config.appservice.hostname, config.appservice.metrics_port
            ).start()
            log.info("Metrics on %s:%d", config.appservice.hostname, config.appservice.metrics_port)
        self.background.start(self._connect_homeserver(), name="homeserver-connect")
        self.background.start(self.expiry.run(), name="badge-expiry")
        self.background.start(self.retention.run(), name="retention")
        self.background.start(self.encrypted_events.run(), name="room-keys")
        self.background.start(self.media_bridge.run(), name="media-queue")
        self.background.start(self._follow_registry(), name="registry")

    @asynccontextmanager
    async def offline(self) -> AsyncIterator[Platform]:
        """The domain and the Matrix connection without serving anything: for tools that work
        beside a running appservice (its effect sender delivers what they queue)."""
        async with AsyncExitStack() as stack:
            for database in self.databases.distinct:
                await database.start(wait=self.config.database.connect_wait_seconds)
                stack.push_async_callback(database.stop)
            for component in (self.ipfs, self.matrix):
                await component.start()
                stack.push_async_callback(component.stop)
            yield self

    async def _follow_registry(self, interval: float = 2.0) -> None:
        """Notice when the registry moves this territory's schema to another server (`unityplan
        territory migrate`): then ``on_moved`` runs (`unityplan run` stops, and its supervisor or
        the container's restart policy starts it again on the new server)."""
        current = self.config.database.territory_url or self.config.database.url
        while True:
            await asyncio.sleep(interval)
            try:
                territory = await self.territories.get(self.territory)
            except Exception as exc:  # a paused or restarting database: look again later
                log.debug("Cannot read the registry: %s", exc)
                continue
            if territory is not None and not on_same_server(territory.database_dsn, current):
                log.warning(
                    "Territory %s moved to %s; restarting there",
                    self.territory,
                    describe_dsn(territory.database_dsn),
                )
                if self.on_moved is not None:
                    self.on_moved()
                return

    async def _connect_homeserver(self) -> None:
        await self.matrix.connect_to_homeserver()
        self._homeserver_connected = True
        if self.config.encryption.enabled:
            await self._start_encryption()

    async def _start_encryption(self) -> None:
        """The bot's device and its sessions: once the homeserver answers."""
        config = self.config
        encryption = BotEncryption(
            EncryptionSettings(
                homeserver_url=config.homeserver.address,
                bot_user_id=config.bot_user_id,
                as_token=self.as_token,
                database_url=config.database.territory_url or config.database.url,
                schema=territory_schema(self.territory),
                pickle_key=load_or_create_secret(config.pickle_key_path),
                device_name=config.encryption.device_name,
                recovery_key_path=config.recovery_key_path,
                verify_ssl=config.homeserver.verify_ssl,
            ),
            self.matrix.state_store,
        )
        try:
            await encryption.start()
        except Exception:
            log.exception(
                "The bot's end-to-end encryption could not start: encrypted rooms stay unread "
                "(see docs/encryption.md for what the homeserver must enable)"
            )
            await encryption.stop()
            return
        self._exit.push_async_callback(self._stop_encryption)
        self.matrix.encryption = encryption
        log.info("End-to-end encryption is on: the bot's device is %s", encryption.device_id)

    async def _stop_encryption(self) -> None:
        encryption, self.matrix.encryption = self.matrix.encryption, None
        if encryption is not None:
            await encryption.stop()

    async def stop(self) -> None:
        await self._exit.aclose()
