"""A user talks to the bot through a real homeserver and reads its replies through sync."""

from __future__ import annotations

from appservice.app import Platform
from appservice.stack.local import LocalStack
from commands.decorators import argument, command, requires
from commands.permissions import Permission
from commands.router import CommandContext
from core.html import escape
from tests.matrix_user import MatrixUser, body, html, replies_to


async def test_bot_joins_on_invite_and_answers_help(user: MatrixUser) -> None:
    room = await user.room_with_bot()
    reply = await user.command(room, "!help")
    assert reply["content"]["msgtype"] == "m.notice"
    assert reply["content"]["format"] == "org.matrix.custom.html"
    assert "!help" in body(reply) and "!territory info" in body(reply)
    assert "<code>!territory info</code>" in html(reply)


async def test_help_for_one_command(user: MatrixUser) -> None:
    room = await user.room_with_bot()
    reply = await user.command(room, "!help territory info")
    assert "!territory info" in body(reply)
    assert "Show this territory" in body(reply)
    assert "!help" not in body(reply).replace("!territory", "")


async def test_territory_info(user: MatrixUser, platform: Platform) -> None:
    room = await user.room_with_bot()
    reply = await user.command(room, "!territory info")
    config = platform.config
    assert config.territory.name in body(reply)
    assert config.homeserver.domain in body(reply)
    assert config.bot_user_id in body(reply)


async def test_group_without_subcommand_gets_usage(user: MatrixUser) -> None:
    room = await user.room_with_bot()
    reply = await user.command(room, "!territory")
    assert "needs a subcommand" in body(reply)
    assert "!territory info" in body(reply)
    reply = await user.command(room, "!territory bogus")
    assert "has no such subcommand" in body(reply)


async def test_unknown_command_points_to_help(user: MatrixUser) -> None:
    room = await user.room_with_bot()
    reply = await user.command(room, "!frobnicate now")
    assert "Unknown command" in body(reply) and "!help" in body(reply)


async def test_user_text_is_escaped_in_replies(user: MatrixUser) -> None:
    room = await user.room_with_bot()
    reply = await user.command(room, "!help <script>alert(1)</script>")
    assert "<script>" not in html(reply)
    assert "&lt;script&gt;" in html(reply)


async def test_plain_text_and_notices_are_ignored(user: MatrixUser) -> None:
    room = await user.room_with_bot()
    chatter = await user.send(room, "hello bot, !help is what I would send")
    notice = await user.send(room, "!help", msgtype="m.notice")
    barrier = await user.command(room, "!territory info")
    assert barrier
    assert user.replies(room, chatter) == []
    assert user.replies(room, notice) == []


class IssuerOnly:
    """A command that needs a permission, registered on the live router like any module."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    @command("testing stamp", help="Stamp a word (badge issuers only)")
    @requires(Permission.BADGE_ISSUER)
    @argument("word")
    async def stamp(self, ctx: CommandContext, word: str) -> None:
        self.calls.append((ctx.sender, word))
        await ctx.reply(f"stamped {escape(word)}")  # as every command escapes what it echoes


async def test_permissions_filter_help_and_refuse(
    user: MatrixUser, admin: MatrixUser, platform: Platform
) -> None:
    if platform.router.find(["testing", "stamp"]) is None:
        platform.router.register(IssuerOnly())
    member_room = await user.room_with_bot()
    assert "!testing stamp" not in body(await user.command(member_room, "!help"))
    refusal = await user.command(member_room, "!testing stamp hello")
    assert "badge issuer" in body(refusal) and "may not run" in body(refusal)

    admin_room = await admin.room_with_bot()
    assert "!testing stamp" in body(await admin.command(admin_room, "!help"))
    usage = await admin.command(admin_room, "!testing stamp")
    assert body(usage).startswith("Usage: !testing stamp <word>")
    assert "<word> is missing" in body(usage)
    done = await admin.command(admin_room, "!testing stamp hello")
    assert body(done) == "stamped hello"


class Exploding:
    @command("testing explode", help="Fail with an unexpected error")
    async def explode(self, ctx: CommandContext) -> None:
        raise RuntimeError("secret internal detail")


async def test_unexpected_error_gets_a_reference(user: MatrixUser, platform: Platform) -> None:
    if platform.router.find(["testing", "explode"]) is None:
        platform.router.register(Exploding())
    room = await user.room_with_bot()
    reply = await user.command(room, "!testing explode")
    assert "Something went wrong (ref:" in body(reply)
    assert "secret internal detail" not in body(reply)


async def test_namespace_is_exclusive(stack) -> None:  # type: ignore[no-untyped-def]
    """Nobody but the appservice may register users in its namespace."""
    import aiohttp

    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{stack.synapse.url}/_matrix/client/v3/register",
            json={
                "username": "unity_intruder",
                "password": "pw-123456789",
                "auth": {"type": "m.login.dummy"},
            },
        ) as resp,
    ):
        answer = await resp.json()
    assert resp.status == 400 and answer["errcode"] == "M_EXCLUSIVE"


def test_every_usage_line_reads_well(platform: Platform) -> None:
    usages = [spec.usage("!") for spec in platform.router.commands]
    assert len(usages) >= 25
    for usage in usages:
        assert "[[" not in usage and "<<" not in usage, usage
    assert "!badge list [@user]" in usages
    assert "!mod audit [n]" in usages
    assert "!gate require <badge> [<badge>...] [--any]" in usages


def test_the_generated_reference_covers_what_the_bot_registers(platform: Platform) -> None:
    from commands.reference import specs

    registered = {s.name for s in platform.router.commands if s.path[0] != "testing"}
    assert {s.name for s in specs()} == registered


async def test_a_command_sent_before_the_bot_joined_is_answered(
    stack: LocalStack, user: MatrixUser
) -> None:
    """People type !help right after inviting the bot: what they sent between the invite and the
    join is read back once the bot is in, and answered."""
    created = await user.client.room_create(invite=[user.bot], is_direct=True)
    room = created.room_id  # type: ignore[union-attr]
    early = await user.send(room, "!help")  # the bot is only invited yet
    reply = await user.wait_for(room, lambda e: replies_to(e, early, user.bot), timeout=30)
    assert "Commands you can use here" in body(reply)
