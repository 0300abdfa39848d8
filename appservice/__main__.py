"""The `unityplan` command line.

unityplan [-c CONFIG] run
unityplan dev [--data-dir DIR]
unityplan [-c CONFIG] registration generate [-o FILE] [--rotate]
unityplan [-c CONFIG] registration check [-r FILE]
unityplan [-c CONFIG] db migrate
unityplan [-c CONFIG] course import FILE
unityplan [-c CONFIG] territory info [CODE] | list | add CODE --name … --server-name … --homeserver URL --db DSN
                                  [--data-residency R] [--no-cross-border] | settings CODE key=value…
unityplan [-c CONFIG] territory backup CODE --to FILE | restore FILE --db DSN
unityplan docs commands [--write FILE | --check FILE]
unityplan [-c CONFIG] audit [--user @u:server] [--action A] [--limit N] [--json]
unityplan [-c CONFIG] deadletters list [--limit N] [--json] | retry ID... | drop ID...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import Conflict, DomainError, Forbidden, NotFound, Refused
from db.database import DatabaseUnavailable
from db.migrations import DatabaseTooNew, MigrationNeedsAdmin
from db.territory import territory_code

from .config import Config, ConfigError, LoggingConfig, example_config_text, load_config
from .logs import setup_logging
from .stack.process import StackError

log = logging.getLogger("unityplan.cli")

EXIT_CONFIG = 2
EXIT_REFUSED = 2  # a refusal of the domain: the sentence says why
EXIT_STARTUP = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="unityplan", description="UnityPlan Matrix appservice")
    parser.add_argument(
        "-c",
        "--config",
        default="config.yaml",
        type=Path,
        help="the appservice config file (default: config.yaml)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("run", help="run the appservice for one territory")

    dev = commands.add_parser(
        "dev",
        help="run the whole platform locally (PostgreSQL, NATS, IPFS, Synapse, the appservice)",
    )
    dev.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("UNITYPLAN_DEV_DIR", ".unityplan/dev")),
        help="where the stack keeps its data (default .unityplan/dev or $UNITYPLAN_DEV_DIR)",
    )
    dev.add_argument(
        "--territories",
        default="dk",
        help="comma-separated territory codes (default dk); with two or more, their homeservers "
        "federate over TLS on loopback, e.g. --territories dk,ca",
    )
    dev.add_argument(
        "--second-db",
        action="store_true",
        help="also start an empty second PostgreSQL server to move a territory to "
        "(`unityplan territory migrate`; its admin is second_database_admin_url in stack.json)",
    )

    registration = commands.add_parser("registration", help="the registration file for Synapse")
    reg = registration.add_subparsers(dest="action", required=True, metavar="ACTION")
    generate = reg.add_parser("generate", help="write the registration (keeps tokens)")
    generate.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="where to write it (default: appservice.registration of the config)",
    )
    generate.add_argument("--rotate", action="store_true", help="make new as/hs tokens")
    check = reg.add_parser("check", help="compare a registration with the config")
    check.add_argument("-r", "--registration", type=Path, default=None)

    db = commands.add_parser("db", help="database maintenance")
    db.add_subparsers(dest="action", required=True, metavar="ACTION").add_parser(
        "migrate", help="apply migrations to the global, public and territory schemas"
    )

    course = commands.add_parser("course", help="course definitions")
    course_actions = course.add_subparsers(dest="action", required=True, metavar="ACTION")
    course_import = course_actions.add_parser(
        "import", help="import a course YAML file (a new version of a course keeps enrolments)"
    )
    course_import.add_argument("file", type=Path, help="the course definition (YAML)")

    dead = commands.add_parser(
        "deadletters", help="events and effects that were given up: look, retry, drop"
    )
    dead_actions = dead.add_subparsers(dest="action", required=True, metavar="ACTION")
    dead_list = dead_actions.add_parser("list", help="the newest dead letters, newest first")
    dead_list.add_argument("--limit", type=int, default=50)
    dead_list.add_argument("--json", action="store_true", help="one JSON object per line")
    for name, what in (
        ("retry", "queue it again (the running appservice takes it within a second)"),
        ("drop", "settle it for good without doing it"),
    ):
        action = dead_actions.add_parser(name, help=what)
        action.add_argument("ids", nargs="+", metavar="ID", help="effect:N or event:$id")

    docs = commands.add_parser("docs", help="generated documentation")
    docs_what = docs.add_subparsers(dest="action", required=True, metavar="WHAT")
    docs_commands = docs_what.add_parser(
        "commands", help="the command reference of docs/commands.md, from the command definitions"
    )
    docs_commands.add_argument(
        "--write", type=Path, default=None, metavar="FILE", help="replace the block in FILE"
    )
    docs_commands.add_argument(
        "--check", type=Path, default=None, metavar="FILE", help="exit 1 when FILE's is stale"
    )

    audit = commands.add_parser(
        "audit", help="this territory's audit log, newest first (reading it is recorded too)"
    )
    audit.add_argument("--user", default=None, help="only entries by or about this Matrix ID")
    audit.add_argument(
        "--action",
        default=None,
        help="only this action, or a family ending in '.' (personal_data.)",
    )
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--json", action="store_true", help="one JSON object per line")

    territory = commands.add_parser("territory", help="the territory registry")
    territory_actions = territory.add_subparsers(dest="action", required=True, metavar="ACTION")
    info = territory_actions.add_parser("info", help="a territory's registry entry (default: this)")
    info.add_argument("code", nargs="?", default=None)
    territory_actions.add_parser("list", help="every territory in the registry")
    add = territory_actions.add_parser("add", help="register a territory")
    add.add_argument("code")
    add.add_argument("--name", required=True)
    add.add_argument("--server-name", required=True)
    add.add_argument("--homeserver", required=True, help="its homeserver's client API URL")
    add.add_argument("--db", required=True, metavar="DSN", help="its database")
    add.add_argument("--data-residency", default="")
    add.add_argument("--no-cross-border", action="store_true")
    settings = territory_actions.add_parser("settings", help="change a territory's settings")
    settings.add_argument("code")
    settings.add_argument("values", nargs="+", metavar="key=value")
    migrate = territory_actions.add_parser(
        "migrate",
        help="move a running territory's schema to another PostgreSQL server (logical replication)",
    )
    migrate.add_argument("code")
    migrate.add_argument(
        "--to", required=True, metavar="DSN", help="the admin of the server it moves to"
    )
    migrate.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to copy, and to catch up (120)"
    )
    backup = territory_actions.add_parser(
        "backup", help="write a backup of a territory (its schema and its shared rows) to one file"
    )
    backup.add_argument("code")
    backup.add_argument("--to", required=True, type=Path, metavar="FILE", help="a tar file")
    restore = territory_actions.add_parser(
        "restore", help="restore a backup into an empty PostgreSQL server and check it"
    )
    restore.add_argument("file", type=Path, metavar="FILE")
    restore.add_argument(
        "--db", required=True, metavar="DSN", help="the admin of the server to restore into"
    )
    return parser


def _load(path: Path) -> Config:
    return load_config(path)


def _run_until_signal(
    start: Callable[[], Awaitable[None]], stop: Callable[[], Awaitable[None]]
) -> int:
    async def main() -> int:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        try:
            await start()
        except Exception as exc:
            # Whatever started before the failure (a local stack's servers) must not outlive us.
            try:
                await stop()
            except Exception:
                log.exception("Stopping after the failed start-up failed too")
            if isinstance(exc, ConfigError):
                print(f"unityplan: {exc}", file=sys.stderr)
                return EXIT_CONFIG
            expected = isinstance(
                exc, StackError | DatabaseUnavailable | DatabaseTooNew | MigrationNeedsAdmin
            )
            log.critical("Start-up failed: %s", exc, exc_info=not expected)
            return EXIT_STARTUP
        await stopping.wait()
        log.info("Stopping")
        await stop()
        return 0

    return asyncio.run(main())


def cmd_run(config: Config) -> int:
    from .app import Platform, territory_home

    platform: Platform | None = None

    async def start() -> None:
        nonlocal platform
        # Where the registry says this territory's schema is (it may have been moved).
        platform = Platform(await territory_home(config))
        # Moved while running: stop; the supervisor (or restart policy) starts us there.
        platform.on_moved = lambda: os.kill(os.getpid(), signal.SIGTERM)
        await platform.start()

    async def stop() -> None:
        if platform is not None:
            await platform.stop()

    return _run_until_signal(start, stop)


def cmd_dev(args: argparse.Namespace) -> int:
    from db.territory import InvalidTerritoryCode

    from .dev import DevStack

    setup_logging(LoggingConfig())
    territories = [t.strip() for t in args.territories.split(",") if t.strip()]
    try:
        codes = [territory_code(t) for t in territories]
    except InvalidTerritoryCode as exc:
        print(f"unityplan dev: {exc}.", file=sys.stderr)
        return EXIT_CONFIG
    if not codes or len(set(codes)) != len(codes):
        print("unityplan dev: name each territory once, e.g. --territories dk,ca.", file=sys.stderr)
        return EXIT_CONFIG
    dev = DevStack(args.data_dir, [str(code) for code in codes], second_db=args.second_db)
    return _run_until_signal(dev.start, dev.stop)


def cmd_registration(args: argparse.Namespace, config: Config) -> int:
    from registration.generate import generate
    from registration.validate import differences

    if args.action == "generate":
        output = args.output or config.registration_path
        existed = output.exists()
        generate(config.registration_spec(), output, rotate=args.rotate)
        kept = "with new tokens" if args.rotate or not existed else "keeping its tokens"
        print(f"Wrote {output} ({kept}). Add it to app_service_config_files in homeserver.yaml.")
        return 0
    path = args.registration or config.registration_path
    if not path.is_file():
        print(
            f"unityplan: {path} does not exist; create it with `unityplan registration generate`.",
            file=sys.stderr,
        )
        return 1
    problems = differences(config.registration_spec(), path)
    if problems:
        print(f"{path} does not match {config.path}:", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    print(f"{path} matches {config.path}.")
    return 0


def cmd_db_migrate(config: Config) -> int:
    from db.setup import migrate_all

    from .app import opened_databases, provisioned

    async def main() -> None:
        # With database.admin_url, the admin role migrates the shared schemas and provisions the
        # territory's role first; the territory schema is then migrated by its owner, that role.
        shared = await provisioned(config) if config.database.admin_url else {}
        async with opened_databases(config, migrate=False) as dbs:
            applied = await migrate_all(
                dbs.global_db, dbs.territory_db, territory_code(config.territory.code)
            )
        for schema, versions in shared.items():
            applied[schema] = versions + applied.get(schema, [])
        for schema, versions in applied.items():
            print(f"{schema}: " + (f"applied {versions}" if versions else "up to date"))

    asyncio.run(main())
    return 0


def cmd_course_import(config: Config, file: Path) -> int:
    import getpass

    from bridges.media.ipfs_client import IpfsClient
    from db.repositories.audit import AuditLog
    from workflows.course_file import CourseFileError, parse_course_file

    from .app import build_course_services, opened_databases, outbox_emitter

    try:
        spec = parse_course_file(file.read_bytes())
    except OSError as exc:
        raise Refused(f"cannot read {file}: {exc.strerror}.") from exc
    except CourseFileError as exc:
        raise Refused(f"{file} is not a valid course: {exc}.") from exc

    async def main() -> int:
        code = territory_code(config.territory.code)
        ipfs = IpfsClient(config.ipfs.api_url)  # materials are pinned there
        await ipfs.start()
        try:
            async with opened_databases(config, migrate=True) as dbs:
                services = build_course_services(
                    config,
                    dbs,
                    events=outbox_emitter(dbs, code),
                    audit=AuditLog(dbs.global_db, code),
                    content=ipfs,
                )
                outcome = await services.courses.import_course(
                    spec,
                    actor=f"cli:{getpass.getuser()}",
                    source=f"file:{file.resolve()}",
                    base_dir=file.resolve().parent,
                    show=True,
                )
        finally:
            await ipfs.stop()
        badge = " (badge created)" if outcome.badge_created else ""
        print(
            f"Imported {spec.slug} version {spec.version}: {len(spec.lessons)} lessons, "
            f"{len(spec.quiz)} questions, awards {spec.awards}{badge}."
        )
        return 0

    return asyncio.run(main())


TERRITORY_SETTINGS: dict[str, Any] = {
    "data_residency": str,
    "allow_cross_border": bool,
    "audit_retention_days": int,
    "comment_retention_days": int,
    "answer_retention_days": int,
    "erasure_comments": ("remove", "keep"),
}


def _territory_json(territory: Any) -> dict[str, Any]:
    return {
        "code": territory.code,
        "name": territory.name,
        "server_name": territory.server_name,
        "homeserver_url": territory.homeserver_url,
        "database_dsn": territory.database_dsn,
        "settings": territory.settings,
        "public_key": territory.public_key,
    }


def _setting(raw: str) -> tuple[str, Any]:
    key, sep, value = raw.partition("=")
    if not sep or key not in TERRITORY_SETTINGS:
        raise Refused(f"{raw!r} is not key=value with a key of {', '.join(TERRITORY_SETTINGS)}.")
    kind = TERRITORY_SETTINGS[key]
    if kind is bool:
        if value.lower() not in ("true", "false", "yes", "no"):
            raise Refused(f"{key} is true or false, not {value!r}.")
        return key, value.lower() in ("true", "yes")
    if kind is int:
        if not value.isdigit():
            raise Refused(f"{key} is a number of days (0 keeps for good), not {value!r}.")
        return key, int(value)
    if isinstance(kind, tuple) and value not in kind:
        raise Refused(f"{key} is one of {', '.join(kind)}, not {value!r}.")
    return key, value


def cmd_territory(config: Config, args: argparse.Namespace) -> int:
    import asyncpg

    from db.database import Database
    from db.repositories.territories import Territory, TerritoryRepository
    from db.setup import on_same_server, provision_territory

    from .app import opened_databases, outbox_emitter

    admin_url = config.database.admin_url
    only_own = (
        "The database role of this config may change only its own territory's registry row; "
        "set database.admin_url (UNITYPLAN_DATABASE_ADMIN_URL) to {what}."
    )

    if args.action == "migrate":
        return cmd_territory_migrate(config, args)
    if args.action in ("backup", "restore"):
        return cmd_territory_backup(config, args)

    async def main() -> int:
        async with AsyncExitStack() as stack:
            dbs = await stack.enter_async_context(
                opened_databases(config, migrate=False, max_size=1)
            )
            own = territory_code(config.territory.code)
            writer = dbs.global_db
            # Another territory's row is the admin's to write (row-level security refuses it to
            # this territory's role); the own row is written by the own role, with its event.
            if admin_url and args.action in ("add", "settings") and args.code != own:
                writer = Database(admin_url, name="admin", min_size=0, max_size=1)
                await writer.start()
                stack.push_async_callback(writer.stop)
            registry = TerritoryRepository(writer)
            if args.action == "list":
                for entry in await registry.all():
                    print(json.dumps(_territory_json(entry)))
                return 0
            if args.action == "info":
                code = territory_code(args.code or config.territory.code)
                territory = await registry.get(code)
                if territory is None:
                    raise NotFound(
                        f"Territory {code} is not registered yet; it is registered when its "
                        "appservice starts (or with `unityplan territory add`)."
                    )
                print(json.dumps(_territory_json(territory), indent=2))
                return 0
            code = territory_code(args.code)
            if args.action == "add":
                if await registry.get(code) is not None:
                    raise Conflict(f"Territory {code} is registered already.")
                if await registry.by_server_name(args.server_name) is not None:
                    raise Conflict(f"{args.server_name} is another territory's server already.")
                try:
                    await registry.upsert(
                        Territory(
                            code=code,
                            name=args.name,
                            server_name=args.server_name,
                            homeserver_url=args.homeserver,
                            database_dsn=args.db,
                            settings={
                                "data_residency": args.data_residency,
                                "allow_cross_border": not args.no_cross_border,
                            },
                        )
                    )
                except asyncpg.InsufficientPrivilegeError as exc:
                    raise Forbidden(only_own.format(what="register another territory")) from exc
                role = ""
                if admin_url:
                    await provision_territory(
                        admin_url, code, args.db, same_server=on_same_server(admin_url, args.db)
                    )
                    role = f" with its database role {urlsplit(args.db).username}"
                print(
                    f"Registered {code} ({args.server_name}){role}. "
                    "Its appservice adds its key at start."
                )
                return 0
            territory = await registry.get(code)
            if territory is None:
                raise NotFound(f"Territory {code} is not registered.")
            changes = dict(_setting(raw) for raw in args.values)
            async with dbs.global_db.transaction():
                # The change and its event commit together (the outbox is this territory's).
                changed = await registry.set_settings(code, {**territory.settings, **changes})
                if not changed:
                    raise Forbidden(only_own.format(what=f"change {code}'s settings"))
                # Every process refreshes what it caches of the registry on this event.
                events = outbox_emitter(dbs, own)
                await events.emit(
                    "territory.settings_changed", {"territory": code, "changes": changes}
                )
            print(f"{code}: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
            return 0
        return 0

    return asyncio.run(main())


def cmd_territory_migrate(config: Config, args: argparse.Namespace) -> int:
    """Move this territory's schema to another server while its appservice runs."""
    from bridges.events.publisher import EventPublisher
    from db import relocation
    from db.database import Database, describe_dsn
    from db.repositories.outbox import OutboxRepository
    from db.repositories.territories import TerritoryRepository, dsn_without_password

    code = territory_code(args.code)
    if code != config.territory.code:
        raise Refused(
            f"Run it with territory {code}'s own config (its role and password move with it)."
        )
    admin_url = config.database.admin_url
    if not admin_url:
        raise Refused(
            "Moving a territory needs the admin of the server it is on: set database.admin_url "
            "(UNITYPLAN_DATABASE_ADMIN_URL)."
        )
    move = relocation.Relocation(
        code=code,
        source_admin=admin_url,
        target_admin=args.to,
        role_dsn=config.database.territory_url or config.database.url,
    )

    def progress(line: str) -> None:
        print(line, flush=True)

    async def main() -> int:
        try:
            await relocation.check(move)  # changes nothing
        except relocation.RelocationRefused as exc:
            raise Refused(str(exc)) from exc
        try:
            await relocation.prepare(move, progress)
            await relocation.wait_copied(move, progress, args.timeout)
            await relocation.cut_over(move, progress, args.timeout)
        except BaseException as exc:
            progress("Undoing: the territory stays where it was")
            await relocation.abandon(move)
            if isinstance(exc, relocation.RelocationRefused):
                raise Refused(str(exc)) from exc
            raise
        target_dsn = move.target_role_dsn()
        async with AsyncExitStack() as stack:
            registry_db = Database(admin_url, name="admin", min_size=0, max_size=1)
            await registry_db.start()
            stack.push_async_callback(registry_db.stop)
            await TerritoryRepository(registry_db).set_database_dsn(code, target_dsn)
            progress(f"The registry names the new server; {code}'s appservice moves there")
            await relocation.finish(move, progress)
            # From the territory's new home: its relay publishes it once the appservice is there.
            home = Database(target_dsn, name=f"territory_{code}", min_size=0, max_size=1)
            await home.start()
            stack.push_async_callback(home.stop)
            events = EventPublisher(OutboxRepository(home, code), code)
            await events.emit(
                "territory.migrated",
                {"territory": code, "database_dsn": dsn_without_password(target_dsn)},
                actor=f"cli:{os.environ.get('USER', 'operator')}",
            )
        progress(f"Moved {code} to {describe_dsn(target_dsn)}.")
        return 0

    return asyncio.run(main())


