"""Parse a message, find its command, check permissions, parse arguments, run, reply.

Every outcome is a reply: usage line for bad arguments, the missing permission for refusals, the
sentence of a domain refusal. A handler runs in a savepoint: a refusal rolls back everything it wrote
before the reply is recorded. An unexpected error propagates, so the whole event rolls back and is
retried; once it is given up the sender gets a reference number (``reply_given_up``). Text that is
not a command is ignored.
"""

from __future__ import annotations

import enum
import logging
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from mautrix.types import EventID, RoomID, UserID

from core.errors import DomainError, Forbidden
from core.html import code, escape

from .decorators import CommandSpec, spec_of
from .errors import UsageError
from .permissions import Permission, PermissionChecker

log = logging.getLogger("unityplan.commands")

Reply = Callable[[str], Awaitable[None]]
Atomic = Callable[[], AbstractAsyncContextManager[object]]
Handler = Callable[..., Awaitable[None]]


class Outcome(enum.Enum):
    NOT_A_COMMAND = "not_a_command"
    OK = "ok"
    USAGE = "usage"
    DENIED = "denied"
    REFUSED = "refused"  # a DomainError raised by the handler
    ERROR = "error"


@dataclass(frozen=True)
class CommandContext:
    sender: UserID
    room_id: RoomID
    event_id: EventID
    prefix: str
    reply: Reply
    # The event this command replies to (e.g. an uploaded file for !course import).
    reply_to: EventID | None = None


@dataclass(frozen=True)
class BoundCommand:
    spec: CommandSpec
    handler: Handler


class CommandMetrics:
    """What the router reports; the composition root passes Prometheus-backed counters."""

    def observe(self, command: str, outcome: Outcome, seconds: float) -> None:
        pass


class CommandRouter:
    def __init__(
        self,
        prefix: str,
        permissions: PermissionChecker,
        atomic: Atomic,
        metrics: CommandMetrics | None = None,
    ) -> None:
        self.atomic = atomic  # the territory database's transaction(): a savepoint in an event
        self.prefix = prefix
        self.permissions = permissions
        self.metrics = metrics or CommandMetrics()
        self._commands: dict[tuple[str, ...], BoundCommand] = {}
        self._start = re.compile(rf"^{re.escape(prefix)}[A-Za-z]")

    # --- registration -------------------------------------------------------------------------

    def register(self, handler_object: object) -> None:
        """Register every decorated method of ``handler_object``."""
        found = 0
        for name in dir(type(handler_object)):
            spec = spec_of(getattr(type(handler_object), name))
            if spec is None:
                continue
            if spec.path in self._commands:
                raise ValueError(f"command {spec.name!r} registered twice")
            self._commands[spec.path] = BoundCommand(spec, getattr(handler_object, name))
            found += 1
        if not found:
            raise ValueError(f"{type(handler_object).__name__} declares no commands")

    @property
    def commands(self) -> list[CommandSpec]:
        return [bound.spec for _, bound in sorted(self._commands.items())]

    def find(self, words: list[str]) -> CommandSpec | None:
        bound = self._commands.get(tuple(w.lower() for w in words))
        return bound.spec if bound else None

    def group(self, name: str) -> list[CommandSpec]:
        return [spec for spec in self.commands if spec.path[0] == name.lower()]

    async def may_run(self, spec: CommandSpec, sender: UserID, room_id: RoomID) -> bool:
        return not await self.permissions.missing(spec.permissions, sender, room_id)

    # --- handling -----------------------------------------------------------------------------

    def is_command(self, body: str) -> bool:
        return bool(self._start.match(body))

    async def handle(
        self,
        sender: UserID,
        room_id: RoomID,
        event_id: EventID,
        body: str,
        reply: Reply,
        reply_to: EventID | None = None,
    ) -> Outcome:
        if not self.is_command(body):
            return Outcome.NOT_A_COMMAND
        started = time.monotonic()
        ctx = CommandContext(sender, room_id, event_id, self.prefix, reply, reply_to)
        if "\x00" in body:  # PostgreSQL text cannot hold it, and no argument needs it
            await reply("A command cannot contain a NUL character.")
            self.metrics.observe("unknown", Outcome.USAGE, time.monotonic() - started)
            return Outcome.USAGE
        text = body[len(self.prefix) :].strip()
        bound, rest = self._resolve(text)
        words = text.split()
        if bound:
            name = bound.spec.name
        elif words and self.group(words[0]):
            name = words[0].lower()  # a group without a (known) subcommand
        else:
            name = "unknown"
        try:
            if bound is None:
                outcome = await self._unknown(ctx, text)
            else:
                outcome = await self._run(ctx, bound, rest)
        except Exception:
            self.metrics.observe(name, Outcome.ERROR, time.monotonic() - started)
            raise  # rolled back and retried by the dispatcher; reply_given_up answers at the end
        self.metrics.observe(name, outcome, time.monotonic() - started)
        return outcome

    async def reply_given_up(self, reply: Reply, ref: str) -> None:
        await reply(
            f"Something went wrong (ref: <code>{escape(ref)}</code>). "
            "A territory admin can find the details in the log."
        )

    def _resolve(self, text: str) -> tuple[BoundCommand | None, str]:
        words = text.split()
        for depth in range(min(len(words), 3), 0, -1):
            bound = self._commands.get(tuple(w.lower() for w in words[:depth]))
            if bound is not None:
                parts = text.split(maxsplit=depth)
                return bound, parts[depth] if len(parts) > depth else ""
        return None, text

    async def _unknown(self, ctx: CommandContext, text: str) -> Outcome:
        words = text.split()
        group = self.group(words[0]) if words else []
        if group:
            lines = "".join(f"<li>{code(spec.usage(self.prefix))}</li>" for spec in group)
            what = "needs a subcommand" if len(words) == 1 else "has no such subcommand"
            await ctx.reply(
                f"{code(self.prefix + words[0].lower())} {what}. Usage:<ul>{lines}</ul>"
            )
        else:
            await ctx.reply(
                f"Unknown command {code(self.prefix + (words[0] if words else ''))}. "
                f"Send {code(self.prefix + 'help')} to see the commands you can use."
            )
        return Outcome.USAGE

    async def _run(self, ctx: CommandContext, bound: BoundCommand, rest: str) -> Outcome:
        spec = bound.spec
        missing = await self.permissions.missing(spec.permissions, ctx.sender, ctx.room_id)
        if missing:
            await ctx.reply(_denied(spec, missing, self.prefix))
            return Outcome.DENIED
        try:
            kwargs = parse_arguments(spec, rest)
        except UsageError as exc:
            await ctx.reply(_usage(spec, self.prefix, str(exc)))
            return Outcome.USAGE
        try:
            async with self.atomic():  # a savepoint: a refusal undoes the handler's writes
                await bound.handler(ctx, **kwargs)
        except UsageError as exc:
            await ctx.reply(_usage(spec, self.prefix, str(exc)))
            return Outcome.USAGE
        except Forbidden as exc:
            await ctx.reply(escape(str(exc)))
            return Outcome.DENIED
        except DomainError as exc:
            await ctx.reply(escape(str(exc)))
            return Outcome.REFUSED
        return Outcome.OK


