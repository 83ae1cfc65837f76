"""The desk's bot as the core sees it: what it says, the chats it is invited to, and the direct
chat it opens with each new advisor. Every word it says is an outbox row, committed with the
change the command made (and the mark of the command's Matrix event), so a reply is neither lost
nor doubled when the homeserver retries or Switchboard restarts."""

from __future__ import annotations

import dataclasses
import logging
import uuid

from ..events import AdvisorAdded, BotInvited, BotSaid, PresenceMayBeStale, PresenceUnknown
from ..model import AdvisorMxid, Presence, RoomId
from ..outbox import Attempt, Handlers, UnitOfWork
from ..ports import Advisors, MatrixGateway
from .advisors import AdvisorService

log = logging.getLogger(__name__)

HELLO = "Hello! I am the Switchboard bot. Type !help for what I can do for you."
WELCOME = (
    "You are now a Switchboard advisor. Type !available to start receiving visitors, "
    "!away to stop, and !help for everything else. Visitors arrive as room invites."
)


class BotService:
    def __init__(
        self, store: Advisors, uow: UnitOfWork, gateway: MatrixGateway, advisors: AdvisorService
    ) -> None:
        self._store = store
        self._uow = uow
        self._gateway = gateway
        self._advisors = advisors

    def register(self, handlers: Handlers) -> None:
        handlers.register(BotSaid, self._say)
        handlers.register(BotInvited, self._join)
        handlers.register(AdvisorAdded, self._welcome)
        handlers.register(PresenceUnknown, self._ask_presence)
        handlers.register(PresenceMayBeStale, self._ask_presence_again)

    async def say(self, room_id: RoomId, text: str) -> None:
        """The bot posts ``text`` in the room (a notice), in order with what it said before."""
        async with self._uow() as batch:
            batch.raise_([BotSaid(room_id, text, f"sb-say-{uuid.uuid4().hex}")])

    async def invited(self, room_id: RoomId, inviter: str) -> None:
        """Someone opened a chat with the bot: it joins and says what it is for. Anyone may;
        the commands check who may do what."""
        async with self._uow() as batch:
            batch.raise_([BotInvited(room_id, inviter)])

    async def _say(self, event: BotSaid, attempt: Attempt) -> None:
        await self._gateway.post_notice(event.room_id, event.text, event.txn_id)

    async def _join(self, event: BotInvited, attempt: Attempt) -> None:
        await self._gateway.bot_join(event.room_id)
        if await self._store.get_advisor(AdvisorMxid(event.inviter)) is not None:
            await self._advisors.set_control_room(event.inviter, event.room_id)
            # their join came before the bot's, so it was never pushed to the desk: now that
            # they share a room, their presence may be asked for
            await self._advisors.joined_a_room(event.inviter)
        await self._gateway.post_notice(event.room_id, HELLO, f"sb-hello-{event.room_id}")

    async def _welcome(self, event: AdvisorAdded, attempt: Attempt) -> None:
        """A direct chat with the new advisor, so they can talk to the bot (and the desk sees
        their presence, which the homeserver only shares with users who share a room)."""
        advisor = await self._store.get_advisor(event.advisor)
        if advisor is None:
            return  # removed again meanwhile
        room_id = advisor.control_room
        if room_id is None:
            room_id = await self._gateway.open_direct_chat(advisor.mxid)
            await self._store.save_advisor(dataclasses.replace(advisor, control_room=room_id))
        await self._gateway.post_notice(room_id, WELCOME, f"sb-welcome-{room_id}")
        await self._ask_presence_of(advisor.mxid)

    async def _ask_presence(self, event: PresenceUnknown, attempt: Attempt) -> None:
        """Ask the homeserver once for the presence of an advisor who now shares a room with
        the bot; pushed changes keep it from then on (no polling)."""
        advisor = await self._store.get_advisor(event.advisor)
        if advisor is None or advisor.presence is not Presence.UNKNOWN:
            return  # removed, or a push told us meanwhile
        await self._ask_presence_of(advisor.mxid)

    async def _ask_presence_again(self, event: PresenceMayBeStale, attempt: Attempt) -> None:
        advisor = await self._store.get_advisor(event.advisor)
        if advisor is None or advisor.presence.value != event.was:
            return  # removed, or a push told us since the question was raised
        presence = await self._gateway.presence(advisor.mxid)
        if presence is not Presence.UNKNOWN:
            await self._advisors.presence_changed(advisor.mxid, presence)

    async def _ask_presence_of(self, advisor: AdvisorMxid) -> None:
        # unknown if our homeserver has not heard of them yet (a user of another server whose
        # server has not sent their presence yet): it will be pushed to us when it does
        presence = await self._gateway.presence(advisor)
        await self._advisors.presence_changed(advisor, presence, unless_known=True)