def cmd_territory_backup(config: Config, args: argparse.Namespace) -> int:
    """`backup`: this territory's schema and shared rows to one file, as its own role.
    `restore`: such a file into an empty server (its admin), for this config's role."""
    import asyncpg

    from db import backup

    from .app import territory_home

    def progress(line: str) -> None:
        print(line, flush=True)

    async def main() -> None:
        own = territory_code(config.territory.code)
        if args.action == "restore":
            await backup.restore(args.file, args.db, config.database.url, progress, expect=own)
            return
        code = territory_code(args.code)
        if code != own:
            raise Refused(
                f"Back up territory {code} with its own config (its role reads its rows)."
            )
        db = (await territory_home(config)).database  # where the registry says its schema is
        await backup.backup(code, db.territory_url or db.url, args.to, progress, global_dsn=db.url)

    try:
        asyncio.run(main())
    except backup.BackupRefused as exc:
        raise Refused(str(exc)) from exc
    except (backup.BackupFailed, OSError, asyncpg.PostgresError) as exc:
        print(f"unityplan: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_audit(config: Config, args: argparse.Namespace) -> int:
    from db.repositories.audit import AuditLog

    from .app import opened_databases

    async def main() -> int:
        code = territory_code(config.territory.code)
        async with opened_databases(config, migrate=False) as dbs:
            audit = AuditLog(dbs.global_db, code)
            entries = await audit.search(about=args.user, action=args.action, limit=args.limit)
            # The log names members: reading it is an access like any other.
            await audit.record(
                f"cli:{os.environ.get('USER', 'operator')}",
                "audit.viewed",
                target=args.user,
                details={"entries": len(entries), "via": "cli", "action": args.action},
            )
        for e in entries:
            if args.json:
                print(
                    json.dumps(
                        {
                            "id": e.id,
                            "occurred_at": e.occurred_at.isoformat(),
                            "actor": e.actor,
                            "action": e.action,
                            "target": e.target,
                            "room_id": e.room_id,
                            "details": e.details,
                        }
                    )
                )
            else:
                target = f" -> {e.target}" if e.target else ""
                room = f" in {e.room_id}" if e.room_id else ""
                print(f"{e.occurred_at:%Y-%m-%d %H:%M:%S} {e.action} by {e.actor}{target}{room}")
        if not entries and not args.json:
            print("No audit log entries match.")
        return 0

    return asyncio.run(main())


def cmd_deadletters(config: Config, args: argparse.Namespace) -> int:
    from db.repositories.effects import EffectRepository
    from db.repositories.transactions import TransactionRepository

    from .app import opened_databases

    async def main() -> int:
        code = territory_code(config.territory.code)
        async with opened_databases(config, migrate=False) as dbs:
            effects = EffectRepository(dbs.territory_db, code)
            inbox = TransactionRepository(dbs.territory_db, code)
            if args.action == "list":
                rows: list[dict[str, Any]] = [
                    {
                        "id": f"effect:{e.id}",
                        "kind": e.kind,
                        "room": e.room_key,
                        "attempts": e.attempts,
                        "error": e.last_error,
                        "created_at": e.created_at.isoformat(),
                    }
                    for e in await effects.dead_letters(args.limit)
                ] + [
                    {
                        "id": f"event:{event.event_id}",
                        "kind": str(event.event.get("type")),
                        "room": event.room_id,
                        "attempts": event.attempts,
                        "error": error,
                        "created_at": None,
                    }
                    for event, error in await inbox.dead_letters(args.limit)
                ]
                if args.json:
                    for row in rows:
                        print(json.dumps(row))
                elif not rows:
                    print("No dead letters.")
                else:
                    for row in rows:
                        print(
                            f"{row['id']}  {row['kind']}  {row['room']}  attempts={row['attempts']}"
                        )
                        print(f"    {row['error']}")
                return 0
            missing = []
            for ident in args.ids:
                kind, _, key = ident.partition(":")
                if kind == "effect" and key.isdigit():
                    repo_call = effects.revive if args.action == "retry" else effects.drop
                    ok = await repo_call(int(key))
                elif kind == "event" and key:
                    inbox_call = inbox.revive if args.action == "retry" else inbox.drop
                    ok = await inbox_call(key)
                else:
                    raise Refused(f"{ident} is not an id like effect:12 or event:$abc.")
                if not ok:
                    missing.append(ident)
            if missing:
                raise NotFound(f"No dead letter {', '.join(missing)}.")
            done = "queued again" if args.action == "retry" else "dropped"
            print(f"{len(args.ids)} {done}.")
            return 0

    return asyncio.run(main())


def cmd_docs_commands(args: argparse.Namespace) -> int:
    """Print the generated block; or write it into a file; or say whether a file's is current."""
    from commands.reference import reference, replaced

    target: Path | None = args.write or args.check
    if target is None:
        print(reference())
        return 0
    current = target.read_text("utf-8")
    fresh = replaced(current)
    if args.check is not None:
        if fresh != current:
            print(
                f"unityplan: {target} is stale; run `unityplan docs commands --write {target}`.",
                file=sys.stderr,
            )
            return 1
        print(f"{target} is current.")
        return 0
    target.write_text(fresh, "utf-8")
    print(f"Wrote the command reference into {target}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "dev":
        return cmd_dev(args)
    if args.command == "docs":
        return cmd_docs_commands(args)
    if args.command == "run" and not args.config.exists():
        args.config.write_text(example_config_text())
        print(
            f"unityplan: {args.config} did not exist; wrote the example config there. Edit it, "
            "then run `unityplan registration generate` and `unityplan run`.",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    try:
        config = _load(args.config)
    except ConfigError as exc:
        print(f"unityplan: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    setup_logging(config.logging)
    if args.command == "run":
        return cmd_run(config)
    if args.command == "registration":
        return cmd_registration(args, config)
    try:
        if args.command == "db":
            return cmd_db_migrate(config)
        if args.command == "course":
            return cmd_course_import(config, args.file)
        if args.command == "deadletters":
            return cmd_deadletters(config, args)
        if args.command == "audit":
            return cmd_audit(config, args)
        return cmd_territory(config, args)
    except DomainError as exc:
        # The one place the CLI says a refusal: its sentence, exit code 2.
        print(f"unityplan: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except (DatabaseUnavailable, DatabaseTooNew, MigrationNeedsAdmin) as exc:
        print(f"unityplan: {exc}", file=sys.stderr)
        return EXIT_STARTUP


if __name__ == "__main__":
    sys.exit(main())
