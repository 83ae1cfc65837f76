"""Domain events: what a transition raises, stored in the outbox with the new state.

Each event is a small frozen dataclass. Its ``key`` orders it: the outbox runs the rows of one
key one at a time, oldest first, and rows of different keys in parallel. A conversation's own
work (its room, the visitor's text, its end) shares the key ``c:<id>``; an invite and its
withdrawal share ``c:<id>:<advisor>``, so a withdrawal never overtakes its invite while the
invite does not wait behind the puppet's join or the form. A timer carries ``due``, the
wall-clock time it is claimed at, and a key of its own so that it blocks nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .groups import GroupId
    from .model import AdvisorMxid, ConversationId, MessageId, RoomId


@dataclass(frozen=True)
class DomainEvent:
    #: What a raise does where its key has an unclaimed pending row: ADD a row after it, KEEP
    #: that one (a second raise adds nothing), or REPLACE its payload and due time (a timer set
    #: again moves instead of leaving its older self behind)
    if_pending: ClassVar[str] = "add"
    #: claimed before rows of a higher number: the invite path goes first in a burst, since
    #: the homeserver's CPU is what a burst of visitors waits for
    priority: ClassVar[int] = 1

    @property
    def key(self) -> str:
        raise NotImplementedError

    def when_pending(self) -> str:
        """``if_pending`` of this raise (see there): "add", "keep" or "replace"."""
        return self.if_pending

    @property
    def due_at(self) -> float | None:
        """Wall-clock time the row becomes due; None: at once."""
        return getattr(self, "due", None)

    def payload(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class ConversationOpened(DomainEvent):
    """A visitor started: their puppet and room are made."""

    priority: ClassVar[int] = 0
    conversation_id: ConversationId

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}"


@dataclass(frozen=True)
class VisitorEntered(DomainEvent):
    """The visitor's puppet joins their room and the form's answers are posted."""

    conversation_id: ConversationId

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}"


@dataclass(frozen=True)
class VisitorSaid(DomainEvent):
    """The visitor's message is to be sent to the room as their puppet."""

    conversation_id: ConversationId
    message_id: MessageId

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}"


@dataclass(frozen=True)
class ConversationEnded(DomainEvent):
    """The room is told how the chat ended and the puppet leaves (after all earlier text)."""

    conversation_id: ConversationId

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}"


@dataclass(frozen=True)
class AdvisorArrived(DomainEvent):
    """The advisor joined and owns the conversation (at ``version``): one on another
    homeserver gets the form's answers posted again, since their client shows nothing from
    before their join without scrolling back. After the room's earlier rows (form, texts)."""

    conversation_id: ConversationId
    advisor: AdvisorMxid
    version: int

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}"


@dataclass(frozen=True)
class Offered(DomainEvent):
    """The advisor is invited to the room (version: of the conversation when offered)."""

    priority: ClassVar[int] = 0

    conversation_id: ConversationId
    advisor: AdvisorMxid
    version: int

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}:{self.advisor}"


@dataclass(frozen=True)
class InviteWithdrawn(DomainEvent):
    """The desk takes back its invite of the advisor (who is removed if they joined late)."""

    conversation_id: ConversationId
    advisor: AdvisorMxid
    reason: str

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}:{self.advisor}"


@dataclass(frozen=True)
class QueueChanged(DomainEvent):
    """Someone may now be offered to someone: a routing pass, then queue places to pages."""

    if_pending: ClassVar[str] = "keep"
    priority: ClassVar[int] = 0

    @property
    def key(self) -> str:
        return "queue"


@dataclass(frozen=True)
class OfferExpires(DomainEvent):
    """Timer: the offer of ``version`` runs out (nothing happens if it was taken or moved)."""

    priority: ClassVar[int] = 0

    conversation_id: ConversationId
    advisor: AdvisorMxid
    version: int
    due: float

    @property
    def key(self) -> str:
        return f"t:{self.conversation_id}:{self.version}"


