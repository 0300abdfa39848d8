"""Messages from the bot to one user: in the user's DM room with the bot, created when needed."""

from __future__ import annotations

import logging

from mautrix.errors import MatrixError
from mautrix.types import (
    EventType,
    Format,
    MessageType,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from appservice.matrix import MatrixConnection
from commands.formatting import html_to_text
from db.repositories.direct_rooms import DirectRoomRepository

log = logging.getLogger("unityplan.dm")


class DirectMessenger:
    def __init__(self, matrix: MatrixConnection, rooms: DirectRoomRepository) -> None:
        self.matrix = matrix
        self.rooms = rooms

    async def remember(self, user_id: str, room_id: str) -> None:
        """A DM the user opened with the bot (an invite with is_direct)."""
        await self.rooms.set(user_id, room_id)

    async def send(self, user_id: str, html: str) -> RoomID:
        room_id = await self.rooms.get(user_id)
        if room_id is not None:
            try:
                await self._notice(RoomID(room_id), html)
                return RoomID(room_id)
            except MatrixError as exc:
                log.info(
                    "DM room %s with %s is unusable (%s); opening a new one", room_id, user_id, exc
                )
        new_room = await self.matrix.bot.create_room(
            preset=RoomCreatePreset.TRUSTED_PRIVATE,
            is_direct=True,
            invitees=[UserID(user_id)],
            name=None,
        )
        await self.rooms.set(user_id, new_room)
        await self._notice(new_room, html)
        return new_room

    async def _notice(self, room_id: RoomID, html: str) -> None:
        await self.matrix.bot.send_message_event(
            room_id,
            EventType.ROOM_MESSAGE,
            TextMessageEventContent(
                msgtype=MessageType.NOTICE,
                body=html_to_text(html),
                format=Format.HTML,
                formatted_body=html,
            ),
        )
