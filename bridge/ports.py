"""What the core needs from the outside world, as small protocols.

``appservice`` implements :class:`MatrixGateway` and the stores, ``web_portal`` implements
:class:`VisitorChannel`; unit tests use in-memory twins from ``tests/fakes.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncContextManager, Collection, Protocol, Sequence

from .callsigns import CallSign
from .events import DomainEvent
from .groups import Group, GroupId, Membership
from .model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    EventId,
    Message,
    MessageId,
    Presence,
    PuppetMxid,
    RoomId,
    Visitor,
    VisitorId,
)


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch: for what is stored (it may step back or forward)."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary start that never step: for timing on one machine."""

    @property
    def monotonic_source(self) -> str:
        """Names the start of :meth:`monotonic`: clocks with the same source (the processes of
        one machine, since it booted) count from the same start, so their readings compare."""


class Transactions(Protocol):
    """What groups the store's calls: one commit, one process at a time, the outbox.

    Every method of the stores below is atomic on its own; :meth:`transaction` groups several
    into one commit.
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

    # the homeserver events already acted on (the appservice's idempotency log)
    async def mark_event_handled(self, event_id: str) -> None:
        """Record the Matrix event as handled; inside a transaction, it commits with it."""

    @property
    def outbox(self) -> OutboxStore: ...


class Visitors(Protocol):
    """The visitor aggregate: who they said they are, and the sessions bound to them."""

    async def add_visitor(self, visitor: Visitor, session_hash: str) -> Visitor:
        """Insert or update the visitor and bind the session to them, unless the session is
        bound already (another process won the race): the bound visitor is returned."""

    async def visitor_by_session(self, session_hash: str) -> Visitor | None: ...
    async def get_visitor(self, visitor_id: VisitorId) -> Visitor | None: ...
    async def get_visitors(self, visitor_ids: Collection[VisitorId]) -> dict[VisitorId, Visitor]:
        """The visitors of these ids that exist, in one go (a routing pass tells thousands)."""


class Conversations(Protocol):
    """The conversation aggregate (its status, room, advisor and version)."""

    async def add_conversation(self, conversation: Conversation) -> bool:
        """Insert; False (and nothing written) if the visitor already has an open one."""

    async def save_conversation(self, conversation: Conversation) -> None: ...
    async def save_conversations(self, conversations: Sequence[Conversation]) -> None:
        """Save each (a routing pass saves its offers together)."""

    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None: ...
    async def conversation_by_room(self, room_id: RoomId) -> Conversation | None: ...
    async def latest_conversation(self, visitor_id: VisitorId) -> Conversation | None: ...
    async def open_conversations(self) -> list[Conversation]: ...


class Messages(Protocol):
    """A conversation's transcript, numbered by ``seq`` (what the page pages through)."""

    async def add_message(self, message: Message) -> tuple[Message, bool]:
        """Append with the next ``seq`` of its conversation (``message.seq`` is ignored).

        Idempotent: a message whose ``client_id`` (same conversation) or ``event_id`` is
        already stored is not added again; the stored one is returned with ``False``.
        """

    async def messages(self, conversation_id: ConversationId, since: int = 0) -> list[Message]: ...
    async def message_by_event(self, event_id: EventId) -> Message | None: ...
    async def get_message(self, message_id: MessageId) -> Message | None: ...
    async def set_message_event(self, message_id: MessageId, event_id: EventId) -> None:
        """Record the Matrix event that carries the message (it reached the room)."""

    async def change_message(self, before: Message, after: Message) -> bool:
        """Store ``after`` (an edit or a removal of ``before``: its body, ``edited_at`` and
        ``removed_at``) unless the stored message is no longer ``before`` (another process
        changed it first: False, read it again and decide anew)."""

    async def changed_messages(self, conversation_id: ConversationId, up_to: int) -> list[Message]:
        """The conversation's edited or removed messages with ``seq <= up_to``, in order: what
        a page that has those messages may show in an older state."""


