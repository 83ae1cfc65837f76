"""What a visitor's page asks of the desk: start, write, type, read, end, and leaving."""

from __future__ import annotations

import dataclasses
import logging
import secrets
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .. import keywords, validation
from ..errors import InvalidInput, NoOpenConversation, RateLimited
from ..events import (
    ConversationOpened,
    QueueChanged,
    VisitorEntered,
    VisitorMayHaveLeft,
    VisitorSaid,
)
from ..locks import KeyedLock
from ..logcontext import working_on
from ..model import (
    Conversation,
    ConversationId,
    ConversationStatus,
    Message,
    MessageId,
    Sender,
    Visitor,
    VisitorId,
)
from ..outbox import Attempt, Handlers, UnitOfWork
from ..ports import Clock, ConversationView, MatrixGateway, Store, VisitorChannel
from .presenter import Presenter
from .queue import QueueService

if TYPE_CHECKING:  # it imports this module (new_visitor_id)
    from .callsigns import CallSignService, PublicCallSign

log = logging.getLogger(__name__)
FORM_CLIENT_ID = "prechat-form"  # the form's first message; never a visitor's own id
QUEUED = (ConversationStatus.WAITING, ConversationStatus.INVITING)
LEFT = "The visitor left before an advisor was free."
MAX_FOUND = 10  # call signs a search shows at most


def new_visitor_id() -> VisitorId:
    # lowercase and short: it becomes part of the puppet's Matrix localpart
    return VisitorId(secrets.token_hex(8))


#: Asked before a visitor's request adds something (a rate limit): the seconds the visitor
#: must wait first, or 0.0 to go ahead (which uses up the allowance).
Admission = Callable[[], float]


def admit_all() -> float:
    return 0.0


def new_txn_id() -> str:
    return f"sb-{uuid.uuid4().hex}"


