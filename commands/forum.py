"""!forum new|list|lock|unlock."""

from __future__ import annotations

from mautrix.types import RoomID

from core.errors import NotFound
from core.html import code, escape
from db.repositories.forum import Topic
from workflows.forum import ForumService

from .decorators import argument, command, requires
from .errors import PermissionDenied
from .permissions import Permission, PermissionChecker
from .router import CommandContext


class ForumCommands:
    def __init__(self, service: ForumService, permissions: PermissionChecker) -> None:
        self.service = service
        self.permissions = permissions

    @command("forum new", help="Create a forum topic and its room; replies with the room's alias")
    @argument("title", rest=True)
    async def new(self, ctx: CommandContext, title: str) -> None:
        topic = await self.service.create_topic(title, ctx.sender)
        alias = self.service.alias_of(topic)
        await ctx.reply(
            f"Created the topic <strong>{escape(topic.title)}</strong>: join "
            f'<a href="https://matrix.to/#/{escape(alias)}">{escape(alias)}</a>.'
        )

    @command("forum list", help="The newest forum topics and their rooms")
    async def list(self, ctx: CommandContext) -> None:
        topics = await self.service.forum.topics(20, None)
        if not topics:
            await ctx.reply(
                f"No topics yet. Start one with {code(ctx.prefix + 'forum new <title>')}."
            )
            return
        items = "".join(
            f"<li><strong>{escape(t.title)}</strong> — {code(self.service.alias_of(t))}"
            + (" 🔒" if t.locked else "")
            + "</li>"
            for t in topics
        )
        await ctx.reply(f"<strong>Forum topics</strong><ul>{items}</ul>")

    @command("forum lock", help="Make this topic read-only for everyone but moderators")
    @requires(Permission.ROOM_MODERATOR)
    async def lock(self, ctx: CommandContext) -> None:
        await self.service.set_locked(await self._topic(ctx.room_id), True, ctx.sender)
        await ctx.reply("This topic is locked: only moderators can write, in the room and the API.")

    @command("forum unlock", help="Let everyone write in a topic again (this room, or #alias)")
    @requires(Permission.ROOM_MODERATOR)
    @argument("topic", required=False, metavar="#forum_alias")
    async def unlock(self, ctx: CommandContext, topic: str | None) -> None:
        # From another room too (e.g. a DM with the bot): then the sender must be a moderator of
        # the topic's room, not only of the room they wrote in.
        found = await (self._topic_by_alias(topic) if topic else self._topic(ctx.room_id))
        if found.matrix_room_id is None or not await self.permissions.has(
            Permission.ROOM_MODERATOR, ctx.sender, RoomID(found.matrix_room_id)
        ):
            raise PermissionDenied(
                f"You may not unlock {found.title}: it needs the "
                f"{Permission.ROOM_MODERATOR.value} of the topic's room."
            )
        await self.service.set_locked(found, False, ctx.sender)
        await ctx.reply(f"The topic {escape(found.title)} is open again.")

    async def _topic(self, room_id: str) -> Topic:
        topic = await self.service.forum.topic_by_room(room_id)
        if topic is None:
            raise NotFound("This room is not a forum topic.")
        return topic

    async def _topic_by_alias(self, alias: str) -> Topic:
        prefix = f"#{self.service.alias_prefix}"
        slug = alias.removeprefix(prefix).split(":", 1)[0]
        topic = await self.service.forum.topic_by_slug(slug) if alias.startswith(prefix) else None
        if topic is None:
            raise NotFound(f"{alias} is not a forum topic.")
        return topic