@dataclass(frozen=True)
class VisitorMayHaveLeft(DomainEvent):
    """Timer: a queued visitor's pages were all closed; if none is open again when it is due
    (and the visitor still waits), the conversation is dropped.

    Each close sets it again (it replaces the pending one). It says when the last page closed,
    on the wall clock (``closed_at``) and on the monotonic clock of ``clock`` (``since``): a
    process on the same machine counts on the monotonic clock, which no step of the wall clock
    moves; another machine can only count on the wall clock. (Rows written before these fields
    existed have none: they count from when they run.)

    Set again by its own handler (``again``: the time is not up yet), it keeps a pending one
    instead: that one was set by a later close, and knows better."""

    conversation_id: ConversationId
    due: float
    closed_at: float | None = None
    since: float | None = None
    clock: str | None = None
    again: bool = False

    def when_pending(self) -> str:
        return "keep" if self.again else "replace"

    @property
    def key(self) -> str:
        return f"a:{self.conversation_id}"


@dataclass(frozen=True)
class BotSaid(DomainEvent):
    """The bot posts a notice (a command's answer), in order with what it said there before."""

    room_id: RoomId
    text: str
    txn_id: str

    @property
    def key(self) -> str:
        return f"r:{self.room_id}"


@dataclass(frozen=True)
class BotInvited(DomainEvent):
    """Someone invited the bot to a room (a direct chat): it joins and says hello."""

    room_id: RoomId
    inviter: str

    @property
    def key(self) -> str:
        return f"r:{self.room_id}"


@dataclass(frozen=True)
class AdvisorAdded(DomainEvent):
    """A new advisor gets a direct chat with the bot, with instructions."""

    advisor: AdvisorMxid

    @property
    def key(self) -> str:
        return f"adv:{self.advisor}"


@dataclass(frozen=True)
class PresenceUnknown(DomainEvent):
    """An advisor whose presence the desk does not know joined a room it shares: the
    homeserver pushes presence only when it changes, and only to users sharing a room, so an
    advisor online since before that is asked for once."""

    if_pending: ClassVar[str] = "keep"
    advisor: AdvisorMxid

    @property
    def key(self) -> str:
        # not adv:<mxid>: coalescing goes by key, and must not swallow it behind a welcome
        return f"presence:{self.advisor}"


@dataclass(frozen=True)
class PresenceMayBeStale(DomainEvent):
    """The homeserver was away: presence changes it had for us then are not sent again, so
    each advisor is asked once. ``was``: the presence the desk knew when it asked; a push that
    came meanwhile (newer than the answer) wins."""

    if_pending: ClassVar[str] = "keep"
    advisor: AdvisorMxid
    was: str

    @property
    def key(self) -> str:
        return f"presence:{self.advisor}"


@dataclass(frozen=True)
class GroupCreated(DomainEvent):
    """A new group: its space is made and linked under its parent's space."""

    group_id: GroupId
    parent_id: GroupId

    @property
    def key(self) -> str:
        return f"g:{self.group_id}"


@dataclass(frozen=True)
class GroupRenamed(DomainEvent):
    """The group's space takes the group's (current) display name."""

    group_id: GroupId

    @property
    def key(self) -> str:
        return f"g:{self.group_id}"


@dataclass(frozen=True)
class GroupMoved(DomainEvent):
    """The group's space is unlinked from the old parent's space and linked under the new."""

    group_id: GroupId
    old_parent_id: GroupId
    new_parent_id: GroupId

    @property
    def key(self) -> str:
        return f"g:{self.group_id}"


@dataclass(frozen=True)
class GroupDeleted(DomainEvent):
    """The group is gone: its space is unlinked from the parent's and the bot leaves it."""

    group_id: GroupId
    parent_id: GroupId
    space_id: RoomId | None

    @property
    def key(self) -> str:
        return f"g:{self.group_id}"


@dataclass(frozen=True)
class MembershipChanged(DomainEvent):
    """An advisor joined a group (``role``) or left it (``role`` None): they are invited to
    its space (and its ancestors'), or removed from it."""

    group_id: GroupId
    advisor: AdvisorMxid
    role: str | None

    @property
    def key(self) -> str:
        return f"g:{self.group_id}"


#: the repairs of one reconciliation share a key, so they run one at a time in the order raised
#: (parents before children): a re-made space exists before anything is linked or invited to it
REPAIR_KEY = "g:repair"