class Advisors(Protocol):
    """The advisor aggregate: availability, presence, capacity, direct chat."""

    async def save_advisor(self, advisor: Advisor) -> None: ...
    async def get_advisor(self, mxid: AdvisorMxid) -> Advisor | None: ...
    async def remove_advisor(self, mxid: AdvisorMxid) -> bool: ...
    async def advisors(self) -> list[Advisor]: ...
    async def advisor_seen(self, mxid: AdvisorMxid, at: float) -> None:
        """Record a proof of life (only ``last_seen_at``, and only forward: a save of the
        advisor read earlier does not take it back)."""


class Groups(Protocol):
    """The group aggregate: the tree of advisor groups and who belongs to which."""

    async def groups(self) -> list[Group]: ...
    async def get_group(self, group_id: GroupId) -> Group | None: ...
    async def add_group(self, group: Group) -> None: ...
    async def save_group(self, group: Group) -> None:
        """Overwrite name, parent, space and isolated flag of an existing group."""

    async def remove_group(self, group_id: GroupId) -> None:
        """The group goes, with its membership rows."""

    async def members_of(self, group_id: GroupId) -> list[Membership]: ...
    async def memberships_of(self, advisor: AdvisorMxid) -> list[Membership]: ...
    async def save_membership(self, membership: Membership) -> None:
        """Insert the membership, or overwrite the role of an existing one."""

    async def remove_membership(self, group_id: GroupId, advisor: AdvisorMxid) -> None: ...


class CallSigns(Protocol):
    """The call-sign aggregate: call signs, and the direct chats Matrix users opened with
    their users (where asking again is a message)."""

    async def call_signs(self) -> list[CallSign]: ...
    async def get_call_sign(self, sign: str) -> CallSign | None: ...
    async def call_sign_by_lobby(self, lobby_id: RoomId) -> CallSign | None: ...
    async def save_call_sign(self, call_sign: CallSign) -> None:
        """Insert, or overwrite the target, keywords, listing and lobby of an existing one."""

    async def remove_call_sign(self, sign: str) -> bool: ...
    async def lobby_found(self, sign: str, lobby_id: RoomId) -> None:
        """Store the call sign's lobby if none is stored yet (only that column: a concurrent
        change of its target or keywords stays)."""

    async def add_call_sign_chat(self, room_id: RoomId, sign: str, user: str) -> None:
        """Remember that ``user`` opened the direct chat ``room_id`` with the call sign's
        user (again: overwritten)."""

    async def call_sign_chat(self, room_id: RoomId) -> tuple[str, str] | None:
        """(sign, user) of a direct chat with a call sign's user, if ``room_id`` is one."""


class Settings(Protocol):
    """Small durable settings of the desk (e.g. the round-robin cursor)."""

    async def get_setting(self, key: str) -> str | None: ...
    async def set_setting(self, key: str, value: str) -> None: ...


class Store(
    Transactions,
    Visitors,
    Conversations,
    Messages,
    Advisors,
    Groups,
    CallSigns,
    Settings,
    Protocol,
):
    """Persistence of the desk, one port per aggregate; the adapters implement them all on
    one database, so that a transaction can span them."""


@dataclass(frozen=True)
class OutboxRow:
    """A domain event waiting for (or parked from) its handler.

    ``tries``: how often it was claimed (a crash counts: the handler may have run);
    ``failures``: permanent failures so far (a homeserver outage is not one)."""

    id: int
    key: str
    kind: str
    payload: str
    due_at: float
    created_at: float
    tries: int = 0
    failures: int = 0
    parked: bool = False
    last_error: str | None = None
    priority: int = 1


