"""Messages that start with the command prefix go to the command router; replies are notices,
queued as effects (they leave after the event's transaction commits)."""

from __future__ import annotations

from mautrix.types import Event, EventType, MessageEvent, MessageType, RelationType

from commands.router import CommandRouter, Reply
from core.effects import Effects


class CommandMessageHandler:
    def __init__(self, router: CommandRouter, effects: Effects) -> None:
        self.router = router
        self.effects = effects

    def _command(self, event: Event) -> MessageEvent | None:
        if not (isinstance(event, MessageEvent) and event.type == EventType.ROOM_MESSAGE):
            return None
        content = event.content
        if content.msgtype != MessageType.TEXT or not isinstance(content.body, str):
            return None  # notices are other bots talking; never answer them
        relates = content.relates_to
        if relates and relates.rel_type == RelationType.REPLACE:
            return None  # an edit of an earlier message is not a new command
        if not self.router.is_command(content.body):
            return None
        return event

    def _reply(self, event: MessageEvent) -> Reply:
        async def reply(html: str) -> None:
            await self.effects.notice(event.room_id, html, reply_to=event.event_id)

        return reply

    async def handle(self, event: Event) -> None:
        command = self._command(event)
        if command is None:
            return
        relates = command.content.relates_to
        reply_to = relates.in_reply_to.event_id if relates and relates.in_reply_to else None
        await self.router.handle(
            command.sender,
            command.room_id,
            command.event_id,
            command.content.body,
            self._reply(command),
            reply_to,
        )

    async def given_up(self, event: Event, ref: str) -> None:
        """The command failed on every attempt: tell the sender, once, with the reference."""
        command = self._command(event)
        if command is not None:
            await self.router.reply_given_up(self._reply(command), ref)
