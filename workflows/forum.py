"""Forum topics and their rooms; comments written through the API, sent by ghost users.

A topic's room has the topic's title as name, the alias #forum_<slug>:<server>, and a state event
``org.unityplan.forum.topic`` (state key "") holding the topic id. A comment posted through the
API is sent to the room by a ghost (@unity_<author localpart>) named after its author.
"""

from __future__ import annotations

import logging
import re
import unicodedata

from mautrix.errors import MatrixError
from mautrix.types import (
    EventID,
    EventType,
    Format,
    InReplyTo,
    MessageType,
    PowerLevelStateEventContent,
    RelatesTo,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from core.errors import Forbidden, Locked, NotFound, Refused
from core.events import EventEmitter
from core.html import html_to_text, markdown_to_html
from core.ids import Namespace, localpart_of
from core.matrix import MatrixConnection
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.forum import Comment, ForumRepository, Topic

log = logging.getLogger("unityplan.forum")

TOPIC_STATE = EventType.find("org.unityplan.forum.topic", EventType.Class.STATE)
MAX_TITLE = 200
LOCKED_LEVEL = 50


def slugify(title: str) -> str:
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode().lower()
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:50] or "topic"


class ForumService:
    def __init__(
        self,
        *,
        db: Database,
        forum: ForumRepository,
        matrix: MatrixConnection,
        events: EventEmitter,
        audit: AuditLog,
        namespace: Namespace,
        alias_prefix: str,
        moderators: tuple[str, ...] = (),
    ) -> None:
        self.audit = audit
        self.moderators = moderators  # territory admins: moderators of every topic room
        self.db = db
        self.forum = forum
        self.matrix = matrix
        self.events = events
        self.namespace = namespace
        self.server_name = namespace.server_name
        self.alias_prefix = alias_prefix

    def alias_of(self, topic: Topic) -> str:
        return f"#{self.alias_prefix}{topic.slug}:{self.server_name}"

    # --- topics -------------------------------------------------------------------------------

    async def create_topic(self, title: str, author: str, *, category: str | None = None) -> Topic:
        title = " ".join(title.split())
        if not title or len(title) > MAX_TITLE:
            raise Refused(f"A topic title is 1 to {MAX_TITLE} characters.")
        category_id = await self.forum.category_id(category or "general")
        if category_id is None:
            raise NotFound(f"There is no category {category!r}.")
        base = slugify(title)
        slug, n = base, 1
        while await self.forum.slug_taken(slug):
            n += 1
            slug = f"{base}-{n}"
        async with self.db.transaction():
            topic = await self.forum.add_topic(category_id, slug, title, author)
            await self.events.emit(
                "forum.topic_created",
                {"topic_id": topic.id, "title": title, "slug": slug, "alias": self.alias_of(topic)},
                actor=author,
            )
        return await self.ensure_room(topic)

    async def ensure_room(self, topic: Topic) -> Topic:
        """Create the topic's room when it has none yet."""
        if topic.matrix_room_id:
            return topic
        room_id = await self.matrix.bot.create_room(
            alias_localpart=f"{self.alias_prefix}{topic.slug}",
            preset=RoomCreatePreset.PUBLIC,
            name=topic.title,
            topic=f"Forum topic {topic.id}: {topic.title}",
            power_level_override={"users": {UserID(m): LOCKED_LEVEL for m in self.moderators}},
            initial_state=[
                {"type": str(TOPIC_STATE), "state_key": "", "content": {"topic_id": topic.id}}
            ],
        )
        await self.forum.set_room(topic.id, room_id)
        updated = await self.forum.topic(topic.id)
        assert updated is not None
        return updated

    async def resolve_alias(self, alias: str) -> bool:
        """The homeserver asks about #forum_<slug>: create the topic's room on the fly."""
        prefix, suffix = f"#{self.alias_prefix}", f":{self.server_name}"
        if not (alias.startswith(prefix) and alias.endswith(suffix)):
            return False
        topic = await self.forum.topic_by_slug(alias[len(prefix) : -len(suffix)])
        if topic is None:
            return False
        if topic.matrix_room_id:
            return False  # the alias exists already; nothing to create
        await self.ensure_room(topic)
        return True

    async def set_locked(self, topic: Topic, locked: bool, actor: str) -> None:
        """Locked: only moderators may write in the room, and the API refuses new comments."""
        assert topic.matrix_room_id
        room = RoomID(topic.matrix_room_id)
        levels: PowerLevelStateEventContent = await self.matrix.bot.get_power_levels(
            room, ignore_cache=True
        )
        levels.events_default = LOCKED_LEVEL if locked else 0
        await self.matrix.bot.set_power_levels(room, levels)
        await self.forum.set_locked(topic.id, locked)
        await self.audit.record(
            actor,
            "moderation.lock" if locked else "moderation.unlock",
            room_id=room,
            details={"topic_id": topic.id},
        )
        await self.events.emit(
            "moderation.action_taken",
            {"action": "lock" if locked else "unlock", "room_id": room, "topic_id": topic.id},
            actor=actor,
        )

    async def follow_upgrade(self, old_room: str, new_room: str) -> Topic | None:
        topic = await self.forum.topic_by_room(old_room)
        if topic is None:
            return None
        await self.forum.set_room(topic.id, new_room)
        log.info("Topic %d followed its room %s to %s", topic.id, old_room, new_room)
        return topic

    # --- comments from the API ----------------------------------------------------------------

    def ghost_of(self, author: str) -> UserID:
        return UserID(self.namespace.ghost_id(localpart_of(author)))

    async def _ghost(self, author: str) -> UserID:
        ghost = self.ghost_of(author)
        intent = self.matrix.ghost(ghost)
        await intent.ensure_registered()
        try:  # the author's own display name, marked so nobody mistakes the ghost for them
            own = await self.matrix.bot.get_displayname(UserID(author))
        except MatrixError:
            own = None
        name = f"{own or author.removeprefix('@').split(':', 1)[0]} (forum)"
        try:
            await intent.set_displayname(name)
        except MatrixError:
            log.warning("Could not set the display name of %s", ghost)
        return ghost

    async def post_comment(
        self, topic: Topic, author: str, body: str, reply_to: int | None
    ) -> Comment:
        if topic.locked:
            raise Locked("This topic is locked.")
        parent = None
        if reply_to is not None:
            parent = await self.forum.comment(reply_to)
            if parent is None or parent.topic_id != topic.id:
                raise Refused("reply_to is not a comment of this topic.")
        topic = await self.ensure_room(topic)
        html = markdown_to_html(body)
        async with self.db.transaction():
            comment = await self.forum.add_comment(
                topic.id,
                author=author,
                body=body,
                body_html=html,
                source="api",
                matrix_event_id=None,
                parent_id=parent.id if parent else None,
            )
            assert comment is not None
            await self.events.emit(
                "forum.comment_posted",
                {
                    "topic_id": topic.id,
                    "comment_id": comment.id,
                    "author": author,
                    "parent_id": comment.parent_id,
                    "via": "api",
                },
                actor=author,
            )
        ghost = await self._ghost(author)
        content = TextMessageEventContent(
            msgtype=MessageType.TEXT,
            body=html_to_text(html) or body,
            format=Format.HTML,
            formatted_body=html,
        )
        if parent is not None and parent.matrix_event_id:
            content.relates_to = RelatesTo(
                in_reply_to=InReplyTo(event_id=EventID(parent.matrix_event_id))
            )
        event_id = await self.matrix.ghost(ghost).send_message_event(
            RoomID(topic.matrix_room_id or ""), EventType.ROOM_MESSAGE, content
        )
        await self.forum.set_comment_event(comment.id, event_id)
        updated = await self.forum.comment(comment.id)
        assert updated is not None
        return updated

    async def edit_comment(self, comment: Comment, author: str, body: str) -> Comment:
        self._own(comment, author)
        html = markdown_to_html(body)
        await self.forum.revise(comment.id, body, html, None)
        if comment.matrix_event_id:
            topic = await self.forum.topic(comment.topic_id)
            assert topic is not None and topic.matrix_room_id
            edit = TextMessageEventContent(
                msgtype=MessageType.TEXT,
                body=html_to_text(html) or body,
                format=Format.HTML,
                formatted_body=html,
            )
            edit.set_edit(EventID(comment.matrix_event_id))
            await self.matrix.ghost(self.ghost_of(author)).send_message_event(
                RoomID(topic.matrix_room_id), EventType.ROOM_MESSAGE, edit
            )
        updated = await self.forum.comment(comment.id)
        assert updated is not None
        return updated

    async def delete_comment(self, comment: Comment, author: str) -> None:
        self._own(comment, author)
        await self.forum.soft_delete(comment.id)
        if comment.matrix_event_id:
            topic = await self.forum.topic(comment.topic_id)
            assert topic is not None and topic.matrix_room_id
            await self.matrix.ghost(self.ghost_of(author)).redact(
                RoomID(topic.matrix_room_id),
                EventID(comment.matrix_event_id),
                reason="Deleted on the forum",
            )

    @staticmethod
    def _own(comment: Comment, author: str) -> None:
        if comment.author != author:
            raise Forbidden("Only the author may change a comment.")
        if comment.deleted_at is not None:
            raise NotFound("That comment was deleted.")
        if comment.source != "api":
            raise Forbidden("Edit comments written in Matrix from your Matrix client.")
