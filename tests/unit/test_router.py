"""The command router on its own: parsing, usage lines, permissions, errors, and a property test."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mautrix.types import EventID, PowerLevelStateEventContent, RoomID, UserID

from commands.decorators import argument, command, option, requires
from commands.help import HelpCommands
from commands.permissions import Permission, PermissionChecker
from commands.router import CommandContext, CommandRouter, Outcome, parse_arguments
from core.errors import Refused

ROOM = RoomID("!room:dk.example")
MOD = UserID("@mod:dk.example")
ISSUER = UserID("@issuer:dk.example")
MEMBER = UserID("@member:dk.example")


def iso_date(value: str) -> dt.date:
    return dt.date.fromisoformat(value)


class Sample:
    def __init__(self) -> None:
        self.calls: list[dict[str, object]] = []

    @command("badge award", help="Award a badge")
    @requires(Permission.BADGE_ISSUER)
    @argument("user")
    @argument("badge")
    @option("--expires", parser=iso_date, metavar="YYYY-MM-DD")
    async def award(
        self, ctx: CommandContext, user: str, badge: str, expires: dt.date | None
    ) -> None:
        self.calls.append({"user": user, "badge": badge, "expires": expires})
        await ctx.reply("awarded")

    @command("mod kick", help="Kick someone")
    @requires(Permission.ROOM_MODERATOR)
    @argument("user")
    @argument("reason", required=False, rest=True)
    async def kick(self, ctx: CommandContext, user: str, reason: str | None) -> None:
        self.calls.append({"user": user, "reason": reason})
        await ctx.reply("kicked")

    @command("gate require", help="Gate the room")
    @argument("badge")
    @argument("more", required=False, rest=True)
    @option("--any")
    async def require(self, ctx: CommandContext, badge: str, more: str | None, any: bool) -> None:
        self.calls.append({"badge": badge, "more": more, "any": any})
        if badge == "refuse":
            raise Refused("No <such> badge")
        if badge == "crash":
            raise KeyError("internal")
        await ctx.reply("gated")


class _Unit:
    """The unit of work a handler runs in (a savepoint of the event's transaction in production)."""

    log: ClassVar[list[str]] = []

    async def __aenter__(self) -> None:
        self.log.append("begin")

    async def __aexit__(self, kind: object, *_: object) -> None:
        self.log.append("rollback" if kind else "commit")


async def _levels(_: RoomID) -> PowerLevelStateEventContent:
    return PowerLevelStateEventContent(users={MOD: 50, MEMBER: 0})


def _router() -> tuple[CommandRouter, Sample]:
    checker = PermissionChecker(
        admins=(), badge_issuers=(ISSUER,), course_admins=(), power_levels=_levels
    )
    router = CommandRouter("!", checker, _Unit)
    sample = Sample()
    router.register(sample)
    router.register(HelpCommands(router))
    return router, sample


async def _run(router: CommandRouter, sender: UserID, text: str) -> tuple[Outcome, list[str]]:
    replies: list[str] = []

    async def reply(html: str) -> None:
        replies.append(html)

    outcome = await router.handle(sender, ROOM, EventID("$e"), text, reply)
    return outcome, replies


async def test_arguments_and_options() -> None:
    router, sample = _router()
    outcome, replies = await _run(
        router, ISSUER, "!badge award @a:dk.example first-aid --expires 2027-01-31"
    )
    assert outcome is Outcome.OK and replies == ["awarded"]
    assert sample.calls[-1] == {
        "user": "@a:dk.example",
        "badge": "first-aid",
        "expires": dt.date(2027, 1, 31),
    }
    outcome, _ = await _run(router, MOD, '!mod kick @x:dk.example "spamming links" again')
    assert sample.calls[-1] == {"user": "@x:dk.example", "reason": "spamming links again"}
    await _run(router, MEMBER, "!GATE Require a b c --any")
    assert sample.calls[-1] == {"badge": "a", "more": "b c", "any": True}


@pytest.mark.parametrize(
    "text, problem",
    [
        ("!badge award @a:dk.example", "<badge> is missing"),
        ("!badge award @a:dk.example b extra", "unexpected 'extra'"),
        ("!badge award @a:dk.example b --expires tomorrow", "--expires"),
        ("!badge award @a:dk.example b --expires", "--expires needs a value"),
        ("!badge award @a:dk.example b --colour red", "unknown option --colour"),
        ('!badge award "@a:dk.example b', "could not read the arguments"),
    ],
)
async def test_bad_arguments_get_the_usage_line(text: str, problem: str) -> None:
    router, sample = _router()
    outcome, replies = await _run(router, ISSUER, text)
    assert outcome is Outcome.USAGE and not sample.calls
    assert replies[0].startswith(
        "Usage: <code>!badge award &lt;user&gt; &lt;badge&gt; [--expires YYYY-MM-DD]</code>"
    )
    assert problem.replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#x27;") in replies[0]


async def test_permissions_are_named_when_missing() -> None:
    router, sample = _router()
    outcome, replies = await _run(router, MEMBER, "!badge award @a:dk.example b")
    assert outcome is Outcome.DENIED and not sample.calls
    assert "badge issuer" in replies[0]
    outcome, replies = await _run(router, MEMBER, "!mod kick @a:dk.example")
    assert outcome is Outcome.DENIED and "power level 50" in replies[0]
    outcome, _ = await _run(router, MOD, "!mod kick @a:dk.example")
    assert outcome is Outcome.OK


async def test_help_lists_only_what_the_sender_may_run() -> None:
    router, _ = _router()
    _, member = await _run(router, MEMBER, "!help")
    _, issuer = await _run(router, ISSUER, "!help")
    _, mod = await _run(router, MOD, "!help")
    assert "!badge award" not in member[0] and "!mod kick" not in member[0]
    assert "!gate require" in member[0]
    assert "!badge award" in issuer[0] and "!mod kick" not in issuer[0]
    assert "!mod kick" in mod[0] and "!badge award" not in mod[0]
    _, one = await _run(router, MEMBER, "!help badge award")
    assert "not available to you" in one[0]


async def test_command_errors_and_crashes() -> None:
    router, _ = _router()
    _Unit.log.clear()
    outcome, replies = await _run(router, MEMBER, "!gate require refuse")
    assert outcome is Outcome.REFUSED and replies == ["No &lt;such&gt; badge"]
    assert _Unit.log == ["begin", "rollback"]  # the refusal undid the handler's work first
    # An unexpected error is not answered here: the event rolls back and is retried; once it is
    # given up, the sender gets a reference number and nothing of the error.
    with pytest.raises(KeyError):
        await _run(router, MEMBER, "!gate require crash")
    replies = []

    async def reply(html: str) -> None:
        replies.append(html)

    await router.reply_given_up(reply, "A1B2C3")
    assert "ref: <code>A1B2C3</code>" in replies[0] and "internal" not in replies[0]


def test_rest_argument_must_be_last() -> None:
    with pytest.raises(TypeError):

        @command("x y", help="bad")
        @argument("a", rest=True)
        @argument("b")
        async def bad(self: object, ctx: CommandContext, a: str, b: str) -> None: ...


def test_parse_arguments_inline_option_value() -> None:
    router, _ = _router()
    spec = router.find(["badge", "award"])
    assert spec is not None
    assert parse_arguments(spec, "u b --expires=2030-01-01")["expires"] == dt.date(2030, 1, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.text(),
        st.text().map(lambda t: "!" + t),
        st.lists(
            st.sampled_from(
                [
                    "!badge",
                    "award",
                    "gate",
                    "require",
                    "--any",
                    "--expires",
                    '"',
                    "'",
                    "help",
                    "mod",
                    "kick",
                    "!",
                    " ",
                    "\n",
                    "<b>",
                    "2027-01-01",
                    "@a:b",
                ]
            )
        ).map(" ".join),
    )
)
def test_any_text_runs_gets_usage_or_is_ignored(text: str) -> None:
    router, _ = _router()
    outcome, replies = asyncio.run(_run(router, ISSUER, text))
    if outcome is Outcome.NOT_A_COMMAND:
        assert replies == []
    else:
        assert outcome in {Outcome.OK, Outcome.USAGE, Outcome.DENIED, Outcome.REFUSED}
        assert len(replies) == 1


def test_plain_text_keeps_numbers_and_links() -> None:
    from core.html import html_to_text

    text = html_to_text(
        "<strong>Question 1/2</strong>: Which?<ol><li>CO2</li><li>Argon</li></ol>"
        'See <a href="https://x.example/c/1">the credential</a>.<ul><li>a</li></ul>'
    )
    assert text.splitlines() == [
        "Question 1/2: Which?",
        "1. CO2",
        "2. Argon",
        "See the credential (https://x.example/c/1).",
        "• a",
    ]


async def test_help_with_only_the_prefix_lists_everything() -> None:
    router, _ = _router()
    outcome, replies = await _run(router, MEMBER, "!help !")
    assert outcome is Outcome.OK and "Commands you can use here" in replies[0]
