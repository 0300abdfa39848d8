"""The composition root: builds every component from the config and starts/stops them in order."""

from __future__ import annotations

import logging
import re
from contextlib import AsyncExitStack
from typing import Any

from aiohttp import web
from mautrix.types import RoomID

from bridges.events.bus import EventBus
from bridges.events.consumers import ConsumerSettings
from bridges.events.metrics import EventMetrics
from bridges.events.nats_client import NatsClient
from bridges.events.publisher import EventPublisher
from bridges.events.requests import BadgeCheckClient, BadgeCheckResponder
from bridges.forum.api import ForumApi
from bridges.forum.auth import TokenVerifier
from bridges.forum.bridge import ForumBridge
from bridges.forum.topics import ForumService
from bridges.media.api import add_media_routes
from bridges.media.bridge import MediaBridge
from bridges.media.ipfs_client import IpfsClient
from commands.badge import BadgeCommands
from commands.course import CourseCommands
from commands.forum import ForumCommands
from commands.gate import GateCommands
from commands.help import HelpCommands
from commands.mod import ModerationCommands
from commands.permissions import PermissionChecker
from commands.router import CommandRouter
from commands.territory import TerritoryCommands
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.consumed import ConsumedEventsRepository
from db.repositories.direct_rooms import DirectRoomRepository
from db.repositories.forum import ForumRepository
from db.repositories.gates import GateRepository
from db.repositories.media import MediaRepository
from db.repositories.outbox import OutboxRepository
from db.repositories.territories import Territory, TerritoryRepository
from db.repositories.transactions import TransactionRepository
from db.setup import migrate_all
from db.territory import territory_code
from registration.generate import load_registration, user_namespace
from workflows.badge_credentials import BadgeCredentials
from workflows.badge_events import BadgeNotifier, CourseBadgeAwarder
from workflows.credentials import CredentialIssuer, load_or_create_signing_key
from workflows.direct_messages import DirectMessenger
from workflows.expiry import ExpiryScheduler
from workflows.gate import GateMetrics, GateService
from workflows.wiring import course_workflows

from .background import BackgroundTasks
from .badge_api import add_badge_routes
from .command_events import CommandMessageHandler
from .config import Config, ConfigError
from .dispatcher import Dispatcher
from .gate_api import add_gate_routes
from .health import HealthChecks
from .invites import BotInviteHandler
from .matrix import MatrixConnection
from .metrics import Metrics
from .queries import NamespaceQueries
from .server import add_operational_routes, json_errors
from .transactions import HomeserverEndpoints

log = logging.getLogger("unityplan.as")


