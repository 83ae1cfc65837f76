"""What happens in a conversation's Matrix room, as the appservice reports it: advisors join,
leave, write, type, read and close."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import NotFound
from ..logcontext import working_on
from ..model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    EventId,
    Message,
    MessageId,
    RoomId,
    Sender,
)
from ..outbox import UnitOfWork
from ..ports import MessageChangedEvent, ReadEvent, Store, TypingEvent, VisitorChannel
from .presenter import Presenter
from .queue import QueueService

log = logging.getLogger(__name__)

HANDED_BACK = "Your advisor had to leave. We are finding you another one."
ASKER_LEFT = "The visitor left the chat."
MAX_BODY = 20_000  # characters of an advisor's message the visitor gets


CHANGE_ATTEMPTS = 10  # each lost race means another process changed the message meanwhile


class _Conflict(Exception):
    """The message changed between reading it and storing its change."""


@dataclass(frozen=True)
class RoomContext:
    """The conversation of a room (if it is one) and the advisor who wrote (if they are one)."""

    conversation: Conversation | None
    advisor: Advisor | None


class RoomService:
    def __init__(
        self,
        store: Store,
        uow: UnitOfWork,
        channel: VisitorChannel,
        presenter: Presenter,
        queue: QueueService,
    ) -> None:
        self._store = store
        self._uow = uow
        self._channel = channel
        self._presenter = presenter
        self._queue = queue

    async def conversation_in(self, room_id: RoomId) -> Conversation | None:
        conversation = await self._store.conversation_by_room(room_id)
        working_on(conversation.id if conversation else None)  # for the log lines that follow
        return conversation

    async def advisor_joined(self, room_id: RoomId, advisor: AdvisorMxid) -> None:
        """An advisor who joins on the desk's offer (or a waiting visitor's room) takes the
        conversation; anyone else (a colleague's guest) is welcome and owns nothing, and one
        who joined on an invite the desk is taking back is removed by that withdrawal."""
        conversation = await self.conversation_in(room_id)
        if conversation is not None and conversation.asker != advisor:
            await self._queue.accept(conversation.id, advisor)

    async def advisor_left(self, room_id: RoomId, advisor: AdvisorMxid) -> None:
        """Leaving while invited declines the offer; leaving an active chat hands it back.
        A Matrix user who asked a call sign and leaves (or declines the invite) ends it."""
        conversation = await self.conversation_in(room_id)
        if conversation is not None and conversation.asker == advisor:
            if conversation.status.is_open:
                await self._queue.end(conversation.id, Sender.VISITOR, ASKER_LEFT)
            return
        if conversation is None or conversation.advisor != advisor:
            return
        if conversation.status is ConversationStatus.INVITING:
            await self._queue.skip(conversation.id, advisor, "Declined.")
        elif conversation.status is ConversationStatus.ACTIVE:
            await self._queue.release(conversation.id, advisor, HANDED_BACK)

    async def context(self, room_id: RoomId, sender: str) -> RoomContext:
        """Who is talking where: read once per Matrix event, for a command or a message."""
        return RoomContext(
            await self.conversation_in(room_id),
            await self._store.get_advisor(AdvisorMxid(sender)),
        )

    async def advisor_said(
        self,
        context: RoomContext,
        sender: AdvisorMxid,
        event_id: EventId,
        body: str,
        ts: float,
        *,
        emote: bool = False,
        reply_to: EventId | None = None,
    ) -> Message | None:
        """A message (or an emote, or a notice) in a conversation's room, for the visitor,
        named after its author as the visitor knows them. A reply to a message of the
        transcript quotes it (by its seq); a reply to anything else is plain text."""
        author = _author(context, sender)
        text = f"* {author} {body}" if emote else body
        quoted = None
        conversation = context.conversation
        if reply_to is not None and conversation is not None:
            original = await self._store.message_by_event(reply_to)
            if original is not None and original.conversation_id == conversation.id:
                quoted = original.seq
        return await self._append(
            conversation, sender, author, event_id, text, ts, reply_to=quoted
        )

    async def advisor_edited(
        self,
        context: RoomContext,
        sender: AdvisorMxid,
        original: EventId,
        body: str,
        ts: float,
        *,
        emote: bool = False,
    ) -> Message | None:
        """The advisor edited a message: the page shows the latest text, marked edited. An
        edit seen twice, older than the text shown, of someone else's message, of a removed
        one or after the chat ended changes nothing."""
        conversation = context.conversation
        if conversation is None or not conversation.status.is_open:
            return None
        text = f"* {_author(context, sender)} {body}" if emote else body
        return await self._change(
            conversation.id, original, lambda m: m.edit(sender, text[:MAX_BODY], ts)
        )

    async def message_removed(
        self, room_id: RoomId, event_id: EventId, ts: float
    ) -> Message | None:
        """A message was removed (redacted) in the room: it disappears from the page and its
        text from the transcript, which keeps that it was removed and when. Also after the
        chat ended: what was taken back should not stay on record."""
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None:
            return None
        return await self._change(conversation.id, event_id, lambda m: m.remove(ts))

    async def _change(
        self,
        conversation_id: ConversationId,
        event_id: EventId,
        change: Callable[[Message], Message | None],
    ) -> Message | None:
        """Apply ``change`` to the conversation's message carried by ``event_id`` and tell the
        pages. Another process changing it at the same time makes this one read it again."""
        for _ in range(CHANGE_ATTEMPTS):
            message = await self._store.message_by_event(event_id)
            if message is None or message.conversation_id != conversation_id:
                return None  # a command, the bot's notice, or not ours
            changed = change(message)
            if changed is None:
                return None
            try:
                async with self._uow():
                    if not await self._store.change_message(message, changed):
                        raise _Conflict  # rolls back, with the Matrix event's handled-mark
            except _Conflict:
                continue
            await self._channel.publish(conversation_id, MessageChangedEvent(changed))
            return changed
        raise RuntimeError(f"message {event_id} keeps changing; the homeserver will retry")

    async def advisor_message(
        self,
        room_id: RoomId,
        sender: AdvisorMxid,
        author: str,
        event_id: EventId,
        body: str,
        ts: float,
    ) -> Message | None:
        """A message from the room to the visitor; the event id makes it idempotent."""
        conversation = await self.conversation_in(room_id)
        return await self._append(conversation, sender, author, event_id, body, ts)

    async def _append(
        self,
        conversation: Conversation | None,
        sender: AdvisorMxid,
        author: str,
        event_id: EventId,
        body: str,
        ts: float,
        *,
        reply_to: int | None = None,
    ) -> Message | None:
        if conversation is None or not conversation.status.is_open:
            return None
        # a Matrix user who asked a call sign writes in the room themself
        by = Sender.VISITOR if sender == conversation.asker else Sender.ADVISOR
        async with self._uow():
            message, created = await self._store.add_message(
                Message(
                    id=MessageId(uuid.uuid4().hex),
                    conversation_id=conversation.id,
                    seq=0,
                    sender=by,
                    author=author,
                    body=body[:MAX_BODY],
                    ts=ts,
                    event_id=event_id,
                    author_id=sender,
                    reply_to=reply_to,
                )
            )
        if created:
            await self._presenter.message(message)
        return message

    async def advisor_typing(self, room_id: RoomId, typing_users: list[str]) -> None:
        conversation = await self.conversation_in(room_id)
        if conversation is None or conversation.status is not ConversationStatus.ACTIVE:
            return
        advisor = conversation.advisor
        stored = await self._store.get_advisor(advisor) if advisor else None
        await self._channel.publish(
            conversation.id,
            TypingEvent(typing=advisor in typing_users, name=stored.name if stored else "Advisor"),
        )

    async def advisor_read(self, room_id: RoomId, reader: str, event_id: EventId) -> None:
        conversation = await self.conversation_in(room_id)
        if conversation is None or reader != conversation.advisor:
            return
        if not conversation.status.is_open:
            return  # an ended conversation does not change any more
        message = await self._store.message_by_event(event_id)
        if message is None or message.conversation_id != conversation.id:
            return
        async with self._queue.exclusive():
            latest = await self._store.get_conversation(conversation.id)
            if latest is None or not latest.status.is_open or message.seq <= latest.read_up_to:
                return  # ended meanwhile, or read further already
            async with self._uow():
                await self._store.save_conversation(
                    dataclasses.replace(latest, read_up_to=message.seq)
                )
        await self._channel.publish(conversation.id, ReadEvent(up_to=message.seq))

    async def advisor_close(
        self, room_id: RoomId, advisor: AdvisorMxid, name: str
    ) -> Conversation:
        conversation = await self.conversation_in(room_id)
        if conversation is None:
            raise NotFound("This room is not a Switchboard conversation.")
        if not conversation.status.is_open:
            return conversation
        return await self._queue.end(conversation.id, Sender.ADVISOR, f"{name} ended the chat.")

    async def transcript(self, conversation_id: ConversationId) -> list[Message]:
        return await self._store.messages(conversation_id)


def _author(context: RoomContext, sender: AdvisorMxid) -> str:
    """The name the visitor knows the writer by."""
    return context.advisor.name if context.advisor else sender.lstrip("@").split(":")[0]
