"""The help desk's domain objects: plain dataclasses with NewType ids."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import NewType

VisitorId = NewType("VisitorId", str)
ConversationId = NewType("ConversationId", str)
MessageId = NewType("MessageId", str)
AdvisorMxid = NewType("AdvisorMxid", str)
PuppetMxid = NewType("PuppetMxid", str)
RoomId = NewType("RoomId", str)
EventId = NewType("EventId", str)


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

    @property
    def name(self) -> str:
        return self.display_name or self.mxid.lstrip("@").split(":", 1)[0]

    @property
    def reachable(self) -> bool:
        return self.presence in (Presence.ONLINE, Presence.UNKNOWN)


@dataclass(frozen=True)
class Conversation:
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
    announced: bool = False  # the form's answers are posted in the room
    room_closed: bool = False  # ended, and the Matrix side of the end is done
    # advisors the desk invited whose invite is neither taken (joined) nor withdrawn yet
    invited: tuple[AdvisorMxid, ...] = ()

    @property
    def invites_to_withdraw(self) -> tuple[AdvisorMxid, ...]:
        """The desk's invites other than the current offer: each is withdrawn, retried until
        the homeserver has done it, so nobody keeps an invite to a chat that is not theirs."""
        if self.status is ConversationStatus.INVITING:
            return tuple(a for a in self.invited if a != self.advisor)
        return self.invited


@dataclass(frozen=True)
class Message:
    """One line of a transcript. ``seq`` orders a conversation's messages from 1."""

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
    delivered: bool = False  # reached the other side (Matrix room, for visitor messages)


@dataclass(frozen=True)
class StartRequest:
    """What the visitor typed in the pre-chat form, already validated."""

    name: str
    email: str | None
    topic: str
    message: str


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
