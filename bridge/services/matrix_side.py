"""The handlers of the domain events: what the Matrix side of a conversation does, run from the
outbox (see :mod:`bridge.outbox`). Each is idempotent: it reads the current state and does only
what is still to do, so a retry, or a row run again after a crash, changes nothing twice."""

from __future__ import annotations

import logging
from typing import Callable

from ..errors import IllegalTransition, TemporarilyUnavailable
from ..events import (
    AdvisorArrived,
    ConversationEnded,
    ConversationOpened,
    InviteWithdrawn,
    Offered,
    OfferExpires,
    QueueChanged,
    VisitorEntered,
    VisitorSaid,
)
from ..model import (
    AdvisorMxid,
    Conversation,
    ConversationStatus,
    PuppetMxid,
    Sender,
    Transition,
    Visitor,
)
from ..outbox import Attempt, Handlers
from ..ports import Clock, DeskMetrics, MatrixGateway, NoMetrics, Store
from .presenter import Presenter
from .queue import QueueService

log = logging.getLogger(__name__)

TransitionFn = Callable[[Conversation], Transition]


class MatrixSide:
    def __init__(
        self,
        store: Store,
        gateway: MatrixGateway,
        queue: QueueService,
        presenter: Presenter,
        clock: Clock,
        metrics: DeskMetrics | None = None,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._queue = queue
        self._presenter = presenter
        self._clock = clock
        self._metrics = metrics or NoMetrics()

    def register(self, handlers: Handlers) -> None:
        handlers.register(ConversationOpened, self.open_room)
        handlers.register(VisitorEntered, self.enter)
        handlers.register(VisitorSaid, self.relay)
        handlers.register(ConversationEnded, self.close_room)
        handlers.register(AdvisorArrived, self.brief)
        handlers.register(Offered, self.invite)
        handlers.register(InviteWithdrawn, self.withdraw)
        handlers.register(OfferExpires, self.offer_expires)
        handlers.register(QueueChanged, self.route)

    async def open_room(self, event: ConversationOpened, attempt: Attempt) -> None:
        """The visitor's puppet and room (for a Matrix user who asked a call sign: the room,
        with them invited). Once it is stored, the routing pass may invite an advisor, ahead
        of the puppet's join and the form (:meth:`enter`)."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or conversation.room_id is not None:
            return  # made already (this row ran before a crash)
        visitor = await self._store.get_visitor(conversation.visitor_id)
        assert visitor is not None
        if not conversation.status.is_open:
            if attempt.retried:
                await self._attach_room_made_before(conversation, visitor)
            return  # ended before it had a room: the transcript is all there is
        puppet = await self._puppet_of(conversation, visitor)
        if conversation.call_sign is not None:
            name = f"{visitor.name} ({conversation.call_sign})"
            about = f"call sign {conversation.call_sign}"
        else:
            name = f"{visitor.name} (visitor)"
            about = self._presenter.topic_label(conversation.topic)
        room_id = await self._gateway.create_room(
            # a Matrix user is invited by the answer to their ask (AskerAnswered, next on this
            # key), where an invite their homeserver refuses ends the chat; createRoom would
            # fail whole
            puppet,
            name=name,
            topic=f"Switchboard: {about}",
            key=room_key(conversation),
        )
        if await self._queue.change(conversation.id, lambda c: c.room_made(puppet, room_id)):
            log.info("room %s made for conversation %s", room_id, conversation.id)

    async def _puppet_of(self, conversation: Conversation, visitor: Visitor) -> PuppetMxid | None:
        """The visitor's puppet, registered now; none for a Matrix user, who is themself."""
        if conversation.asker is not None:
            return None
        return await self._gateway.create_puppet(visitor)

    async def _attach_room_made_before(self, conversation: Conversation, visitor: Visitor) -> None:
        """An earlier try may have made the room (then died, or lost the answer) before the
        chat ended: it is attached, so that the close (the next row of this conversation)
        tells the room and the puppet leaves it."""
        room_id = await self._gateway.find_room(room_key(conversation))
        if room_id is not None:
            puppet = await self._puppet_of(conversation, visitor)
            await self._queue.change(conversation.id, lambda c: c.room_made(puppet, room_id))

    async def enter(self, event: VisitorEntered, attempt: Attempt) -> None:
        """The puppet joins the room and the form's answers are posted (a fixed txn id: a
        retry is not posted twice)."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or conversation.room_id is None:
            return
        visitor = await self._store.get_visitor(conversation.visitor_id)
        assert visitor is not None
        if conversation.puppet is not None:
            await self._gateway.puppet_join(conversation.room_id, conversation.puppet)
        elif conversation.asker is None:
            return
        await self._gateway.post_notice(
            conversation.room_id, self._intro(visitor, conversation), f"sb-intro-{conversation.id}"
        )

    def _intro(
        self, visitor: Visitor, conversation: Conversation, message: str | None = None
    ) -> str:
        if conversation.asker is not None:
            lines = [
                f"New visitor: {visitor.name} ({conversation.asker}), from Matrix",
                f"Asked for: call sign {conversation.call_sign}",
                f"{visitor.name}: an advisor joins you in this room as soon as one is free; "
                "you may write already. Leaving the room ends the chat.",
            ]
        else:
            lines = [
                f"New visitor: {visitor.name}",
                f"Email: {visitor.email or '(not given)'}",
                f"Topic: {self._presenter.topic_label(conversation.topic)}",
            ]
            if conversation.call_sign is not None:
                lines.append(f"Asked for: call sign {conversation.call_sign}")
        if message is not None:  # for an advisor who cannot see the visitor's first words
            lines.append(f"Message: {message}")
        lines.append("Type !close to end the chat, or !help for commands.")
        return "\n".join(lines)

    async def brief(self, event: AdvisorArrived, attempt: Attempt) -> None:
        """An advisor on another homeserver took the conversation: the form's answers are
        posted again, below their join (their client shows nothing from before it). Once per
        arrival (the txn id names the version); nothing for an advisor on the desk's server,
        nor once the conversation moved on."""
        if self._gateway.is_local(event.advisor):
            return
        conversation = await self._store.get_conversation(event.conversation_id)
        if (
            conversation is None
            or conversation.version != event.version
            or conversation.room_id is None
        ):
            return  # handed back, ended or taken again since
        visitor = await self._store.get_visitor(conversation.visitor_id)
        assert visitor is not None
        first = next(
            (m for m in await self._store.messages(conversation.id) if m.sender is Sender.VISITOR),
            None,
        )
        said = first.body if first is not None and first.removed_at is None else None
        text = self._intro(visitor, conversation, said)
        await self._gateway.post_notice(
            conversation.room_id, text, f"sb-brief-{conversation.id}-{event.version}"
        )

    async def relay(self, event: VisitorSaid, attempt: Attempt) -> None:
        """The visitor's text, sent as their puppet. Its txn id was fixed when it was stored;
        a retry first looks for it in the room (the homeserver forgets txn ids)."""
        message = await self._store.get_message(event.message_id)
        if message is None or message.event_id is not None:
            return
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or conversation.room_id is None or conversation.puppet is None:
            return  # ended before it had a room: the transcript keeps it
        assert message.txn_id is not None
        room_id, puppet = conversation.room_id, conversation.puppet
        found = None
        if attempt.retried:
            found = await self._gateway.find_visitor_text(room_id, puppet, message.txn_id)
        event_id = found or await self._gateway.send_visitor_text(
            room_id, puppet, message.body, message.txn_id
        )
        await self._store.set_message_event(message.id, event_id)

    async def close_room(self, event: ConversationEnded, attempt: Attempt) -> None:
        """The room is told how the chat ended, and the puppet leaves. Runs after every earlier
        row of the conversation: the visitor's last words are in the room before it closes."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or conversation.room_id is None:
            return
        if conversation.puppet is None and conversation.asker is None:
            return
        notes = [
            m for m in await self._store.messages(conversation.id) if m.sender is Sender.SYSTEM
        ]
        note = notes[-1].body if notes else "The chat has ended."
        await self._gateway.post_notice(
            conversation.room_id, f"{note} The transcript is saved.", f"sb-end-{conversation.id}"
        )
        if conversation.puppet is not None:
            await self._gateway.puppet_leave(conversation.room_id, conversation.puppet)
        elif conversation.asker is not None:
            # the Matrix user keeps what was said; asking again opens a new conversation
            await self._gateway.revoke_invite(
                conversation.room_id,
                AdvisorMxid(conversation.asker),
                "The chat has ended; ask again for a new one.",
            )
        await self._gateway.forget_room_key(room_key(conversation))

    async def invite(self, event: Offered, attempt: Attempt) -> None:
        """Invite the advisor the visitor is offered to, unless the offer moved on. An invite
        the homeserver refuses hands the visitor to the next advisor."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if (
            conversation is None
            or conversation.version != event.version
            or conversation.status is not ConversationStatus.INVITING
            or conversation.room_id is None
        ):
            return  # taken back, ended or offered again since: nothing to invite to
        try:
            present = await self._gateway.invite_advisor(conversation.room_id, event.advisor)
        except TemporarilyUnavailable:
            raise
        except Exception as e:
            log.warning("inviting %s to %s failed: %s", event.advisor, conversation.id, e)
            await self._queue.change(
                conversation.id,
                _at(event.version, lambda c: c.skip(event.advisor, "The invite failed.")),
            )
            return
        self._metrics.invite_sent(max(0.0, self._clock.now() - conversation.created_at))
        if present:  # in the room already: no join will come
            await self._queue.accept(conversation.id, event.advisor)

    async def withdraw(self, event: InviteWithdrawn, attempt: Attempt) -> None:
        """Take the invite back (or remove an advisor who joined on it too late)."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or conversation.room_id is None:
            return
        if (
            conversation.status is ConversationStatus.ACTIVE
            and conversation.advisor == event.advisor
        ):
            return  # theirs now (they were offered it again and took it)
        await self._gateway.revoke_invite(conversation.room_id, event.advisor, event.reason)
        log.info("withdrew the invite of %s to %s", event.advisor, conversation.id)

    async def offer_expires(self, event: OfferExpires, attempt: Attempt) -> None:
        await self._queue.change(
            event.conversation_id,
            _at(
                event.version,
                lambda c: c.skip(event.advisor, "The invitation was not accepted in time."),
            ),
        )

    async def route(self, event: QueueChanged, attempt: Attempt) -> None:
        await self._queue.route()


def room_key(conversation: Conversation) -> str:
    """The key that makes the room of a conversation once, however often it is tried."""
    return f"conv_{conversation.id}"


def _at(version: int, transition: TransitionFn) -> TransitionFn:
    """``transition``, only if the conversation is still at ``version`` (a decision taken then)."""

    def at(conversation: Conversation) -> Transition:
        if conversation.version != version:
            raise IllegalTransition(f"conversation {conversation.id} moved on from {version}")
        return transition(conversation)

    return at
