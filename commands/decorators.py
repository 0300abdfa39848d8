"""Declaring commands: path, arguments, options and who may run them, on the handler method.

    @command("badge award", help="Award a badge to a member")
    @requires(Permission.BADGE_ISSUER)
    @argument("user", parser=user_id)
    @argument("badge", parser=slug)
    @option("--expires", parser=iso_date, metavar="YYYY-MM-DD")
    async def award(self, ctx, user, badge, expires=None): ...

Decorators only attach a CommandSpec to the function; nothing is registered until the composition
root hands the handler object to ``CommandRouter.register``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .permissions import Permission

F = TypeVar("F", bound=Callable[..., Any])
Parser = Callable[[str], Any]

SPEC_ATTR = "__unityplan_command__"
PENDING_ATTR = "__unityplan_pending__"


@dataclass(frozen=True)
class ArgumentSpec:
    name: str
    parser: Parser = str
    required: bool = True
    # Takes every remaining word (joined by spaces), like "reason..." or "title...".
    rest: bool = False
    metavar: str | None = None

    def usage(self) -> str:
        label = self.metavar or (f"<{self.name}...>" if self.rest else f"<{self.name}>")
        return label if self.required else f"[{label}]"


@dataclass(frozen=True)
class OptionSpec:
    flag: str  # "--valid-days"
    parser: Parser | None = None  # None: a switch without a value
    metavar: str = "VALUE"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")

    def usage(self) -> str:
        return f"[{self.flag}]" if self.parser is None else f"[{self.flag} {self.metavar}]"


@dataclass(frozen=True)
class CommandSpec:
    path: tuple[str, ...]
    help: str
    arguments: tuple[ArgumentSpec, ...] = ()
    options: tuple[OptionSpec, ...] = ()
    permissions: tuple[Permission, ...] = ()

    @property
    def name(self) -> str:
        return " ".join(self.path)

    def usage(self, prefix: str) -> str:
        parts = [f"{prefix}{self.name}"]
        parts += [a.usage() for a in self.arguments]
        parts += [o.usage() for o in self.options]
        return " ".join(parts)


@dataclass
class _Pending:
    arguments: list[ArgumentSpec] = field(default_factory=list)
    options: list[OptionSpec] = field(default_factory=list)
    permissions: list[Permission] = field(default_factory=list)


def _pending(func: Callable[..., Any]) -> _Pending:
    pending = getattr(func, PENDING_ATTR, None)
    if pending is None:
        pending = _Pending()
        setattr(func, PENDING_ATTR, pending)
    return pending


def command(path: str, *, help: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        pending = _pending(func)
        spec = CommandSpec(
            path=tuple(path.split()),
            help=help,
            arguments=tuple(pending.arguments),
            options=tuple(pending.options),
            permissions=tuple(pending.permissions),
        )
        rest = [a for a in spec.arguments if a.rest]
        if (rest and spec.arguments[-1] is not rest[0]) or len(rest) > 1:
            raise TypeError(f"{path}: only the last argument may take the rest of the line")
        setattr(func, SPEC_ATTR, spec)
        return func

    return decorate


def argument(
    name: str,
    *,
    parser: Parser = str,
    required: bool = True,
    rest: bool = False,
    metavar: str | None = None,
) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        # Decorators run bottom-up: prepend so the arguments read top-down.
        _pending(func).arguments.insert(0, ArgumentSpec(name, parser, required, rest, metavar))
        return func

    return decorate


def option(flag: str, *, parser: Parser | None = None, metavar: str = "VALUE") -> Callable[[F], F]:
    def decorate(func: F) -> F:
        _pending(func).options.insert(0, OptionSpec(flag, parser, metavar))
        return func

    return decorate


def requires(*permissions: Permission) -> Callable[[F], F]:
    """The sender needs every one of these; otherwise the reply names the missing ones."""

    def decorate(func: F) -> F:
        _pending(func).permissions[:0] = permissions
        return func

    return decorate


def spec_of(func: Callable[..., Any]) -> CommandSpec | None:
    return getattr(func, SPEC_ATTR, None)