class OutboxStore(Protocol):
    """The outbox table: domain events committed with the state that raised them, claimed by
    the dispatcher with a short lease (no lock is held while a handler runs)."""

    async def add(self, events: Sequence[DomainEvent], now: float) -> None:
        """Append the events (in the caller's transaction, if any)."""

    async def claim(
        self,
        worker: str,
        now: float,
        lease_until: float,
        limit: int,
        max_priority: int | None = None,
    ) -> list[OutboxRow]:
        """Up to ``limit`` due rows, each the oldest not-done row of its key and not leased by
        anyone, leased to ``worker`` until ``lease_until``; lowest priority number first, then
        the earliest due; only rows of priority ≤ ``max_priority`` if given."""

    async def renew(self, worker: str, lease_until: float) -> None: ...
    async def done(self, row_id: int, now: float) -> None: ...
    async def retry(self, row_id: int, due_at: float, failures: int, error: str | None) -> None:
        """Release the claim; the row is due again at ``due_at``."""

    async def park(self, row_id: int, failures: int, error: str) -> None:
        """Stop trying: the row, and the later rows of its key, wait for an admin."""

    async def pending(self, key: str, kind: str) -> bool:
        """Whether a row of ``kind`` and ``key`` is not done yet (pending or parked)."""

    async def parked(self) -> list[OutboxRow]: ...
    async def unpark(self, row_id: int, now: float) -> bool: ...
    async def discard(self, row_id: int, now: float) -> bool: ...
    async def next_due(self) -> float | None:
        """The earliest due time of a pending row, or None if none is pending."""

    async def rebase(self, now: float, lease: float | None = None, step: float = 0.0) -> int:
        """The clock stepped back: a row due further ahead than the delay it was given is
        due that delay from now, and no claim lasts beyond ``lease`` from now. A claim made
        before a step back of ``step`` seconds (known when it was seen happen) keeps only what
        was left of it. Returns how many rows moved."""

    async def release_claims(self) -> None:
        """Forget every lease (at start-up, where this process is the only one)."""

    async def prune(self, older_than: float) -> None: ...


@dataclass(frozen=True)
class SpaceState:
    """A space as the bot reads it: its links (``m.space.child`` state keys with content,
    ``m.space.parent`` likewise) and who is joined or invited."""

    children: frozenset[RoomId]
    parents: frozenset[RoomId]
    members: frozenset[AdvisorMxid]


