"""Room → forum: messages become comments, replies threaded comments, edits revisions, redactions
soft deletions, 👍/👎 reactions votes. Every write is keyed by the Matrix event id, so a replayed
transaction changes nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable

from mautrix.types import (
    Event,
    EventType,
    Format,
    MessageEvent,
    MessageType,
    ReactionEvent,
    RedactionEvent,
    RelationType,
    StateEvent,
    TextMessageEventContent,
)

from core.encryption import was_encrypted
from core.events import EventEmitter
from core.html import clean_html
from db.repositories.forum import ForumRepository, NewComment, Topic
from workflows.forum import ForumService

log = logging.getLogger("unityplan.forum.bridge")

UP = {"👍", "👍️", "+1", ":+1:"}
DOWN = {"👎", "👎️", "-1", ":-1:"}
TEXT_TYPES = {MessageType.TEXT, MessageType.EMOTE}


ENCRYPTED_TOPIC = (
    "This topic's room is encrypted now, so its messages no longer reach the public forum (and "
    "comments written on the forum no longer come in). Encrypted rooms are never bridged."
)


class ForumBridge:
    def __init__(
        self,
        forum: ForumRepository,
        service: ForumService,
        events: EventEmitter,
        is_command: Callable[[str], bool],
    ) -> None:
        self.forum = forum
        self.service = service
        self.events = events
        self.is_command = is_command  # commands are the router's, not forum comments

    async def handle(self, event: Event) -> None:
        room_id = getattr(event, "room_id", None)
        if room_id is None:
            return
        topic = await self.forum.topic_by_room(room_id)
        if topic is None:
            return
        if was_encrypted(event):
            return  # an encrypted room is never bridged to the public forum
        if isinstance(event, StateEvent) and event.type == EventType.ROOM_ENCRYPTION:
            await self.service.effects.notice(room_id, ENCRYPTED_TOPIC)
            log.info("Topic %d's room %s is encrypted now: no longer bridged", topic.id, room_id)
            return
        if isinstance(event, MessageEvent) and event.type == EventType.ROOM_MESSAGE:
            await self._message(topic, event)
        elif isinstance(event, ReactionEvent):
            await self._reaction(event)
        elif isinstance(event, RedactionEvent):
            await self._redaction(event)
        elif isinstance(event, StateEvent) and event.type == EventType.ROOM_TOMBSTONE:
            await self._tombstone(topic, event)

    async def _message(self, topic: Topic, event: MessageEvent) -> None:
        content = event.content
        if not isinstance(content, TextMessageEventContent) or content.msgtype not in TEXT_TYPES:
            return
        if self.is_command(content.body or ""):
            return
        relates = content.relates_to
        if relates and relates.rel_type == RelationType.REPLACE and relates.event_id:
            await self._edit(event, str(relates.event_id))
            return
        parent_event = content.get_reply_to() or (
            relates.event_id if relates and relates.rel_type == RelationType.THREAD else None
        )
        parent = await self.forum.comment_by_event(str(parent_event)) if parent_event else None
        content.trim_reply_fallback()
        html = (
            clean_html(content.formatted_body)
            if content.format == Format.HTML and content.formatted_body
            else None
        )
        draft = NewComment(
            topic.id,
            author=str(event.sender),
            body=content.body or "",
            body_html=html,
            source="matrix",
            matrix_event_id=str(event.event_id),
            parent_id=parent.id if parent else None,
        )
        # A backlog's messages become comments in one statement when the transaction commits
        # (a later reply or edit in the same batch reads them first: the repository writes them).
        if not self.forum.db.write_later(f"forum comments {self.forum.schema}", draft, self._post):
            await self._post([draft])

    async def _post(self, drafts: list[NewComment]) -> None:
        comments = await self.forum.add_comments(drafts)
        for comment in comments:
            if comment is not None:
                await self.events.emit(
                    "forum.comment_posted",
                    {
                        "topic_id": comment.topic_id,
                        "comment_id": comment.id,
                        "author": comment.author,
                        "parent_id": comment.parent_id,
                        "via": "matrix",
                        "event_id": comment.matrix_event_id,
                    },
                    actor=comment.author,
                )

    async def _edit(self, event: MessageEvent, original: str) -> None:
        comment = await self.forum.comment_by_event(original)
        if comment is None or comment.author != str(event.sender):
            return  # only the author's own edits count
        new = getattr(event.content, "new_content", None) or event.content
        body = str(getattr(new, "body", "") or "")
        formatted = getattr(new, "formatted_body", None)
        html = (
            clean_html(formatted)
            if getattr(new, "format", None) == Format.HTML and formatted
            else None
        )
        await self.forum.revise(comment.id, body, html, str(event.event_id))

    async def _reaction(self, event: ReactionEvent) -> None:
        relates = event.content.relates_to
        if relates.rel_type != RelationType.ANNOTATION or not relates.event_id:
            return
        key = (relates.key or "").strip()
        value = 1 if key in UP else -1 if key in DOWN else 0
        if value == 0:
            return
        comment = await self.forum.comment_by_event(str(relates.event_id))
        if comment is not None:
            await self.forum.vote(comment.id, str(event.sender), value, str(event.event_id))

    async def _redaction(self, event: RedactionEvent) -> None:
        redacts = str(getattr(event, "redacts", None) or "")
        if not redacts:
            return
        comment = await self.forum.comment_by_event(redacts)
        if comment is not None:
            if not await self.service.matrix.may_redact(
                event.room_id, event.sender, comment.author
            ):
                log.info("Ignoring %s's redaction of %s's comment", event.sender, comment.author)
                return
            if await self.forum.soft_delete(comment.id):
                await self.events.emit(
                    "forum.comment_deleted",
                    {"topic_id": comment.topic_id, "comment_id": comment.id},
                    actor=str(event.sender),
                )
            return
        await self.forum.unvote_by_event(redacts)

    async def _tombstone(self, topic: Topic, event: StateEvent) -> None:
        """Follow an upgraded room (after commit), but only to a room whose predecessor is this one."""
        new_room = getattr(event.content, "replacement_room", None)
        if new_room:
            await self.service.queue_follow(topic, str(event.room_id), str(new_room))