class Platform:
    """One territory's appservice: everything the process runs, wired in one place."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.territory = territory_code(config.territory.code)
        registration_path = config.registration_path
        if not registration_path.is_file():
            raise ConfigError(
                f"The registration file {registration_path} does not exist; create it with "
                "`unityplan registration generate`."
            )
        registration = load_registration(registration_path)
        self.as_token: str = registration["as_token"]
        self.hs_token: str = registration["hs_token"]

        self.metrics = Metrics()
        self.background = BackgroundTasks()
        db = config.database
        self.global_db = Database(db.url, name="global", min_size=db.pool_min, max_size=db.pool_max)
        self.territory_db = (
            Database(
                db.territory_url,
                name=f"territory_{self.territory}",
                min_size=db.pool_min,
                max_size=db.pool_max,
            )
            if db.territory_url and db.territory_url != db.url
            else self.global_db
        )
        self.nats = NatsClient(config.nats.url, name=f"unityplan-{self.territory}")
        self.ipfs = IpfsClient(config.ipfs.api_url)
        self.matrix = MatrixConnection(config, self.as_token)

        self.territories = TerritoryRepository(self.global_db)
        self.audit = AuditLog(self.global_db, self.territory)
        self.inbox = TransactionRepository(self.territory_db, self.territory)

        nats = config.nats
        self.event_metrics = EventMetrics(self.metrics.registry)
        self.outbox = OutboxRepository(self.territory_db, self.territory)
        self.consumed = ConsumedEventsRepository(self.territory_db, self.territory)
        self.events = EventPublisher(self.outbox, self.territory)
        self.badge_checks = BadgeCheckClient(self.nats, self.territories)

        # Courses and badges.
        workflows = course_workflows(
            global_db=self.global_db,
            territory_db=self.territory_db,
            territory=self.territory,
            events=self.events,
            audit=self.audit,
            ipfs=self.ipfs,
        )
        self.badge_definitions = workflows.definitions
        self.awards = workflows.awards
        self.course_repo = workflows.course_repo
        self.badges = workflows.badges
        self.courses = workflows.courses
        self.credentials = BadgeCredentials(
            CredentialIssuer(
                load_or_create_signing_key(config.signing_key_path),
                base_url=config.public_url,
                territory_code=self.territory,
                territory_name=config.territory.name,
            ),
            self.awards,
            self.badge_definitions,
        )
        self.messenger = DirectMessenger(
            self.matrix, DirectRoomRepository(self.territory_db, self.territory)
        )
        self.expiry = ExpiryScheduler(
            db=self.territory_db,
            awards=self.awards,
            definitions=self.badge_definitions,
            badges=self.badges,
            messenger=self.messenger,
            reminder_lead_seconds=config.badges.reminder_lead_hours * 3600,
            interval_seconds=config.badges.expiry_check_seconds,
        )

        self.event_bus = EventBus(
            nats=self.nats,
            db=self.territory_db,
            outbox=self.outbox,
            consumed=self.consumed,
            publisher=self.events,
            metrics=self.event_metrics,
            responder=BadgeCheckResponder(self.nats, self.territory, self.badges.status),
            settings=ConsumerSettings(
                stream=nats.stream, max_deliver=nats.max_deliver, ack_wait=nats.ack_wait_seconds
            ),
            duplicate_window=nats.duplicate_window_seconds,
            max_age=nats.max_age_days * 86400,
        )
        self.event_bus.add_consumer(
            CourseBadgeAwarder(self.badges, config.bot_user_id).spec(self.territory)
        )
        self.event_bus.add_consumer(BadgeNotifier(self.messenger).spec(self.territory))
        self.gate = GateService(
            gates=GateRepository(self.territory_db, self.territory),
            awards=self.awards,
            definitions=self.badge_definitions,
            courses=self.course_repo,
            badge_checks=self.badge_checks,
            matrix=self.matrix,
            messenger=self.messenger,
            audit=self.audit,
            metrics=GateMetrics(self.metrics.registry),
            server_name=config.homeserver.domain,
            ghost_prefix=f"@{config.appservice.user_prefix}",
            cache_seconds=config.gate.decision_cache_seconds,
        )
        self.event_bus.add_consumer(self.gate.consumer(self.territory))

        # The forum, and its files on IPFS.
        self.forum = ForumRepository(self.territory_db, self.territory)
        self.media = MediaRepository(self.territory_db, self.territory)
        self.media_bridge = MediaBridge(
            db=self.territory_db,
            media=self.media,
            forum=self.forum,
            ipfs=self.ipfs,
            matrix_notice=self.messenger,
            events=self.events,
            matrix=self.matrix,
            max_bytes=config.media.max_bytes,
        )
        self.forum_service = ForumService(
            db=self.territory_db,
            forum=self.forum,
            matrix=self.matrix,
            events=self.events,
            audit=self.audit,
            server_name=config.homeserver.domain,
            alias_prefix=config.appservice.alias_prefix,
            ghost_prefix=f"@{config.appservice.user_prefix}",
            moderators=config.permissions.admins,
        )

        self.permissions = PermissionChecker(
            admins=config.permissions.admins,
            badge_issuers=config.permissions.badge_issuers,
            course_admins=config.permissions.course_admins,
            badge_admins=config.permissions.badge_admins,
            power_levels=self._power_levels,
            holds_badge=self.awards.holds,
        )
        self.router = CommandRouter(config.commands.prefix, self.permissions, self.metrics)
        self.router.register(HelpCommands(self.router))
        self.router.register(
            TerritoryCommands(self.territories, self.territory, config.bot_user_id)
        )
        self.router.register(
            BadgeCommands(
                self.badges, self.badge_checks, self.credentials, config.homeserver.domain
            )
        )
        self.router.register(CourseCommands(self.courses, self.matrix))
        self.router.register(GateCommands(self.gate))
        self.router.register(ForumCommands(self.forum_service, self.permissions))
        self.router.register(ModerationCommands(self.matrix, self.audit, self.events))

        self.queries = NamespaceQueries()
        self.queries.add_alias_resolver(self.forum_service.resolve_alias)
        self.dispatcher = Dispatcher(
            bot_user_id=config.bot_user_id,
            ghost_pattern=re.compile(user_namespace(config)),
            handlers=[
                BotInviteHandler(self.matrix, config.homeserver.domain, self.messenger),
                CommandMessageHandler(self.router, self.matrix),
                self.gate,
                ForumBridge(self.forum, self.forum_service, self.events, self.router),
                self.media_bridge,
            ],
            inbox=self.inbox,
            db=self.territory_db,
            state_store=self.matrix.state_store,
            metrics=self.metrics,
            max_concurrent=config.appservice.max_concurrent_events,
        )
        self.endpoints = HomeserverEndpoints(
            hs_token=self.hs_token,
            homeserver=config.homeserver.domain,
            allow_legacy_token=config.appservice.allow_legacy_access_token,
            inbox=self.inbox,
            dispatcher=self.dispatcher,
            metrics=self.metrics,
            query_user=self.queries.query_user,
            query_alias=self.queries.query_alias,
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
        self.web_app = web.Application(middlewares=[json_errors], client_max_size=50 * 1024**2)
        self.endpoints.add_routes(self.web_app)
        add_operational_routes(self.web_app, self.health, self._ready_state, self.metrics)
        add_badge_routes(self.web_app, self.credentials)
        ForumApi(
            self.forum,
            self.forum_service,
            TokenVerifier(config.homeserver.address, config.homeserver.domain),
            self.media,
        ).add_routes(self.web_app)
        add_media_routes(self.web_app, self.media, self.ipfs)
        if config.gate.module_token:
            add_gate_routes(self.web_app, self.gate, config.gate.module_token)

        self._migrated = False
        self._homeserver_connected = False
        self._exit = AsyncExitStack()

    async def _power_levels(self, room_id: RoomID) -> Any:
        return await self.matrix.effective_power_levels(room_id)

    def _ready_state(self) -> dict[str, Any]:
        return {
            "configuration_loaded": True,
            "database_migrations": "complete" if self._migrated else "pending",
            "homeserver_connected": self._homeserver_connected,
        }

    async def start(self) -> None:
        """Start in dependency order; on failure, stop what already started and re-raise."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self.config
        for database in {id(d): d for d in (self.global_db, self.territory_db)}.values():
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
                settings={
                    "data_residency": config.territory.data_residency,
                    "allow_cross_border": config.territory.allow_cross_border,
                },
            )
        )
        self._migrated = True

        for component in (self.nats, self.event_bus, self.ipfs, self.matrix):
            await component.start()
            self._exit.push_async_callback(component.stop)
        self._exit.push_async_callback(self.background.stop)

        runner = web.AppRunner(self.web_app, access_log=None)
        await runner.setup()
        self._exit.push_async_callback(runner.cleanup)
        site = web.TCPSite(runner, config.appservice.hostname, config.appservice.port)
        await site.start()
        log.info("Listening on %s:%d", config.appservice.hostname, config.appservice.port)

        await self.endpoints.recover()
        self.background.start(self._connect_homeserver(), name="homeserver-connect")
        self.background.start(self.expiry.run(), name="badge-expiry")
        self.background.start(self.media_bridge.run(), name="media-queue")

    async def _connect_homeserver(self) -> None:
        await self.matrix.connect_to_homeserver()
        self._homeserver_connected = True

    async def stop(self) -> None:
        await self._exit.aclose()