class MatrixGateway(Protocol):
    """The Matrix side of a conversation: puppets, rooms, invites, messages.

    A failure the homeserver may get over (unreachable, 5xx, 429) raises
    :class:`~bridge.errors.TemporarilyUnavailable`; anything else is a refusal."""

    async def create_puppet(self, visitor: Visitor) -> PuppetMxid:
        """Register (if needed) the visitor's puppet and set its display name."""

    async def create_room(self, invitee: str | None, name: str, topic: str, key: str) -> RoomId:
        """Create a private conversation room: the bot in it, ``invitee`` (the visitor's
        puppet; None for a Matrix user who asked a call sign, invited later) invited.

        Idempotent per ``key``: a room made under the same key before (its answer lost, or the
        process died before storing it) is returned, with the invitee invited, not made
        again."""

    async def find_room(self, key: str) -> RoomId | None:
        """The room made under ``key`` before, if there is one."""

    async def forget_room_key(self, key: str) -> None:
        """Let ``key`` go once its room is closed (done already when it is not held)."""

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
        """Withdraw an invite (or remove an advisor who joined too late); done already when
        they are neither invited nor in the room."""

    async def set_visitor_typing(
        self, room_id: RoomId, puppet: PuppetMxid, typing: bool
    ) -> None: ...

    async def mark_read(self, room_id: RoomId, puppet: PuppetMxid, event_id: EventId) -> None: ...

    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None: ...

    async def bot_join(self, room_id: RoomId) -> None:
        """The desk's bot accepts an invite to the room."""

    async def open_direct_chat(self, advisor: AdvisorMxid) -> RoomId:
        """A direct chat between the bot and the advisor (who is invited to it)."""

    async def presence(self, user: AdvisorMxid) -> Presence:
        """The user's Matrix presence as the homeserver knows it now."""

    async def create_space(self, name: str, key: str) -> RoomId:
        """An invite-only Matrix space made by the bot, once per ``key`` (like ``create_room``:
        a retry finds the space made before)."""

    async def link_space(self, parent: RoomId, child: RoomId) -> None:
        """``m.space.child`` in the parent and ``m.space.parent`` in the child."""

    async def unlink_space(self, parent: RoomId, child: RoomId) -> None:
        """Both links emptied (a link not there is done)."""

    async def name_space(self, space: RoomId, name: str) -> None: ...

    async def invite_to_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        """Invite the advisor (one already invited or joined is done)."""

    async def kick_from_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        """Remove the advisor (one not there is done)."""

    async def leave_space(self, space: RoomId) -> None:
        """The bot leaves the space (one it is not in is done)."""

    async def space_state(self, space: RoomId) -> SpaceState | None:
        """What the bot sees of the space now; None when the bot is no longer in it (kicked,
        left, or the room is unknown to the homeserver): the space must be made again."""

    # call signs

    async def make_lobby(self, sign: str, name: str, topic: str) -> RoomId:
        """The call sign's knock-only lobby (only the bot in it), made completely and then
        bound to the call sign's alias; one bound before is returned, not made again."""

    async def find_lobby(self, sign: str) -> RoomId | None:
        """The room the call sign's alias points at now, if any."""

    async def describe_lobby(
        self, sign: str, lobby: RoomId, name: str, topic: str, listed: bool
    ) -> None:
        """The lobby's name and topic, and whether the public room directory lists it; the
        call sign's user exists and bears the same name."""

    async def close_lobby(self, sign: str, lobby: RoomId | None) -> None:
        """The call sign's alias goes, its lobby is unlisted and the bot leaves it (each
        step done already is skipped)."""

    async def reject_knock(self, lobby: RoomId, user: str, reason: str) -> None:
        """Refuse ``user``'s knock on the lobby, telling ``reason`` (done when they no longer
        knock)."""

    async def membership(self, room_id: RoomId, user: str) -> str | None:
        """``user``'s membership of the room as the bot sees it ("join", "invite", "leave"…),
        None if they have none."""

    async def invite_asker(self, room_id: RoomId, user: str) -> None:
        """Invite the Matrix user who asked (one invited or joined already is done)."""

    async def call_sign_says(self, sign: str, room_id: RoomId, text: str, txn_id: str) -> None:
        """The call sign's user joins ``room_id`` (a direct chat it was invited to) if it is
        not in it, and posts ``text`` there."""

    def call_sign_address(self, sign: str) -> tuple[str, str]:
        """The call sign's alias and its user's Matrix id, as people type them."""

    def is_local(self, user: AdvisorMxid) -> bool:
        """Whether the user's account is on the desk's homeserver. One on another server sees
        nothing of a room from before their join until their client scrolls back (their server
        gets the room's state with the join, not its timeline)."""


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
    version: int = 0  # pages ignore a status older than the one they show
    asked_for: str | None = None  # the name behind the call sign the visitor asked for


@dataclass(frozen=True)
class MessageEvent:
    message: Message


@dataclass(frozen=True)
class MessageChangedEvent:
    """A message the page may show already was edited or removed (it carries the new state)."""

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


VisitorEvent = MessageEvent | MessageChangedEvent | StatusEvent | TypingEvent | ReadEvent


class VisitorChannel(Protocol):
    """Live push to the visitor's open pages (the portal's websockets)."""

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None:
        """Best effort: the store, not this channel, is the record of what was said."""

    def is_watching(self, conversation_id: ConversationId) -> bool:
        """Whether the visitor has the conversation open in a page right now."""


class DeskMetrics(Protocol):
    """What the core measures for the operators (the appservice exports it to Prometheus).

    A measurement only: nothing the core decides depends on it, and it must not fail."""

    def invite_sent(self, since_start: float) -> None:
        """An advisor was invited to a chat, ``since_start`` seconds after the visitor started
        it (each invite counts: a second one after an advisor let the first pass, too)."""

    def visitor_accepted(self, waited: float) -> None:
        """An advisor took a visitor who had waited ``waited`` seconds in the queue (from
        their place in it: a visitor put back by an advisor who left keeps that place)."""


class NoMetrics:
    """Measures nothing: the core's default (unit tests, benchmarks)."""

    def invite_sent(self, since_start: float) -> None:
        pass

    def visitor_accepted(self, waited: float) -> None:
        pass
