"""Messages that start with the command prefix go to the command router; replies are notices."""

from __future__ import annotations

from mautrix.types import (
    Event,
    EventType,
    Format,
    InReplyTo,
    MessageEvent,
    MessageType,
    RelatesTo,
    RelationType,
    TextMessageEventContent,
)

from commands.router import CommandRouter
from core.html import html_to_text
from core.matrix import MatrixConnection


class CommandMessageHandler:
    def __init__(self, router: CommandRouter, matrix: MatrixConnection) -> None:
        self.router = router
        self.matrix = matrix

    async def handle(self, event: Event) -> None:
        if not (isinstance(event, MessageEvent) and event.type == EventType.ROOM_MESSAGE):
            return
        content = event.content
        if content.msgtype != MessageType.TEXT or not isinstance(content.body, str):
            return  # notices are other bots talking; never answer them
        relates = content.relates_to
        if relates and relates.rel_type == RelationType.REPLACE:
            return  # an edit of an earlier message is not a new command
        if not self.router.is_command(content.body):
            return

        async def reply(html: str) -> None:
            await self.matrix.bot.send_message_event(
                event.room_id,
                EventType.ROOM_MESSAGE,
                TextMessageEventContent(
                    msgtype=MessageType.NOTICE,
                    body=html_to_text(html),
                    format=Format.HTML,
                    formatted_body=html,
                    relates_to=RelatesTo(in_reply_to=InReplyTo(event_id=event.event_id)),
                ),
            )

        reply_to = relates.in_reply_to.event_id if relates and relates.in_reply_to else None
        await self.router.handle(
            event.sender, event.room_id, event.event_id, content.body, reply, reply_to
        )
