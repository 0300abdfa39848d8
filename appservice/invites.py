"""The bot joins rooms (and DMs) it is invited to by users of its own homeserver; the join (or the
refusal) is an effect that leaves after the event's transaction commits.

What the inviter wrote between the invite and the join never reached the appservice (it hears a
room only once the bot is in it), yet people type `!help` right after inviting. So the join's
executor reads the room's latest messages once joined and hands the inviter's messages since the
invite to the inbox, like any transaction's events: each is handled once (the inbox knows event
ids), in order, by the same handlers."""

from __future__ import annotations

import logging

from mautrix.types import Event, EventType, Membership, PaginationDirection, RoomID, StateEvent

from core.effects import EffectRow, Effects
from core.ids import server_of
from core.matrix import DirectMessenger, MatrixConnection
from db.repositories.transactions import TransactionRepository

JOIN_EFFECT = "matrix.join_on_invite"
CATCH_UP_LIMIT = 20  # messages read back after joining

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
        await self.effects.record(
            JOIN_EFFECT,
            {
                "room_id": str(event.room_id),
                "inviter": str(event.sender),
                "invited_at": event.timestamp,
            },
            room_key=str(event.room_id),
        )
        log.info("Joining %s on invitation from %s", event.room_id, event.sender)
        if self.cannot_read_encrypted and _encrypted(event):
            await self.effects.notice(event.room_id, self.cannot_read_encrypted)
        if event.content.is_direct:
            await self.messenger.remember(event.sender, event.room_id)


def _encrypted(invite: StateEvent) -> bool:
    """Whether the room's state the invite carries says it is encrypted."""
    stripped = getattr(invite.unsigned, "invite_room_state", None) or []
    return any(getattr(e, "type", None) == EventType.ROOM_ENCRYPTION for e in stripped)


class InviteCatchUp:
    """The executor of ``matrix.join_on_invite``: join, then catch up on the inviter's messages."""

    def __init__(
        self, matrix: MatrixConnection, inbox: TransactionRepository, homeserver: str
    ) -> None:
        self.matrix = matrix
        self.inbox = inbox
        self.homeserver = homeserver

    async def join(self, effect: EffectRow) -> dict[str, int]:
        p = effect.payload
        room = RoomID(p["room_id"])
        await self.matrix.bot.join_room_by_id(room)
        page = await self.matrix.bot.get_messages(
            room, direction=PaginationDirection.BACKWARD, limit=CATCH_UP_LIMIT
        )
        missed = [
            event.serialize()
            for event in reversed(getattr(page, "events", []))  # a NamedTuple mypy cannot see into
            if event.type == EventType.ROOM_MESSAGE or event.type == EventType.ROOM_ENCRYPTED
            if str(event.sender) == p["inviter"] and event.timestamp >= int(p["invited_at"])
        ]
        if missed:
            # A transaction of our own: the sweeper hands its new events to the dispatcher.
            await self.inbox.record(self.homeserver, f"catch-up-{effect.txn_id}", missed)
            log.info("Caught up on %d messages sent to %s before the bot joined", len(missed), room)
        return {"caught_up": len(missed)}
