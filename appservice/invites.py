"""The bot joins rooms (and DMs) it is invited to by users of its own homeserver."""

from __future__ import annotations

import logging

from mautrix.errors import MatrixError
from mautrix.types import Event, EventType, Membership, StateEvent

from core.matrix import DirectMessenger, MatrixConnection

log = logging.getLogger("unityplan.invites")


class BotInviteHandler:
    def __init__(
        self, matrix: MatrixConnection, server_name: str, messenger: DirectMessenger
    ) -> None:
        self.matrix = matrix
        self.server_name = server_name
        self.messenger = messenger

    async def handle(self, event: Event) -> None:
        if not (
            isinstance(event, StateEvent)
            and event.type == EventType.ROOM_MEMBER
            and event.state_key == self.matrix.bot_user_id
            and event.content.membership == Membership.INVITE
        ):
            return
        inviter_server = str(event.sender).split(":", 1)[1]
        bot = self.matrix.bot
        if inviter_server != self.server_name:
            log.info("Declining invite to %s from remote user %s", event.room_id, event.sender)
            await bot.leave_room(
                event.room_id,
                reason="This bot only joins rooms on invitation from its own homeserver.",
            )
            return
        try:
            await bot.join_room_by_id(event.room_id)
        except MatrixError as exc:
            log.warning(
                "Could not join %s after an invite from %s: %s", event.room_id, event.sender, exc
            )
            return
        log.info("Joined %s on invitation from %s", event.room_id, event.sender)
        if event.content.is_direct:
            await self.messenger.remember(event.sender, event.room_id)
