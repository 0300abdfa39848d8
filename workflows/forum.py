"""Forum topics and their rooms; comments written through the API, sent by ghost users.

A topic's room has the topic's title as name, the alias #forum_<slug>:<server>, and a state event
``org.unityplan.forum.topic`` (state key "") holding the topic id. A comment posted through the
API is sent to the room by a ghost (@unity_<author localpart>) named after its author.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from typing import Any

from mautrix.errors import MatrixError, MatrixRequestError
from mautrix.types import (
    EventID,
    EventType,
    Format,
    InReplyTo,
    MessageType,
    RelatesTo,
    RoomAlias,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from core.effects import Effects, Executor, PermanentFailure
from core.errors import Conflict, Forbidden, Locked, NotFound, Refused
from core.events import EventEmitter
from core.html import html_to_text, markdown_to_html
from core.ids import Namespace, localpart_of
from core.matrix import MatrixConnection
from core.ratelimit import RateLimiter
from db.database import Database
from db.repositories.audit import AuditLog
from db.repositories.effects import EffectRow
from db.repositories.forum import Comment, ForumRepository, Topic

from .territory import TerritorySettings

log = logging.getLogger("unityplan.forum")

TOPIC_STATE = EventType.find("org.unityplan.forum.topic", EventType.Class.STATE)
MAX_TITLE = 200
LOCKED_LEVEL = 50
ROOM_EFFECT = "forum.room"
COMMENT_EFFECT = "forum.comment"
FOLLOW_EFFECT = "forum.follow"
WAIT_SECONDS = 10.0  # how long an API answer waits for the room or the message to exist


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
        effects: Effects,
        audit: AuditLog,
        namespace: Namespace,
        alias_prefix: str,
        moderators: tuple[str, ...] = (),
        topic_limit: RateLimiter | None = None,
        settings: TerritorySettings | None = None,
    ) -> None:
        # Without cross-border federation the territory's rooms stay on its server.
        self.settings = settings
        self.topic_limit = topic_limit
        self.audit = audit
        self.moderators = moderators  # territory admins: moderators of every topic room
        self.db = db
        self.forum = forum
        self.matrix = matrix
        self.events = events
        self.effects = effects
        self.namespace = namespace
        self.server_name = namespace.server_name
        self.alias_prefix = alias_prefix

    def alias_of(self, topic: Topic) -> str:
        return f"#{self.alias_prefix}{topic.slug}:{self.server_name}"

    # --- topics -------------------------------------------------------------------------------

    async def create_topic(self, title: str, author: str, *, category: str | None = None) -> Topic:
        title = " ".join(title.split())
        if self.topic_limit is not None:
            self.topic_limit.hit(author)
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
            room = await self._queue_room(topic)
        if self.db.in_transaction:
            return topic  # inside a chat command: the room is made once the command commits
        return await self._waited(topic, room)

    # --- effects: the topic's room, and comments from the API sent by ghosts -----------------

    @staticmethod
    def room_key(topic_id: int) -> str:
        """A topic's effects keep their order even before its room exists."""
        return f"topic:{topic_id}"

    async def _queue_room(self, topic: Topic) -> str:
        return await self.effects.record(
            ROOM_EFFECT, {"topic_id": topic.id}, room_key=self.room_key(topic.id)
        )

    async def _waited(self, topic: Topic, txn_id: str) -> Topic:
        """After commit: the topic once its room exists (the sender makes it at once)."""
        await self.effects.result(txn_id, timeout=WAIT_SECONDS)
        return await self.forum.topic(topic.id) or topic

    def executors(self) -> dict[str, Executor]:
        return {
            ROOM_EFFECT: self._room_effect,
            COMMENT_EFFECT: self._comment_effect,
            FOLLOW_EFFECT: self._follow_effect,
        }

    async def _room_effect(self, effect: EffectRow) -> dict[str, Any]:
        topic = await self.forum.topic(int(effect.payload["topic_id"]))
        if topic is None:
            raise PermanentFailure("the topic is gone")
        return {"room_id": (await self.ensure_room(topic)).matrix_room_id}

    async def ensure_room(self, topic: Topic) -> Topic:
        """Create the topic's room when it has none yet. Idempotent: the alias is fixed, so a
        second attempt (a retry, the homeserver's alias query racing the sender) finds the room."""
        if topic.matrix_room_id:
            return topic
        localpart = f"{self.alias_prefix}{topic.slug}"
        try:
            room_id = await self.matrix.bot.create_room(
                alias_localpart=localpart,
                preset=RoomCreatePreset.PUBLIC,
                creation_content=(
                    {"m.federate": False}
                    if self.settings is not None and not self.settings.allow_cross_border
                    else None
                ),
                name=topic.title,
                topic=f"Forum topic {topic.id}: {topic.title}",
                power_level_override={"users": {UserID(m): LOCKED_LEVEL for m in self.moderators}},
                initial_state=[
                    {"type": str(TOPIC_STATE), "state_key": "", "content": {"topic_id": topic.id}}
                ],
            )
        except MatrixRequestError as exc:
            if exc.errcode != "M_ROOM_IN_USE":
                raise
            found = await self.matrix.bot.resolve_room_alias(RoomAlias(self.alias_of(topic)))
            room_id = found.room_id
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
        await self.effects.power_levels(room, {"events_default": LOCKED_LEVEL if locked else 0})
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

    async def queue_follow(self, topic: Topic, old_room: str, new_room: str) -> None:
        await self.effects.record(
            FOLLOW_EFFECT,
            {"topic_id": topic.id, "old_room": old_room, "new_room": new_room},
            room_key=self.room_key(topic.id),
        )

    async def _follow_effect(self, effect: EffectRow) -> None:
        """The executor of ``forum.follow``: join the new room and move the topic there."""
        p = effect.payload
        new_room = RoomID(p["new_room"])
        bot = self.matrix.bot
        await bot.join_room_by_id(new_room)
        create = await bot.get_state_event(new_room, EventType.ROOM_CREATE)
        predecessor = (create.serialize().get("predecessor") or {}).get("room_id")
        if predecessor != p["old_room"]:
            raise PermanentFailure(
                f"{new_room} claims to replace {p['old_room']} but its predecessor is {predecessor}"
            )
        await self.follow_upgrade(p["old_room"], new_room)

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
        name = f"{own or localpart_of(author)} (forum)"
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
        room = topic.matrix_room_id
        if room and not self.db.in_transaction and await self.matrix.is_encrypted(room):
            raise Conflict(
                "This topic's room is encrypted, so the forum no longer carries comments into it."
            )
        parent = None
        if reply_to is not None:
            parent = await self.forum.comment(reply_to)
            if parent is None or parent.topic_id != topic.id:
                raise Refused("reply_to is not a comment of this topic.")
        html = markdown_to_html(body)
        async with self.db.transaction():
            if not topic.matrix_room_id:
                await self._queue_room(topic)
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
            sent = await self.effects.record(
                COMMENT_EFFECT, {"comment_id": comment.id}, room_key=self.room_key(topic.id)
            )
        if not self.db.in_transaction:
            await self.effects.result(sent, timeout=WAIT_SECONDS)
        updated = await self.forum.comment(comment.id)
        assert updated is not None
        return updated

    async def _comment_effect(self, effect: EffectRow) -> dict[str, Any]:
        """The executor of ``forum.comment``: the author's ghost says it in the topic's room."""
        comment = await self.forum.comment(int(effect.payload["comment_id"]))
        if comment is None:
            raise PermanentFailure("the comment is gone")
        if comment.matrix_event_id:
            return {"event_id": comment.matrix_event_id}
        topic = await self.forum.topic(comment.topic_id)
        if topic is None:
            raise PermanentFailure("the topic is gone")
        topic = await self.ensure_room(topic)
        html = comment.body_html or markdown_to_html(comment.body)
        content = TextMessageEventContent(
            msgtype=MessageType.TEXT,
            body=html_to_text(html) or comment.body,
            format=Format.HTML,
            formatted_body=html,
        )
        parent = await self.forum.comment(comment.parent_id) if comment.parent_id else None
        if parent is not None and parent.matrix_event_id:
            content.relates_to = RelatesTo(
                in_reply_to=InReplyTo(event_id=EventID(parent.matrix_event_id))
            )
        ghost = await self._ghost(comment.author)
        event_id = await self.matrix.ghost(ghost).send_message_event(
            RoomID(topic.matrix_room_id or ""),
            EventType.ROOM_MESSAGE,
            content,
            txn_id=effect.txn_id,
        )
        await self.forum.set_comment_event(comment.id, event_id)
        return {"event_id": str(event_id)}

    async def edit_comment(self, comment: Comment, author: str, body: str) -> Comment:
        self._own(comment, author)
        html = markdown_to_html(body)
        async with self.db.transaction():
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
                await self.effects.send(
                    topic.matrix_room_id, edit.serialize(), sender=self.ghost_of(author)
                )
        updated = await self.forum.comment(comment.id)
        assert updated is not None
        return updated

    async def delete_comment(self, comment: Comment, author: str) -> None:
        self._own(comment, author)
        async with self.db.transaction():
            await self.forum.soft_delete(comment.id)
            if comment.matrix_event_id:
                topic = await self.forum.topic(comment.topic_id)
                assert topic is not None and topic.matrix_room_id
                await self.effects.redact(
                    topic.matrix_room_id,
                    comment.matrix_event_id,
                    sender=self.ghost_of(author),
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
