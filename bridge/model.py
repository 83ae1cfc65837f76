"""The help desk's domain objects: plain dataclasses with NewType ids."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, NewType

from . import events
from .errors import IllegalTransition, InvalidInput

VisitorId = NewType("VisitorId", str)
ConversationId = NewType("ConversationId", str)
MessageId = NewType("MessageId", str)
AdvisorMxid = NewType("AdvisorMxid", str)
PuppetMxid = NewType("PuppetMxid", str)
RoomId = NewType("RoomId", str)
EventId = NewType("EventId", str)


def parse_mxid(text: str) -> AdvisorMxid:
    """A Matrix user id such as ``@ana:example.org``, or a clear error."""
    text = text.strip()
    localpart, sep, server = text[1:].partition(":")
    if not text.startswith("@") or not sep or not localpart or not server or " " in text:
        raise InvalidInput(f"{text!r} is not a Matrix user id; write it like @ana:example.org.")
    return AdvisorMxid(text)


class ConversationStatus(str, enum.Enum):
    """Where a conversation stands.

    ``waiting``: in the queue, no advisor offered yet. ``inviting``: offered to one advisor, who
    has until ``invite_deadline`` to accept. ``active``: an advisor is in the room.
    ``ended``: closed by either side; the transcript stays.
    """

    WAITING = "waiting"
    INVITING = "inviting"
    ACTIVE = "active"
    ENDED = "ended"

    @property
    def is_open(self) -> bool:
        return self is not ConversationStatus.ENDED


class Sender(str, enum.Enum):
    VISITOR = "visitor"
    ADVISOR = "advisor"
    SYSTEM = "system"


class Presence(str, enum.Enum):
    """Matrix presence as the help desk sees it. ``unknown`` until the homeserver tells us."""

    ONLINE = "online"
    UNAVAILABLE = "unavailable"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Visitor:
    id: VisitorId
    name: str
    email: str | None
    created_at: float


@dataclass(frozen=True)
class Advisor:
    """A Matrix user who answers visitors.

    ``available`` is what the advisor said (``!available`` / ``!away``); ``presence`` is what
    their Matrix client says. Both must allow it before a new visitor is offered to them.
    """

    mxid: AdvisorMxid
    available: bool = False
    presence: Presence = Presence.UNKNOWN
    capacity: int | None = None  # None: the desk's default
    display_name: str | None = None
    control_room: RoomId | None = None  # the direct chat with the bot
    #: when the desk last had proof that they are alive (a presence push, a message, a join):
    #: what public listings trust for an advisor of another homeserver
    last_seen_at: float | None = None

    @property
    def name(self) -> str:
        return self.display_name or self.mxid.lstrip("@").split(":", 1)[0]

    @property
    def reachable(self) -> bool:
        return self.presence in (Presence.ONLINE, Presence.UNKNOWN)

    # transitions: each returns the new state and the events it raises (routing may change)

    def make_available(self, available: bool) -> AdvisorTransition:
        """``!available`` / ``!away``: whether the desk offers them new visitors."""
        changed = dataclasses.replace(self, available=available)
        return changed, [events.QueueChanged()] if changed != self else []

    def take_up_to(self, capacity: int | None) -> AdvisorTransition:
        """How many visitors they take at once (None: the desk's default)."""
        if capacity is not None and not 1 <= capacity <= MAX_CAPACITY:
            raise IllegalTransition(f"a capacity of {capacity}")
        changed = dataclasses.replace(self, capacity=capacity)
        return changed, [events.QueueChanged()] if changed != self else []

    def seen_as(self, presence: Presence) -> AdvisorTransition:
        """Their Matrix presence changed: routing cares only when reachability does."""
        changed = dataclasses.replace(self, presence=presence)
        return changed, [events.QueueChanged()] if changed.reachable != self.reachable else []


@dataclass(frozen=True)
class Conversation:
    """A visitor's conversation. It changes only through its transitions (``offer``,
    ``accept``, ``skip``, ``release``, ``end``, ``room_made``): each checks that it is allowed,
    and returns the new state with the domain events it raises (see :mod:`bridge.events`).

    ``version`` counts the transitions: pages ignore a status older than the one they show,
    and a timer set for one version does nothing once the conversation has moved on.
    """

    id: ConversationId
    visitor_id: VisitorId
    topic: str
    status: ConversationStatus
    created_at: float
    queued_at: float
    puppet: PuppetMxid | None = None
    room_id: RoomId | None = None
    advisor: AdvisorMxid | None = None
    invite_deadline: float | None = None
    skipped: tuple[AdvisorMxid, ...] = ()
    read_up_to: int = 0
    ended_at: float | None = None
    ended_by: Sender | None = None
    version: int = 0
    #: the call sign the visitor asked for (routed to its advisor or group, not by topic)
    call_sign: str | None = None
    #: a Matrix user who asked a call sign: they are in the room themself (no puppet)
    asker: str | None = None

    def __post_init__(self) -> None:
        status = self.status
        has_advisor = status in (ConversationStatus.INVITING, ConversationStatus.ACTIVE)
        if has_advisor != (self.advisor is not None) and status is not ConversationStatus.ENDED:
            raise IllegalTransition(f"a {status.value} conversation with advisor {self.advisor}")
        if (status is ConversationStatus.INVITING) != (self.invite_deadline is not None):
            raise IllegalTransition(f"a {status.value} conversation with an invite deadline")
        if (status is ConversationStatus.ENDED) != (self.ended_at is not None):
            raise IllegalTransition(f"a {status.value} conversation with an end time")

    def _next(self, **changes: Any) -> Conversation:
        return dataclasses.replace(self, version=self.version + 1, **changes)

    def _require(self, allowed: bool, what: str) -> None:
        if not allowed:
            raise IllegalTransition(
                f"conversation {self.id} cannot {what} while {self.status.value}"
                + (f" with {self.advisor}" if self.advisor else "")
            )

    def room_made(self, puppet: PuppetMxid | None, room_id: RoomId) -> Transition:
        """Its puppet (None for a Matrix asker) and Matrix room exist: from now on it can be
        offered."""
        self._require(self.room_id is None, "get a second room")
        if not self.status.is_open:
            # made while it ended: attached so that it can be closed; the end stays the last
            # transition
            return dataclasses.replace(self, puppet=puppet, room_id=room_id), []
        return self._next(puppet=puppet, room_id=room_id), [events.QueueChanged()]

    def offer(self, advisor: AdvisorMxid, now: float, timeout: float) -> Transition:
        """Offer the waiting visitor to ``advisor``, who has ``timeout`` seconds to accept."""
        self._require(
            self.status is ConversationStatus.WAITING and self.room_id is not None, "be offered"
        )
        offered = self._next(
            status=ConversationStatus.INVITING,
            advisor=advisor,
            invite_deadline=now + timeout,
            # everybody else is busy: the skipped ones are rung again
            skipped=() if advisor in self.skipped else self.skipped,
        )
        return offered, [
            events.Offered(self.id, advisor, offered.version),
            events.OfferExpires(self.id, advisor, offered.version, due=now + timeout),
        ]

    def accept(self, advisor: AdvisorMxid) -> Transition:
        """``advisor`` joined the room and now owns the conversation.

        A waiting visitor is taken by any advisor who joins on purpose; an offer only by the
        advisor it was made to."""
        self._require(
            self.status is ConversationStatus.WAITING
            or (self.status is ConversationStatus.INVITING and self.advisor == advisor),
            f"be accepted by {advisor}",
        )
        active = self._next(
            status=ConversationStatus.ACTIVE, advisor=advisor, invite_deadline=None, skipped=()
        )
        return active, [
            events.AdvisorArrived(self.id, advisor, active.version),
            events.QueueChanged(),
        ]

    def skip(self, advisor: AdvisorMxid, reason: str) -> Transition:
        """``advisor`` did not take the offer: it is withdrawn and the visitor waits again,
        keeping their place."""
        self._require(
            self.status is ConversationStatus.INVITING and self.advisor == advisor,
            f"skip {advisor}",
        )
        waiting = self._next(
            status=ConversationStatus.WAITING,
            advisor=None,
            invite_deadline=None,
            skipped=tuple(dict.fromkeys(self.skipped + (advisor,))),
        )
        return waiting, [events.InviteWithdrawn(self.id, advisor, reason), events.QueueChanged()]

    def release(self, advisor: AdvisorMxid) -> Transition:
        """The owning advisor left without closing: the visitor waits again, at the front."""
        self._require(
            self.status is ConversationStatus.ACTIVE and self.advisor == advisor,
            f"be released by {advisor}",
        )
        waiting = self._next(status=ConversationStatus.WAITING, advisor=None, skipped=(advisor,))
        return waiting, [events.QueueChanged()]

    def end(self, by: Sender, now: float) -> Transition:
        """Close the conversation; an open offer is withdrawn."""
        self._require(self.status.is_open, "end")
        raised: list[events.DomainEvent] = [events.ConversationEnded(self.id)]
        if self.status is ConversationStatus.INVITING and self.advisor is not None:
            raised.append(events.InviteWithdrawn(self.id, self.advisor, "The chat has ended."))
        raised.append(events.QueueChanged())
        ended = self._next(
            status=ConversationStatus.ENDED, invite_deadline=None, ended_at=now, ended_by=by
        )
        return ended, raised


Transition = tuple[Conversation, "list[events.DomainEvent]"]
AdvisorTransition = tuple[Advisor, "list[events.DomainEvent]"]
MAX_CAPACITY = 50


@dataclass(frozen=True)
class Message:
    """One line of a transcript. ``seq`` orders a conversation's messages from 1.

    An advisor may edit their message in Matrix (``body`` is then the latest text, and
    ``edited_at`` when it was written) or remove it (``removed_at``; the text is erased, the
    line stays to show that something was said and taken back). A reply names the message it
    answers by ``reply_to`` (its seq), so the quote follows that message's edits and removal.
    """

    id: MessageId
    conversation_id: ConversationId
    seq: int
    sender: Sender
    author: str
    body: str
    ts: float
    client_id: str | None = None  # the visitor's idempotency key
    event_id: EventId | None = None  # the Matrix event that carries it
    txn_id: str | None = None  # the globally unique txn id of our send to Matrix
    author_id: str | None = None  # the Matrix user who wrote an advisor's message
    reply_to: int | None = None  # seq of the message this one answers
    edited_at: float | None = None
    removed_at: float | None = None

    @property
    def changed(self) -> bool:
        """Edited or removed since it was first shown."""
        return self.edited_at is not None or self.removed_at is not None

    # transitions: each returns the changed message, or None when nothing changes (an edit
    # or removal seen twice, an edit older than the text shown, anything after a removal)

    def edit(self, by: str, body: str, at: float) -> Message | None:
        """``by`` wrote ``body`` instead, at ``at``: only an advisor's own message changes
        (Matrix lets anyone send an edit; clients show only the author's)."""
        if self.sender is not Sender.ADVISOR or self.author_id not in (by, None):
            return None
        if self.removed_at is not None or (self.edited_at is not None and at < self.edited_at):
            return None
        if body == self.body:
            return None
        return dataclasses.replace(self, body=body, edited_at=at)

    def remove(self, at: float) -> Message | None:
        """Taken back at ``at``: the text is erased, the fact and time are kept."""
        if self.removed_at is not None:
            return None
        return dataclasses.replace(self, body="", removed_at=at)


@dataclass(frozen=True)
class StartRequest:
    """What the visitor typed in the pre-chat form, already validated."""

    name: str
    email: str | None
    topic: str
    message: str
    #: a call sign picked from the portal's search (checked well-formed, not reachable)
    call_sign: str | None = None


@dataclass(frozen=True)
class RoutingSettings:
    default_capacity: int = 3
    invite_timeout: float = 60.0


@dataclass
class QueueSnapshot:
    """What the bot's ``!queue`` shows."""

    waiting: list[Conversation] = field(default_factory=list)
    inviting: list[Conversation] = field(default_factory=list)
    active: list[Conversation] = field(default_factory=list)