class VisitorService:
    """The portal's use cases. A visitor is known by the hash of their session cookie."""

    def __init__(
        self,
        store: Store,
        uow: UnitOfWork,
        gateway: MatrixGateway,
        channel: VisitorChannel,
        presenter: Presenter,
        queue: QueueService,
        clock: Clock,
        topics: Mapping[str, str],
        call_signs: CallSignService,
        *,
        abandon_after: float = 300.0,
    ) -> None:
        self._store = store
        self._uow = uow
        self._gateway = gateway
        self._channel = channel
        self._presenter = presenter
        self._queue = queue
        self._clock = clock
        self._topics = topics
        self._call_signs = call_signs
        self._abandon_after = abandon_after
        self._visitor_locks = KeyedLock()

    def register(self, handlers: Handlers) -> None:
        handlers.register(VisitorMayHaveLeft, self.drop_if_gone)

    async def visitor_for_session(self, session_hash: str) -> Visitor | None:
        return await self._store.visitor_by_session(session_hash)

    async def start(
        self, session_hash: str, form: Any, admit: Admission = admit_all
    ) -> tuple[Conversation, bool]:
        """Open the visitor's conversation from the pre-chat form.

        One visitor has at most one open conversation: a second start (double click, retried
        request, another tab, another process) returns the open one with ``False``. ``admit``
        is asked only when a new conversation would be created (the portal's rate limit);
        refusing raises :class:`RateLimited`. The room is made afterwards, from the outbox:
        the answer does not wait for the homeserver.

        A ``call_sign`` picked from :meth:`find_call_signs` routes the conversation to its
        advisor or group instead of by topic; one that nobody behind it could answer now (or
        that does not exist) is refused with :class:`InvalidInput` on that field.
        """
        request = validation.start_request(form, self._topics)
        async with self._visitor_locks(session_hash):
            visitor = await self._store.visitor_by_session(session_hash)
            if visitor is not None:
                current = await self._store.latest_conversation(visitor.id)
                if current is not None and current.status.is_open:
                    return current, False
            if request.call_sign is not None:
                if await self._call_signs.public(request.call_sign) is None:
                    raise InvalidInput(validation.UNREACHABLE, field="call_sign")
            wait = admit()
            if wait > 0:
                raise RateLimited(
                    "Too many new chats from your network. Please wait a minute.",
                    retry_after=wait,
                )
            now = self._clock.now()
            # the name and email given this time are the ones the advisor should see
            given = Visitor(
                visitor.id if visitor else new_visitor_id(), request.name, request.email, now
            )
            async with self._uow() as batch:
                visitor = await self._store.add_visitor(given, session_hash)
                conversation = Conversation(
                    id=ConversationId(uuid.uuid4().hex),
                    visitor_id=visitor.id,
                    topic=request.topic,
                    status=ConversationStatus.WAITING,
                    created_at=now,
                    queued_at=now,
                    call_sign=request.call_sign,
                )
                created = await self._store.add_conversation(conversation)
                if created:
                    first, _ = await self._store.add_message(
                        Message(
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
                    )
                    batch.raise_(
                        [
                            ConversationOpened(conversation.id),
                            VisitorEntered(conversation.id),
                            VisitorSaid(conversation.id, first.id),
                            QueueChanged(),  # the visitor learns their place at once
                        ]
                    )
        if not created:  # another process won the race for this visitor
            existing = await self._store.latest_conversation(visitor.id)
            assert existing is not None
            return existing, False
        working_on(conversation.id)
        log.info("conversation %s started by visitor %s", conversation.id, visitor.id)
        return conversation, True

    async def find_call_signs(
        self, query: Any, admit: Admission = admit_all
    ) -> list[PublicCallSign]:
        """The portal's search box: the call signs matching every word of ``query`` (word
        prefixes; accents and case do not count) that someone behind them could answer now,
        at most :data:`MAX_FOUND`. Nobody's Matrix id is in them. A query with no word finds
        nothing and costs nothing; ``admit`` is asked before any other (the portal's rate
        limit), and refusing raises :class:`RateLimited`."""
        text = validation.search_query(query)
        if not keywords.words(text):
            return []
        wait = admit()
        if wait > 0:
            raise RateLimited(
                "Too many searches from your network. Please wait a moment.", retry_after=wait
            )
        return await self._call_signs.search(text, limit=MAX_FOUND)

    async def offers_call_signs(self) -> bool:
        """Whether the desk has any call sign (else the page has no search box to show)."""
        return bool(await self._store.call_signs())

    async def current(self, session_hash: str) -> Conversation | None:
        visitor = await self._store.visitor_by_session(session_hash)
        if visitor is None:
            return None
        conversation = await self._store.latest_conversation(visitor.id)
        working_on(conversation.id if conversation else None)  # for the log lines that follow
        return conversation

    async def view(self, conversation: Conversation) -> ConversationView:
        return await self._presenter.view(conversation)

    async def history(self, conversation_id: ConversationId, since: int = 0) -> list[Message]:
        return await self._store.messages(conversation_id, since)

    async def changes(self, conversation_id: ConversationId, since: int) -> list[Message]:
        """The messages up to ``since`` that were edited or removed: a page that holds them
        (and reconnects with ``since``) may have missed the change."""
        return await self._store.changed_messages(conversation_id, since) if since > 0 else []

    async def _open_for(self, session_hash: str) -> Conversation:
        conversation = await self.current(session_hash)
        if conversation is None or not conversation.status.is_open:
            raise NoOpenConversation("You have no open chat. Start a new one.")
        return conversation

    async def visitor_message(
        self, session_hash: str, client_id: Any, body: Any, admit: Admission = admit_all
    ) -> Message:
        """Store the visitor's message (once per ``client_id``); the outbox relays it.

        ``admit`` is asked only for a new message, so a retry of a stored one is always
        answered; refusing raises :class:`RateLimited` and nothing is stored or sent."""
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= 64:
            raise InvalidInput("client_id must be 1 to 64 characters.", field="client_id")
        if client_id == FORM_CLIENT_ID:
            raise InvalidInput("This client_id is reserved for the form.", field="client_id")
        text = validation.message_body(body)
        conversation = await self._open_for(session_hash)
        visitor = await self._store.get_visitor(conversation.visitor_id)
        async with self._uow() as batch:
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
                # read after the append, which waits for a concurrent end to commit
                latest = await self._store.get_conversation(conversation.id)
                if latest is None or not latest.status.is_open:
                    raise NoOpenConversation("This chat has ended. Start a new one.")
                wait = admit()
                if wait > 0:  # the transaction rolls the message back
                    raise RateLimited(
                        "You are sending messages too quickly. Please wait a moment, then "
                        "send again.",
                        retry_after=wait,
                    )
                batch.raise_([VisitorSaid(conversation.id, message.id)])
        if created:
            await self._presenter.message(message)  # the visitor's other tabs
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
        return await self._queue.end(
            conversation.id, Sender.VISITOR, "The visitor ended the chat."
        )

    # -- a visitor who closed the page while queued ------------------------------------------

    async def page_closed(self, conversation_id: ConversationId) -> None:
        """The last page of the conversation open in this process closed. A visitor still
        queued when ``abandon_after`` has passed with no page open anywhere is dropped, so
        they do not keep ringing advisors."""
        working_on(conversation_id)
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is not None and conversation.status.is_open:
            # also while chatting: the visitor may be handed back to the queue later
            await self._watch_for_leaving([self._closed_now(conversation_id)])

    async def watch_queued(self) -> None:
        """At start-up: every queued visitor might have left while we were down. The count
        starts now, so a restart never drops anyone early."""
        queued = [
            c.id
            for c in await self._store.open_conversations()
            if c.status in QUEUED and c.asker is None  # a Matrix user has no page
        ]
        await self._watch_for_leaving([self._closed_now(c) for c in queued])

    def _closed_now(self, conversation_id: ConversationId) -> VisitorMayHaveLeft:
        return VisitorMayHaveLeft(
            conversation_id,
            due=self._clock.now() + self._abandon_after,
            closed_at=self._clock.now(),
            since=self._clock.monotonic(),
            clock=self._clock.monotonic_source,
        )

    async def _watch_for_leaving(self, timers: list[VisitorMayHaveLeft]) -> None:
        async with self._uow() as batch:
            batch.raise_(timers)

    def _unwatched_for(self, timer: VisitorMayHaveLeft) -> float | None:
        """How long ago the page closed, on the clock the timer and this process share: the
        monotonic one on the same machine (no step of the wall clock moves it), else the wall
        clock; None if the timer does not say."""
        if timer.since is not None and timer.clock == self._clock.monotonic_source:
            return self._clock.monotonic() - timer.since
        if timer.closed_at is not None:
            return self._clock.now() - timer.closed_at
        return None

    async def drop_if_gone(self, event: VisitorMayHaveLeft, attempt: Attempt) -> None:
        """The timer of :meth:`page_closed`: drops the visitor if they still wait with no page
        open and ``abandon_after`` has passed since the page closed; else it is set again for
        the time left (a wall clock stepped forward made it due early)."""
        conversation_id = event.conversation_id
        conversation = await self._store.get_conversation(conversation_id)
        if (
            conversation is None
            or not conversation.status.is_open
            or conversation.asker is not None
            or self._channel.is_watching(conversation_id)
        ):
            return  # ended, or back: a page that closes later sets a new timer
        if conversation.status not in QUEUED:
            # with an advisor, who closes it; if it is handed back, it counts from here on
            await self._watch_for_leaving([self._closed_now(conversation_id)])
            return
        unwatched = self._unwatched_for(event)
        if unwatched is None:  # a timer written before it said when: count from now
            await self._watch_for_leaving([self._closed_now(conversation_id)])
            return
        if unwatched < self._abandon_after:
            due = self._clock.now() + self._abandon_after - unwatched
            again = dataclasses.replace(event, due=due, again=True)
            await self._watch_for_leaving([again])
            return
        await self._queue.end(conversation_id, Sender.VISITOR, LEFT)