@dataclass(frozen=True)
class SpaceLost(DomainEvent):
    """The group's space ``space_id`` is gone for the bot (deleted, or the bot was removed):
    a new space is made and linked under the parent's."""

    group_id: GroupId
    space_id: RoomId

    @property
    def key(self) -> str:
        return REPAIR_KEY


@dataclass(frozen=True)
class SpaceLinkMissing(DomainEvent):
    """The link between a group's space and its parent's is missing (removed by hand, or one
    of them was made again): both links are set again."""

    group_id: GroupId
    parent_id: GroupId

    @property
    def key(self) -> str:
        return REPAIR_KEY


@dataclass(frozen=True)
class SpaceMemberMissing(DomainEvent):
    """An advisor of the group (or of a group under it) is neither joined nor invited to its
    space (they left by hand, or the space was made again): they are invited again."""

    group_id: GroupId
    advisor: AdvisorMxid

    @property
    def key(self) -> str:
        return REPAIR_KEY


@dataclass(frozen=True)
class CallSignSet(DomainEvent):
    """A call sign was assigned (or changed): its knock-only lobby is made under its alias
    (once), named after what it reaches, and listed in the room directory or not. ``told``:
    the room of the admin who changed it, told if the homeserver refuses the listing."""

    sign: str
    told: RoomId | None = None

    @property
    def key(self) -> str:
        return f"cs:{self.sign}"


@dataclass(frozen=True)
class CallSignRemoved(DomainEvent):
    """A call sign is gone: its alias is removed, its lobby unlisted and left."""

    sign: str
    lobby_id: RoomId | None

    @property
    def key(self) -> str:
        return f"cs:{self.sign}"


@dataclass(frozen=True)
class AskerAnswered(DomainEvent):
    """A Matrix user asked a call sign (``via`` a knock on its lobby, or a direct chat with
    its user in ``room_id``): they are told where their conversation is, and invited to it
    again if they are not in it. After the conversation's room is made (same key)."""

    conversation_id: ConversationId
    asker: str
    via: str
    room_id: RoomId
    sign: str
    txn_id: str  # of the notice in a direct chat: one per ask, the same for each retry

    @property
    def key(self) -> str:
        return f"c:{self.conversation_id}"


@dataclass(frozen=True)
class AskerMayNotCome(DomainEvent):
    """Timer: a Matrix user who asked a call sign has not joined their room by ``due``: if
    they still have not, the conversation ends (it would hold an advisor's offers, and a place
    under their server's cap, for someone who never comes)."""

    conversation_id: ConversationId
    due: float

    @property
    def key(self) -> str:
        return f"a:{self.conversation_id}"


@dataclass(frozen=True)
class AskRefused(DomainEvent):
    """A Matrix user's request could not be taken (``reason``, for them): a knock is
    rejected with it, a direct chat is told."""

    asker: str
    via: str
    room_id: RoomId
    sign: str
    reason: str
    txn_id: str

    @property
    def key(self) -> str:
        return f"r:{self.room_id}"


EVENT_TYPES: dict[str, type[DomainEvent]] = {
    cls.__name__: cls
    for cls in (
        ConversationOpened,
        VisitorEntered,
        VisitorSaid,
        ConversationEnded,
        AdvisorArrived,
        Offered,
        InviteWithdrawn,
        QueueChanged,
        OfferExpires,
        VisitorMayHaveLeft,
        BotSaid,
        BotInvited,
        AdvisorAdded,
        PresenceUnknown,
        PresenceMayBeStale,
        GroupCreated,
        GroupRenamed,
        GroupMoved,
        GroupDeleted,
        MembershipChanged,
        SpaceLost,
        SpaceLinkMissing,
        SpaceMemberMissing,
        CallSignSet,
        CallSignRemoved,
        AskerAnswered,
        AskerMayNotCome,
        AskRefused,
    )
}


def decode(kind: str, payload: str) -> DomainEvent:
    """The event stored as ``kind`` with ``payload`` (see :meth:`DomainEvent.payload`)."""
    fields: dict[str, Any] = json.loads(payload)
    return EVENT_TYPES[kind](**fields)
