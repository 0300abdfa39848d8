"""The bot joins rooms (and DMs) it is invited to by users of its own homeserver; the join (or the
refusal) is an effect that leaves after the event's transaction commits."""

from __future__ import annotations

import logging

from mautrix.types import Event, EventType, Membership, StateEvent

from core.effects import Effects
from core.ids import server_of
from core.matrix import DirectMessenger

log = logging.getLogger("unityplan.invites")


class BotInviteHandler:
    def __init__(
        self,
        bot_user_id: str,
        server_name: str,
        messenger: DirectMessenger,
        effects: Effects,
        *,
        cannot_read_encrypted: str | None = None,
    ) -> None:
        # With encryption off: what the bot says when it joins an encrypted room.
        self.cannot_read_encrypted = cannot_read_encrypted
        self.bot_user_id = bot_user_id
        self.server_name = server_name
        self.messenger = messenger
        self.effects = effects

    async def handle(self, event: Event) -> None:
        if not (
            isinstance(event, StateEvent)
            and event.type == EventType.ROOM_MEMBER
            and event.state_key == self.bot_user_id
            and event.content.membership == Membership.INVITE
        ):
            return
        if server_of(str(event.sender)) != self.server_name:
            log.info("Declining invite to %s from remote user %s", event.room_id, event.sender)
            await self.effects.leave(
                event.room_id,
                reason="This bot only joins rooms on invitation from its own homeserver.",
            )
            return
        await self.effects.join(event.room_id)
        log.info("Joining %s on invitation from %s", event.room_id, event.sender)
        if self.cannot_read_encrypted and _encrypted(event):
            await self.effects.notice(event.room_id, self.cannot_read_encrypted)
        if event.content.is_direct:
            await self.messenger.remember(event.sender, event.room_id)


def _encrypted(invite: StateEvent) -> bool:
    """Whether the room's state the invite carries says it is encrypted."""
    stripped = getattr(invite.unsigned, "invite_room_state", None) or []
    return any(getattr(e, "type", None) == EventType.ROOM_ENCRYPTION for e in stripped)