def parse_arguments(spec: CommandSpec, text: str) -> dict[str, Any]:
    """Turn the text after the command's words into keyword arguments, or raise UsageError."""
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"could not read the arguments ({exc})") from exc
    options = {o.flag: o for o in spec.options}
    values: dict[str, Any] = {o.dest: (False if o.parser is None else None) for o in spec.options}
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and len(word) > 2:
            flag, _, inline = word.partition("=")
            opt = options.get(flag)
            if opt is None:
                raise UsageError(f"unknown option {flag}")
            if opt.parser is None:
                values[opt.dest] = True
            else:
                if not inline:
                    i += 1
                    if i >= len(words):
                        raise UsageError(f"{flag} needs a value ({opt.metavar})")
                    inline = words[i]
                values[opt.dest] = _convert(opt.parser, inline, flag)
        else:
            positional.append(word)
        i += 1
    for arg in spec.arguments:
        if arg.rest:
            joined = " ".join(positional)
            positional = []
            if not joined and arg.required:
                raise UsageError(f"{arg.usage()} is missing")
            values[arg.name] = _convert(arg.parser, joined, arg.usage()) if joined else None
        elif positional:
            values[arg.name] = _convert(arg.parser, positional.pop(0), arg.usage())
        elif arg.required:
            raise UsageError(f"{arg.usage()} is missing")
        else:
            values[arg.name] = None
    if positional:
        raise UsageError(f"unexpected {' '.join(positional)!r}")
    return values


def _convert(parser: Callable[[str], Any], raw: str, label: str) -> Any:
    try:
        return parser(raw)
    except (ValueError, DomainError) as exc:
        detail = str(exc) or "invalid value"
        raise UsageError(f"{label}: {detail}") from exc


def _usage(spec: CommandSpec, prefix: str, problem: str) -> str:
    return f"Usage: {code(spec.usage(prefix))}<br>{escape(spec.help)}" + (
        f"<br><em>{escape(problem)}</em>" if problem else ""
    )


def _denied(spec: CommandSpec, missing: list[Permission], prefix: str) -> str:
    names = ", ".join(p.value for p in missing)
    return f"You may not run {code(prefix + spec.name)}: it needs the {escape(names)} permission."
