"""A visitor's conversation: starting it, messages both ways, typing, receipts, the end."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import uuid
from typing import Any, Callable, Mapping

from .. import validation
from ..errors import InvalidInput, NoOpenConversation, NotFound, RateLimited, Unavailable
from ..locks import KeyedLock
from ..model import (
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    EventId,
    Message,
    MessageId,
    PuppetMxid,
    RoomId,
    Sender,
    Visitor,
    VisitorId,
)
from ..ports import (
    Clock,
    ConversationView,
    MatrixGateway,
    ReadEvent,
    Store,
    TypingEvent,
    VisitorChannel,
)
from .presenter import Presenter
from .queue import QueueService

log = logging.getLogger(__name__)
FORM_CLIENT_ID = "prechat-form"  # the form's first message; never a visitor's own id


ABANDON_SWEEP_SECONDS = 5.0


def new_visitor_id() -> VisitorId:
    # lowercase and short: it becomes part of the puppet's Matrix localpart
    return VisitorId(secrets.token_hex(8))


class ConversationService:
    """Everything a conversation does between its start and its end."""

    def __init__(
        self,
        store: Store,
        gateway: MatrixGateway,
        channel: VisitorChannel,
        presenter: Presenter,
        queue: QueueService,
        clock: Clock,
        topics: Mapping[str, str],
        *,
        abandon_after: float = 300.0,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._channel = channel
        self._presenter = presenter
        self._queue = queue
        self._clock = clock
        self._topics = topics
        self._abandon_after = abandon_after
        self._unwatched_since: dict[ConversationId, float] = {}
        self._uncertain: set[MessageId] = set()  # sends that failed: did they land or not?
        self._started_at = clock.now()
        self._next_sweep = 0.0
        self._visitor_locks = KeyedLock()
        self._conversation_locks = KeyedLock()

    # -- the visitor's side -------------------------------------------------------------

    async def visitor_for_session(self, session_hash: str) -> Visitor | None:
        return await self._store.visitor_by_session(session_hash)

    async def start(
        self, session_hash: str, form: Any, admit: Callable[[], bool] = lambda: True
    ) -> tuple[Conversation, bool]:
        """Open the visitor's conversation from the pre-chat form.

        One visitor has at most one open conversation: a second start (double click, retried
        request, another tab) returns the open one with ``False``. ``admit`` is asked only when
        a new conversation would be created (the portal's rate limit); refusing raises
        :class:`RateLimited`.
        """
        request = validation.start_request(form, self._topics)
        async with self._visitor_locks(session_hash):
            now = self._clock.now()
            visitor = await self._store.visitor_by_session(session_hash)
            if visitor is not None:
                current = await self._store.latest_conversation(visitor.id)
                if current is not None and current.status.is_open:
                    return current, False
            if not admit():
                raise RateLimited("Too many new chats from your network. Please wait a minute.")
            if visitor is None:
                visitor = Visitor(new_visitor_id(), request.name, request.email, now)
                await self._store.add_visitor(visitor, session_hash)
            conversation = Conversation(
                id=ConversationId(uuid.uuid4().hex),
                visitor_id=visitor.id,
                topic=request.topic,
                status=ConversationStatus.WAITING,
                created_at=now,
                queued_at=now,
            )
            first = Message(
                id=MessageId(uuid.uuid4().hex),
                conversation_id=conversation.id,
                seq=0,
                sender=Sender.VISITOR,
                author=request.name,
                body=request.message,
                ts=now,
                client_id=FORM_CLIENT_ID,
                txn_id=new_txn_id(),
            )
            async with self._store.transaction():
                if not await self._store.add_conversation(conversation):
                    # another process won the race for this visitor
                    existing = await self._store.latest_conversation(visitor.id)
                    assert existing is not None
                    return existing, False
                await self._store.add_message(first)
            # the name and email given this time are the ones the advisor should see
            visitor = dataclasses.replace(visitor, name=request.name, email=request.email)
        log.info("conversation %s started by visitor %s", conversation.id, visitor.id)
        try:
            await self.ensure_room(conversation.id, visitor)
        except Exception:
            # the visitor stays queued; tick() retries the room once the homeserver is back
            log.warning("could not open a room for %s yet", conversation.id, exc_info=True)
        current = await self._store.get_conversation(conversation.id)
        assert current is not None
        if current.room_id is None:
            # no room, no offer, but the visitor learns their place in the queue (whoever saves
            # the room runs the pass: another here would hold up a burst's invites)
            await self._queue.dispatch()
            current = await self._store.get_conversation(conversation.id)
            assert current is not None
        return current, True

    async def ensure_room(
        self, conversation_id: ConversationId, visitor: Visitor | None = None
    ) -> None:
        """Give the conversation its puppet and room, post the form, deliver what is pending.

        The invite goes out once the room exists (the homeserver is what a burst of visitors
        waits for); the puppet's join and the form follow, retried until ``announced``."""
        async with self._conversation_locks(conversation_id):
            conversation = await self._store.get_conversation(conversation_id)
            if conversation is None or not conversation.status.is_open:
                return
            if conversation.room_id is None:
                made = await self._make_room(conversation_id, visitor)
                if made is None:
                    return  # another process is making it; that process carries on from here
                conversation = made
                if not conversation.status.is_open:
                    return  # ended while the room was made: tick() closes the room
                await self._queue.dispatch()
            if not conversation.announced:
                assert conversation.room_id is not None and conversation.puppet is not None
                await self._gateway.puppet_join(conversation.room_id, conversation.puppet)
                visitor = visitor or await self._store.get_visitor(conversation.visitor_id)
                assert visitor is not None
                await self._gateway.post_notice(
                    conversation.room_id,
                    self._intro(visitor, conversation),
                    f"sb-intro-{conversation.id}",
                )
                conversation = await self._update(conversation_id, announced=True)
            await self._deliver_pending(conversation)

    async def _make_room(
        self, conversation_id: ConversationId, visitor: Visitor | None
    ) -> Conversation | None:
        """The conversation's puppet and room, made by one process of those sharing the store.

        Without the claim, another process's tick() sees the room missing while it is being
        made here and makes a second one; the last one stored wins, and the advisor invited to
        the first joins a room nobody knows. None if another process holds the claim."""
        async with self._store.claim(f"room:{conversation_id}") as mine:
            if not mine:
                return None
            conversation = await self._store.get_conversation(conversation_id)
            assert conversation is not None
            if conversation.room_id is not None:
                return conversation  # made by another process just before the claim
            visitor = visitor or await self._store.get_visitor(conversation.visitor_id)
            assert visitor is not None
            puppet = await self._gateway.create_puppet(visitor)
            room_id = await self._gateway.create_room(
                puppet,
                name=f"{visitor.name} (visitor)",
                topic=f"Switchboard: {self._presenter.topic_label(conversation.topic)}",
            )
            conversation = await self._update(conversation_id, puppet=puppet, room_id=room_id)
        log.info("room %s made for conversation %s", room_id, conversation_id)
        return conversation

    async def _update(self, conversation_id: ConversationId, **changes: Any) -> Conversation:
        """Change fields of the stored conversation under the status lock (others may have
        changed it meanwhile: the fresh row is the base)."""
        async with self._queue.exclusive():
            latest = await self._store.get_conversation(conversation_id)
            assert latest is not None
            updated = dataclasses.replace(latest, **changes)
            await self._store.save_conversation(updated)
        return updated

    def _intro(self, visitor: Visitor, conversation: Conversation) -> str:
        lines = [
            f"New visitor: {visitor.name}",
            f"Email: {visitor.email or '(not given)'}",
            f"Topic: {self._presenter.topic_label(conversation.topic)}",
            "Type !close to end the chat, or !help for commands.",
        ]
        return "\n".join(lines)

    async def _deliver_pending(self, conversation: Conversation) -> None:
        """Send the visitor's undelivered messages to the room, in order, each exactly once.

        The txn id was fixed when the message was stored, so a resend after a crash is
        de-duplicated by the homeserver.
        """
        if conversation.room_id is None or conversation.puppet is None:
            return
        failure: Exception | None = None
        async with self._store.claim_undelivered(conversation.id) as batch:
            for message in batch:
                try:
                    await self._deliver(conversation.room_id, conversation.puppet, message)
                except Exception as e:
                    failure = e  # keep what was delivered before it; the rest waits
                    break
        if failure is not None:
            raise failure

    async def _deliver(self, room_id: RoomId, puppet: PuppetMxid, message: Message) -> None:
        assert message.txn_id is not None
        event_id = None
        if message.id in self._uncertain or message.ts < self._started_at:
            # an earlier attempt (here, or before a restart) may have landed
            event_id = await self._gateway.find_visitor_text(room_id, puppet, message.txn_id)
        if event_id is None:
            self._uncertain.add(message.id)
            event_id = await self._gateway.send_visitor_text(
                room_id, puppet, message.body, message.txn_id
            )
        await self._store.mark_delivered(message.id, event_id)
        self._uncertain.discard(message.id)

    async def current(self, session_hash: str) -> Conversation | None:
        visitor = await self._store.visitor_by_session(session_hash)
        if visitor is None:
            return None
        return await self._store.latest_conversation(visitor.id)

    async def view(self, conversation: Conversation) -> ConversationView:
        return await self._presenter.view(conversation)

    async def history(self, conversation_id: ConversationId, since: int = 0) -> list[Message]:
        return await self._store.messages(conversation_id, since)

    async def _open_for(self, session_hash: str) -> Conversation:
        conversation = await self.current(session_hash)
        if conversation is None or not conversation.status.is_open:
            raise NoOpenConversation("You have no open chat. Start a new one.")
        return conversation

    async def visitor_message(self, session_hash: str, client_id: Any, body: Any) -> Message:
        """Store the visitor's message (once per ``client_id``) and relay it to the room."""
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
            raise InvalidInput("client_id must be 1 to 64 characters.", field="client_id")
        if client_id == FORM_CLIENT_ID:
            raise InvalidInput("This client_id is reserved for the form.", field="client_id")
        text = validation.message_body(body)
        conversation = await self._open_for(session_hash)
        visitor = await self._store.get_visitor(conversation.visitor_id)
        message, created = await self._store.add_message(
            Message(
                id=MessageId(uuid.uuid4().hex),
                conversation_id=conversation.id,
                seq=0,
                sender=Sender.VISITOR,
                author=visitor.name if visitor else "Visitor",
                body=text,
                ts=self._clock.now(),
                client_id=client_id,
                txn_id=new_txn_id(),
            )
        )
        if created:
            await self._presenter.message(message)  # the visitor's other tabs
        try:
            await self.ensure_room(conversation.id)
        except Exception as e:
            log.warning("relaying to %s failed; will retry", conversation.id, exc_info=True)
            raise Unavailable("Saved, but not delivered yet: we will keep trying.") from e
        return message

    async def visitor_typing(self, session_hash: str, typing: Any) -> None:
        conversation = await self._open_for(session_hash)
        if conversation.room_id and conversation.puppet:
            await self._gateway.set_visitor_typing(
                conversation.room_id, conversation.puppet, bool(typing)
            )

    async def visitor_read(self, session_hash: str, up_to: Any) -> None:
        """The visitor saw the advisor's messages up to ``up_to``: a read receipt in Matrix."""
        if not isinstance(up_to, int) or isinstance(up_to, bool) or not 1 <= up_to <= 2**31:
            raise InvalidInput("up_to must be a message number.", field="up_to")
        conversation = await self._open_for(session_hash)
        if conversation.room_id is None or conversation.puppet is None:
            return
        seen = [
            m
            for m in await self._store.messages(conversation.id, max(0, up_to - 50))
            if m.seq <= up_to and m.sender is Sender.ADVISOR and m.event_id
        ]
        if seen:
            assert seen[-1].event_id is not None
            await self._gateway.mark_read(
                conversation.room_id, conversation.puppet, seen[-1].event_id
            )

    async def visitor_end(self, session_hash: str) -> Conversation:
        conversation = await self.current(session_hash)
        if conversation is None:
            raise NoOpenConversation("You have no chat to end.")
        if not conversation.status.is_open:
            return conversation
        ended = await self._queue.end(
            conversation.id, Sender.VISITOR, "The visitor ended the chat."
        )
        await self._close_room_soon(ended.id)
        return ended

    # -- the advisor's side (events from Matrix) ----------------------------------------

    async def conversation_in(self, room_id: RoomId) -> Conversation | None:
        return await self._store.conversation_by_room(room_id)

    async def advisor_joined(self, room_id: RoomId, advisor: AdvisorMxid) -> None:
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None:
            return
        # anyone else an advisor invited (a colleague) is welcome and owns nothing; one who
        # joined on an invite the desk took back (its withdrawal failed so far) is removed
        if not await self._queue.accept(conversation.id, advisor):
            await self._queue.withdraw_invites(conversation.id)

    async def advisor_left(self, room_id: RoomId, advisor: AdvisorMxid) -> None:
        """Leaving while invited declines the offer; leaving an active chat hands it back."""
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None or conversation.advisor != advisor:
            return
        if conversation.status is ConversationStatus.INVITING:
            await self._queue.skip(conversation.id, advisor, reason="Declined.")
        elif conversation.status is ConversationStatus.ACTIVE:
            await self._queue.release(
                conversation.id,
                advisor,
                "Your advisor had to leave. We are finding you another one.",
            )

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
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None or not conversation.status.is_open:
            return None
        message, created = await self._store.add_message(
            Message(
                id=MessageId(uuid.uuid4().hex),
                conversation_id=conversation.id,
                seq=0,
                sender=Sender.ADVISOR,
                author=author,
                body=body,
                ts=ts,
                event_id=event_id,
                delivered=True,
            )
        )
        if created:
            await self._presenter.message(message)
        return message

    async def advisor_typing(self, room_id: RoomId, typing_users: list[str]) -> None:
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None or conversation.status is not ConversationStatus.ACTIVE:
            return
        advisor = conversation.advisor
        stored = await self._store.get_advisor(advisor) if advisor else None
        await self._channel.publish(
            conversation.id,
            TypingEvent(typing=advisor in typing_users, name=stored.name if stored else "Advisor"),
        )

    async def advisor_read(self, room_id: RoomId, reader: str, event_id: EventId) -> None:
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None or reader != conversation.advisor:
            return
        if not conversation.status.is_open:
            return  # an ended conversation does not change any more
        message = await self._store.message_by_event(event_id)
        if message is None or message.conversation_id != conversation.id:
            return
        async with self._queue.exclusive():
            latest = await self._store.get_conversation(conversation.id)
            if latest is None or message.seq <= latest.read_up_to:
                return
            await self._store.save_conversation(
                dataclasses.replace(latest, read_up_to=message.seq)
            )
        await self._channel.publish(conversation.id, ReadEvent(up_to=message.seq))

    async def advisor_close(
        self, room_id: RoomId, advisor: AdvisorMxid, name: str
    ) -> Conversation:
        conversation = await self._store.conversation_by_room(room_id)
        if conversation is None:
            raise NotFound("This room is not a Switchboard conversation.")
        if not conversation.status.is_open:
            return conversation
        ended = await self._queue.end(conversation.id, Sender.ADVISOR, f"{name} ended the chat.")
        await self._close_room_soon(ended.id)
        return ended

    async def _close_room_soon(self, conversation_id: ConversationId) -> None:
        try:
            await self.close_room(conversation_id)
        except Exception:
            log.warning(
                "closing the room of %s failed; will retry", conversation_id, exc_info=True
            )

    async def close_room(self, conversation_id: ConversationId) -> None:
        """The Matrix side of an end, until done: what the visitor still had on its way is
        delivered, the room is told how it ended, and the puppet leaves."""
        async with self._conversation_locks(conversation_id):
            conversation = await self._store.get_conversation(conversation_id)
            if (
                conversation is None
                or conversation.status.is_open
                or conversation.room_closed
                or conversation.room_id is None
                or conversation.puppet is None
            ):
                return
            if not conversation.announced:
                # ended before the puppet joined: it joins to deliver what is pending, then leaves
                await self._gateway.puppet_join(conversation.room_id, conversation.puppet)
            await self._deliver_pending(conversation)
            notes = [
                m for m in await self._store.messages(conversation.id) if m.sender is Sender.SYSTEM
            ]
            note = notes[-1].body if notes else "The chat has ended."
            await self._gateway.post_notice(
                conversation.room_id,
                f"{note} The transcript is saved.",
                f"sb-end-{conversation.id}",
            )
            await self._gateway.puppet_leave(conversation.room_id, conversation.puppet)
            await self._update(conversation_id, room_closed=True)

    # -- housekeeping -------------------------------------------------------------------

    async def tick(self) -> None:
        """Repair and time-driven work: expired offers, rooms not yet made, undelivered text,
        visitors who left before anyone answered, rooms and invites not closed yet."""
        snapshot = await self._store.open_conversations()  # read once per tick: it is the cost
        expired = await self._queue.expire_offers(snapshot)
        if self._clock.monotonic() >= self._next_sweep:
            self._next_sweep = self._clock.monotonic() + ABANDON_SWEEP_SECONDS
            await self._drop_abandoned(snapshot)
        pending = await self._store.conversations_with_undelivered()
        repairs = [c for c in snapshot if c.room_id is None or not c.announced or c.id in pending]
        for conversation in repairs:
            try:
                await self.ensure_room(conversation.id)
            except Exception:
                log.warning("retrying %s failed again", conversation.id, exc_info=True)
        for ended in await self._store.rooms_to_close():
            await self._close_room_soon(ended.id)
        await self._queue.retry_withdrawals()
        if repairs or expired:
            snapshot = await self._store.open_conversations()
        if await self._queue.could_offer(snapshot):
            await self._queue.dispatch()  # a safety net: events dispatch as they happen

    async def _drop_abandoned(self, snapshot: list[Conversation]) -> None:
        """A visitor who closed the page while still queued is not left ringing advisors.

        Only waiting and offered conversations are dropped; a conversation with an advisor is
        theirs to close. The clock starts when this process first sees the page gone, so a
        restart never drops anyone early.
        """
        now = self._clock.monotonic()  # a step of the wall clock must not drop anybody
        queued = {
            c.id
            for c in snapshot
            if c.status in (ConversationStatus.WAITING, ConversationStatus.INVITING)
        }
        for conversation_id in list(self._unwatched_since):
            if conversation_id not in queued or self._channel.is_watching(conversation_id):
                del self._unwatched_since[conversation_id]
        for conversation_id in queued:
            if self._channel.is_watching(conversation_id):
                continue
            since = self._unwatched_since.setdefault(conversation_id, now)
            if now - since >= self._abandon_after:
                del self._unwatched_since[conversation_id]
                note = "The visitor left before an advisor was free."
                await self._queue.end(conversation_id, Sender.VISITOR, note)
                await self._close_room_soon(conversation_id)

    async def transcript(self, conversation_id: ConversationId) -> list[Message]:
        return await self._store.messages(conversation_id)


def new_txn_id() -> str:
    return f"sb-{uuid.uuid4().hex}"
