"""What the core needs from the outside world, as small protocols.

``appservice`` implements :class:`MatrixGateway` and the stores, ``web_portal`` implements
:class:`VisitorChannel`; unit tests use in-memory twins from ``tests/fakes.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncContextManager, Protocol

from .model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    EventId,
    Message,
    MessageId,
    PuppetMxid,
    RoomId,
    Visitor,
    VisitorId,
)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch: for what is stored (it may step back or forward)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never step: for timing within a process."""


class Store(Protocol):
    """Persistence of visitors, conversations, messages and advisors.

    Every method is atomic on its own; :meth:`transaction` groups several into one commit.
    """

    def transaction(self) -> AsyncContextManager[None]: ...

    def exclusive(self, name: str) -> AsyncContextManager[None]:
        """A section that no other process sharing the store runs at the same time (a
        transaction holding a database lock); a no-op where only one process can share it."""

    def claim(self, name: str) -> AsyncContextManager[bool]:
        """Try to become the one process doing the work ``name``, without waiting.

        Yields True if no other process sharing the store holds the claim (it is held until
        the block ends, and the store calls made inside commit together then), False at once
        if one does. Always True where only one process can share the store: the caller's
        own lock decides there."""

    # visitors
    async def add_visitor(self, visitor: Visitor, session_hash: str) -> None: ...
    async def visitor_by_session(self, session_hash: str) -> Visitor | None: ...
    async def get_visitor(self, visitor_id: VisitorId) -> Visitor | None: ...

    # conversations
    async def add_conversation(self, conversation: Conversation) -> bool:
        """Insert; False (and nothing written) if the visitor already has an open one."""

    async def save_conversation(self, conversation: Conversation) -> None: ...
    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None: ...
    async def conversation_by_room(self, room_id: RoomId) -> Conversation | None: ...
    async def latest_conversation(self, visitor_id: VisitorId) -> Conversation | None: ...
    async def open_conversations(self) -> list[Conversation]: ...
    async def rooms_to_close(self) -> list[Conversation]:
        """Ended conversations whose Matrix room is not closed yet."""

    async def invites_to_withdraw(self) -> list[Conversation]:
        """Conversations, open or ended, with an invite to withdraw (see
        :attr:`Conversation.invites_to_withdraw`)."""

    # messages
    async def add_message(self, message: Message) -> tuple[Message, bool]:
        """Append with the next ``seq`` of its conversation (``message.seq`` is ignored).

        Idempotent: a message whose ``client_id`` (same conversation) or ``event_id`` is
        already stored is not added again; the stored one is returned with ``False``.
        """

    async def messages(self, conversation_id: ConversationId, since: int = 0) -> list[Message]: ...
    async def message_by_event(self, event_id: EventId) -> Message | None: ...
    async def mark_delivered(self, message_id: MessageId, event_id: EventId) -> None: ...
    async def undelivered_messages(self, conversation_id: ConversationId) -> list[Message]: ...
    async def conversations_with_undelivered(self) -> set[ConversationId]: ...

    def claim_undelivered(
        self, conversation_id: ConversationId
    ) -> AsyncContextManager[list[Message]]:
        """The conversation's undelivered messages, in order, for this caller alone.

        While the block runs no other process gets them (nor any later message of the same
        conversation: order matters more than speed); another caller gets an empty list.
        What the block marks delivered is committed when it ends without an error."""

    # advisors
    async def save_advisor(self, advisor: Advisor) -> None: ...
    async def get_advisor(self, mxid: AdvisorMxid) -> Advisor | None: ...
    async def remove_advisor(self, mxid: AdvisorMxid) -> bool: ...
    async def advisors(self) -> list[Advisor]: ...

    # small durable settings of the desk (e.g. the round-robin cursor)
    async def get_setting(self, key: str) -> str | None: ...
    async def set_setting(self, key: str, value: str) -> None: ...


class MatrixGateway(Protocol):
    """The Matrix side of a conversation: puppets, rooms, invites, messages."""

    async def create_puppet(self, visitor: Visitor) -> PuppetMxid:
        """Register (if needed) the visitor's puppet and set its display name."""

    async def create_room(self, puppet: PuppetMxid, name: str, topic: str) -> RoomId:
        """Create a private conversation room: the bot in it, the puppet invited."""

    async def puppet_join(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        """The puppet accepts the room's invite; harmless when it is in the room already."""

    async def post_notice(self, room_id: RoomId, text: str, txn_id: str) -> EventId:
        """A notice from the desk's bot in the room."""

    async def send_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, body: str, txn_id: str
    ) -> EventId:
        """The visitor's text, sent as their puppet with a globally unique txn id."""

    async def find_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, txn_id: str
    ) -> EventId | None:
        """The event of an earlier send with this txn id, if it reached the room.

        The homeserver forgets txn ids when it restarts, so a resend after a failure that
        may have landed looks first (each visitor text carries its txn id)."""

    async def invite_advisor(self, room_id: RoomId, advisor: AdvisorMxid) -> bool:
        """Invite the advisor; True if they are in the room already (nothing to accept)."""

    async def revoke_invite(self, room_id: RoomId, advisor: AdvisorMxid, reason: str) -> None:
        """Withdraw an invite (or remove an advisor who joined too late)."""

    async def set_visitor_typing(
        self, room_id: RoomId, puppet: PuppetMxid, typing: bool
    ) -> None: ...

    async def mark_read(self, room_id: RoomId, puppet: PuppetMxid, event_id: EventId) -> None: ...

    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None: ...


@dataclass(frozen=True)
class ConversationView:
    """What a visitor may know of their conversation."""

    id: ConversationId
    status: str
    queue_position: int | None
    advisor_name: str | None
    topic: str
    visitor_name: str
    read_up_to: int


@dataclass(frozen=True)
class MessageEvent:
    message: Message


@dataclass(frozen=True)
class StatusEvent:
    conversation: ConversationView


@dataclass(frozen=True)
class TypingEvent:
    typing: bool
    name: str


@dataclass(frozen=True)
class ReadEvent:
    up_to: int


VisitorEvent = MessageEvent | StatusEvent | TypingEvent | ReadEvent


class VisitorChannel(Protocol):
    """Live push to the visitor's open pages (the portal's websockets)."""

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None:
        """Best effort: the store, not this channel, is the record of what was said."""

    def is_watching(self, conversation_id: ConversationId) -> bool:
        """Whether the visitor has the conversation open in a page right now."""
