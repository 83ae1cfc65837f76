"""In-memory twins of the core's ports, for unit tests of pure logic."""

from __future__ import annotations

import copy
import dataclasses
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Collection, Sequence

from bridge.callsigns import CallSign
from bridge.events import DomainEvent
from bridge.groups import ROOT_ID, Group, GroupId, Membership, Role
from bridge.model import (
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
from bridge.outbox import Dispatcher
from bridge.ports import OutboxRow, SpaceState, VisitorEvent


class FakeClock:
    monotonic_source = "fake"  # every process of a test shares the one fake machine

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.t = start
        self.elapsed = 0.0

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.elapsed

    def advance(self, seconds: float) -> None:
        """Time passes."""
        self.t += seconds
        self.elapsed += seconds

    def jump(self, seconds: float) -> None:
        """The wall clock is stepped (NTP, an admin); no time passes."""
        self.t += seconds


class MemoryStore:
    """The reference semantics of :class:`bridge.ports.Store`."""

    def __init__(self) -> None:
        self.visitors: dict[VisitorId, Visitor] = {}
        self.sessions: dict[str, VisitorId] = {}
        self.conversations: dict[ConversationId, Conversation] = {}
        self.messages_: dict[ConversationId, list[Message]] = {}
        self.advisors_: dict[AdvisorMxid, Advisor] = {}
        self.settings: dict[str, str] = {}
        # the root group, as migration 0006 makes it
        self.groups_: dict[GroupId, Group] = {
            ROOT_ID: Group(ROOT_ID, "desk", "All advisors", None)
        }
        self.members: dict[tuple[GroupId, AdvisorMxid], Membership] = {}
        self.call_signs_: dict[str, CallSign] = {}
        self.call_sign_chats: dict[RoomId, tuple[str, str]] = {}
        self.handled_events: set[str] = set()
        self.outbox = MemoryOutbox()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """All or nothing, like the SQL stores: a failure restores the state from before."""
        saved = copy.deepcopy(
            (
                self.visitors,
                self.sessions,
                self.conversations,
                self.messages_,
                self.advisors_,
                self.settings,
                self.groups_,
                self.members,
                self.call_signs_,
                self.call_sign_chats,
                self.handled_events,
                self.outbox.rows,
                self.outbox._next,
            )
        )
        try:
            yield
        except BaseException:
            (
                self.visitors,
                self.sessions,
                self.conversations,
                self.messages_,
                self.advisors_,
                self.settings,
                self.groups_,
                self.members,
                self.call_signs_,
                self.call_sign_chats,
                self.handled_events,
                self.outbox.rows,
                self.outbox._next,
            ) = saved
            raise

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        yield  # one process: the services' own locks suffice

    @asynccontextmanager
    async def claim(self, name: str) -> AsyncIterator[bool]:
        yield True  # one process: the services' own locks decide

    async def add_visitor(self, visitor: Visitor, session_hash: str) -> Visitor:
        bound = self.sessions.setdefault(session_hash, visitor.id)
        if bound == visitor.id:
            known = self.visitors.get(visitor.id)
            self.visitors[visitor.id] = (
                dataclasses.replace(known, name=visitor.name, email=visitor.email)
                if known
                else visitor
            )
        return self.visitors[bound]

    async def visitor_by_session(self, session_hash: str) -> Visitor | None:
        vid = self.sessions.get(session_hash)
        return self.visitors.get(vid) if vid else None

    async def get_visitor(self, visitor_id: VisitorId) -> Visitor | None:
        return self.visitors.get(visitor_id)

    async def get_visitors(self, visitor_ids: Collection[VisitorId]) -> dict[VisitorId, Visitor]:
        return {v: self.visitors[v] for v in visitor_ids if v in self.visitors}

    async def add_conversation(self, conversation: Conversation) -> bool:
        if any(
            c.visitor_id == conversation.visitor_id and c.status.is_open
            for c in self.conversations.values()
        ):
            return False
        self.conversations[conversation.id] = conversation
        self.messages_[conversation.id] = []
        return True

    async def save_conversation(self, conversation: Conversation) -> None:
        self.conversations[conversation.id] = conversation

    async def save_conversations(self, conversations: Sequence[Conversation]) -> None:
        for conversation in conversations:
            await self.save_conversation(conversation)

    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None:
        return self.conversations.get(conversation_id)

    async def conversation_by_room(self, room_id: RoomId) -> Conversation | None:
        return next((c for c in self.conversations.values() if c.room_id == room_id), None)

    async def latest_conversation(self, visitor_id: VisitorId) -> Conversation | None:
        mine = [c for c in self.conversations.values() if c.visitor_id == visitor_id]
        return max(mine, key=lambda c: (c.status.is_open, c.created_at), default=None)

    async def open_conversations(self) -> list[Conversation]:
        return sorted(
            (c for c in self.conversations.values() if c.status.is_open),
            key=lambda c: c.created_at,
        )

    async def add_message(self, message: Message) -> tuple[Message, bool]:
        log = self.messages_.setdefault(message.conversation_id, [])
        for m in log:
            if (message.client_id and m.client_id == message.client_id) or (
                message.event_id and m.event_id == message.event_id
            ):
                return m, False
        if message.event_id and await self.message_by_event(message.event_id):
            existing = await self.message_by_event(message.event_id)
            assert existing is not None
            return existing, False
        stored = dataclasses.replace(message, seq=len(log) + 1)
        log.append(stored)
        return stored, True

    async def messages(self, conversation_id: ConversationId, since: int = 0) -> list[Message]:
        return [m for m in self.messages_.get(conversation_id, []) if m.seq > since]

    async def message_by_event(self, event_id: EventId) -> Message | None:
        for log in self.messages_.values():
            for m in log:
                if m.event_id == event_id:
                    return m
        return None

    async def get_message(self, message_id: MessageId) -> Message | None:
        for log in self.messages_.values():
            for m in log:
                if m.id == message_id:
                    return m
        return None

    async def set_message_event(self, message_id: MessageId, event_id: EventId) -> None:
        for log in self.messages_.values():
            for i, m in enumerate(log):
                if m.id == message_id:
                    log[i] = dataclasses.replace(m, event_id=event_id)

    async def change_message(self, before: Message, after: Message) -> bool:
        log = self.messages_.get(before.conversation_id, [])
        for i, m in enumerate(log):
            if m.id == before.id:
                if (m.body, m.edited_at, m.removed_at) != (
                    before.body,
                    before.edited_at,
                    before.removed_at,
                ):
                    return False
                log[i] = dataclasses.replace(
                    m, body=after.body, edited_at=after.edited_at, removed_at=after.removed_at
                )
                return True
        return False

    async def changed_messages(self, conversation_id: ConversationId, up_to: int) -> list[Message]:
        return [m for m in self.messages_.get(conversation_id, []) if m.seq <= up_to and m.changed]

    async def save_advisor(self, advisor: Advisor) -> None:
        known = self.advisors_.get(advisor.mxid)
        # like the SQL store: a save never writes the proof of life (advisor_seen does)
        seen = known.last_seen_at if known else None
        self.advisors_[advisor.mxid] = dataclasses.replace(advisor, last_seen_at=seen)

    async def advisor_seen(self, mxid: AdvisorMxid, at: float) -> None:
        known = self.advisors_.get(mxid)
        if known is not None and (known.last_seen_at is None or known.last_seen_at < at):
            self.advisors_[mxid] = dataclasses.replace(known, last_seen_at=at)

    async def call_signs(self) -> list[CallSign]:
        return sorted(self.call_signs_.values(), key=lambda c: c.sign)

    async def get_call_sign(self, sign: str) -> CallSign | None:
        return self.call_signs_.get(sign)

    async def call_sign_by_lobby(self, lobby_id: RoomId) -> CallSign | None:
        return next((c for c in self.call_signs_.values() if c.lobby_id == lobby_id), None)

    async def save_call_sign(self, call_sign: CallSign) -> None:
        self.call_signs_[call_sign.sign] = call_sign

    async def remove_call_sign(self, sign: str) -> bool:
        for room in [r for r, (s, _) in self.call_sign_chats.items() if s == sign]:
            del self.call_sign_chats[room]
        return self.call_signs_.pop(sign, None) is not None

    async def lobby_found(self, sign: str, lobby_id: RoomId) -> None:
        known = self.call_signs_.get(sign)
        if known is not None and known.lobby_id is None:
            self.call_signs_[sign] = known.lobby_made(lobby_id)

    async def add_call_sign_chat(self, room_id: RoomId, sign: str, user: str) -> None:
        self.call_sign_chats[room_id] = (sign, user)

    async def call_sign_chat(self, room_id: RoomId) -> tuple[str, str] | None:
        return self.call_sign_chats.get(room_id)

    async def get_advisor(self, mxid: AdvisorMxid) -> Advisor | None:
        return self.advisors_.get(mxid)

    async def remove_advisor(self, mxid: AdvisorMxid) -> bool:
        for key in [k for k in self.members if k[1] == mxid]:
            del self.members[key]
        return self.advisors_.pop(mxid, None) is not None

    async def advisors(self) -> list[Advisor]:
        return sorted(self.advisors_.values(), key=lambda a: a.mxid)

    async def groups(self) -> list[Group]:
        return sorted(self.groups_.values(), key=lambda g: g.id)

    async def get_group(self, group_id: GroupId) -> Group | None:
        return self.groups_.get(group_id)

    async def add_group(self, group: Group) -> None:
        taken = any(
            g.parent_id == group.parent_id and g.slug == group.slug for g in self.groups_.values()
        )
        if group.id in self.groups_ or taken:
            raise ValueError(f"group {group.id} or its path exists already")
        self.groups_[group.id] = group

    async def save_group(self, group: Group) -> None:
        if group.id in self.groups_:
            self.groups_[group.id] = group

    async def remove_group(self, group_id: GroupId) -> None:
        self.groups_.pop(group_id, None)
        for key in [k for k in self.members if k[0] == group_id]:
            del self.members[key]

    async def members_of(self, group_id: GroupId) -> list[Membership]:
        return sorted(
            (m for m in self.members.values() if m.group_id == group_id), key=lambda m: m.advisor
        )

    async def memberships_of(self, advisor: AdvisorMxid) -> list[Membership]:
        return sorted(
            (m for m in self.members.values() if m.advisor == advisor), key=lambda m: m.group_id
        )

    async def save_membership(self, membership: Membership) -> None:
        if membership.role is Role.PRIMARY and any(
            m.role is Role.PRIMARY and m.group_id != membership.group_id
            for m in await self.memberships_of(membership.advisor)
        ):
            raise ValueError(f"{membership.advisor} has a primary group already")
        self.members[(membership.group_id, membership.advisor)] = membership

    async def remove_membership(self, group_id: GroupId, advisor: AdvisorMxid) -> None:
        self.members.pop((group_id, advisor), None)

    async def get_setting(self, key: str) -> str | None:
        return self.settings.get(key)

    async def set_setting(self, key: str, value: str) -> None:
        self.settings[key] = value

    async def mark_event_handled(self, event_id: str) -> None:
        self.handled_events.add(event_id)


@dataclasses.dataclass
class _Row:
    row: OutboxRow
    delay: float
    state: str = "pending"
    claimed_by: str | None = None
    lease_until: float | None = None
    done_at: float | None = None


class MemoryOutbox:
    """The reference semantics of :class:`bridge.ports.OutboxStore`."""

    def __init__(self) -> None:
        self.rows: dict[int, _Row] = {}
        self._next = 1

    async def add(self, events: Sequence[DomainEvent], now: float) -> None:
        for event in events:
            due = event.due_at
            pending = [
                r
                for r in self.rows.values()
                if r.row.key == event.key and r.state == "pending" and r.claimed_by is None
            ]
            rule = event.when_pending()
            if rule == "keep" and pending:
                continue
            if rule == "replace" and pending:
                for r in pending:
                    r.row = dataclasses.replace(
                        r.row, payload=event.payload(), due_at=now if due is None else due
                    )
                    r.delay = 0.0 if due is None else max(0.0, due - now)
                continue
            row = OutboxRow(
                id=self._next,
                key=event.key,
                kind=type(event).__name__,
                payload=event.payload(),
                due_at=now if due is None else due,
                created_at=now,
                priority=event.priority,
            )
            self.rows[row.id] = _Row(row, 0.0 if due is None else max(0.0, due - now))
            self._next += 1

    def _blocked(self, r: _Row) -> bool:
        return any(
            o.row.key == r.row.key and o.state != "done" and o.row.id < r.row.id
            for o in self.rows.values()
        )

    async def claim(
        self,
        worker: str,
        now: float,
        lease_until: float,
        limit: int,
        max_priority: int | None = None,
    ) -> list[OutboxRow]:
        ready = sorted(
            (
                r
                for r in self.rows.values()
                if r.state == "pending"
                and (max_priority is None or r.row.priority <= max_priority)
                and r.row.due_at <= now
                and (r.lease_until is None or r.lease_until < now)
                and not self._blocked(r)
            ),
            key=lambda r: (r.row.priority, r.row.due_at, r.row.id),
        )[:limit]
        for r in ready:
            r.claimed_by, r.lease_until = worker, lease_until
            r.row = dataclasses.replace(r.row, tries=r.row.tries + 1)
        return [r.row for r in ready]

    async def renew(self, worker: str, lease_until: float) -> None:
        for r in self.rows.values():
            if r.claimed_by == worker and r.state == "pending":
                r.lease_until = lease_until

    async def done(self, row_id: int, now: float) -> None:
        r = self.rows[row_id]
        r.state, r.done_at, r.claimed_by, r.lease_until = "done", now, None, None

    async def retry(self, row_id: int, due_at: float, failures: int, error: str | None) -> None:
        r = self.rows[row_id]
        if r.state == "pending":
            r.row = dataclasses.replace(r.row, due_at=due_at, failures=failures, last_error=error)
            r.claimed_by = r.lease_until = None

    async def park(self, row_id: int, failures: int, error: str) -> None:
        r = self.rows[row_id]
        if r.state == "pending":
            r.state = "parked"
            r.row = dataclasses.replace(r.row, failures=failures, last_error=error, parked=True)
            r.claimed_by = r.lease_until = None

    async def pending(self, key: str, kind: str) -> bool:
        return any(
            r.row.key == key and r.row.kind == kind and r.state != "done"
            for r in self.rows.values()
        )

    async def parked(self) -> list[OutboxRow]:
        return [
            r.row
            for r in sorted(self.rows.values(), key=lambda r: r.row.id)
            if r.state == "parked"
        ]

    async def unpark(self, row_id: int, now: float) -> bool:
        r = self.rows.get(row_id)
        if r is None or r.state != "parked":
            return False
        r.state = "pending"
        r.row = dataclasses.replace(r.row, failures=0, due_at=now, parked=False)
        return True

    async def discard(self, row_id: int, now: float) -> bool:
        r = self.rows.get(row_id)
        if r is None or r.state != "parked":
            return False
        r.state, r.done_at = "done", now
        return True

    async def next_due(self) -> float | None:
        return min(
            (
                max(r.row.due_at, r.lease_until or r.row.due_at)
                for r in self.rows.values()
                if r.state == "pending" and not self._blocked(r)
            ),
            default=None,
        )

    async def rebase(self, now: float, lease: float | None = None, step: float = 0.0) -> int:
        moved = 0
        for r in self.rows.values():
            if lease is not None and r.lease_until is not None and r.lease_until > now + lease:
                r.lease_until = min(now + lease, r.lease_until - step)
            if r.state == "pending" and r.row.due_at > now + r.delay:
                r.row = dataclasses.replace(r.row, due_at=now + r.delay)
                moved += 1
        return moved

    async def release_claims(self) -> None:
        for r in self.rows.values():
            if r.state == "pending":
                r.claimed_by = r.lease_until = None

    async def prune(self, older_than: float) -> None:
        for row_id in [
            k
            for k, r in self.rows.items()
            if r.state == "done" and r.done_at is not None and r.done_at < older_than
        ]:
            del self.rows[row_id]

    def kinds(self, state: str = "pending") -> list[str]:
        return [r.row.kind for r in self.rows.values() if r.state == state]


class FakeMatrixGateway:
    """Records what would have been sent to Matrix in ``sent``."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.rooms = 0
        self.room_keys: dict[str, RoomId] = {}  # the aliases of rooms: a retry finds its room
        self.fail_next: Exception | None = None
        self.present: set[tuple[RoomId, AdvisorMxid]] = set()
        self.puppets_in: set[tuple[RoomId, PuppetMxid]] = set()  # joined, not left yet
        self.landed: set[str] = set()  # txn ids of sends that reached the room
        self.lose_answer_next = False
        self.presences: dict[AdvisorMxid, Presence] = {}  # unknown: not sharing a room yet
        self.presence_asked: list[AdvisorMxid] = []
        self.remote_servers: tuple[str, ...] = (":elsewhere",)  # other homeservers' users
        self.fail_leaves = 0  # the puppet's leave is refused this many times
        # the space work, apart from ``sent`` (every advisor added joins the root's space)
        self.spaces: list[tuple] = []
        self.links: set[tuple[RoomId, RoomId]] = set()  # (parent space, child space)
        self.in_space: set[tuple[RoomId, AdvisorMxid]] = set()  # invited, not kicked
        self.lost_spaces: set[RoomId] = set()  # deleted by hand, or the bot was removed
        self.memberships: dict[tuple[RoomId, str], str] = {}  # what membership() answers

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    async def create_puppet(self, visitor: Visitor) -> PuppetMxid:
        self._maybe_fail()
        mxid = PuppetMxid(f"@sb_visitor_{visitor.id}:test")
        self.sent.append(("puppet", mxid, f"{visitor.name} (visitor)"))
        return mxid

    async def create_room(self, invitee: str | None, name: str, topic: str, key: str) -> RoomId:
        self._maybe_fail()
        if key in self.room_keys:
            return self.room_keys[key]
        self.rooms += 1
        room = RoomId(f"!room{self.rooms}:test")
        self.room_keys[key] = room
        self.sent.append(("room", room, invitee, name))
        return room

    async def find_room(self, key: str) -> RoomId | None:
        self._maybe_fail()
        return self.room_keys.get(key)

    async def forget_room_key(self, key: str) -> None:
        self.room_keys.pop(key, None)

    async def puppet_join(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        self._maybe_fail()
        self.sent.append(("join", room_id, puppet))
        self.puppets_in.add((room_id, puppet))

    async def post_notice(self, room_id: RoomId, text: str, txn_id: str) -> EventId:
        self._maybe_fail()
        self.sent.append(("notice", room_id, text))
        return EventId(f"$notice-{txn_id}")

    async def send_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, body: str, txn_id: str
    ) -> EventId:
        self._maybe_fail()
        if (room_id, puppet) not in self.puppets_in:
            raise AssertionError(f"{puppet} sends to {room_id} without having joined it")
        self.sent.append(("text", room_id, body))
        self.landed.add(txn_id)
        if self.lose_answer_next:  # it landed, but the answer never came back
            self.lose_answer_next = False
            raise ConnectionError("connection lost after the send")
        return EventId(f"$ev-{txn_id}")

    async def find_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, txn_id: str
    ) -> EventId | None:
        self.sent.append(("find", room_id, txn_id))
        return EventId(f"$ev-{txn_id}") if txn_id in self.landed else None

    async def invite_advisor(self, room_id: RoomId, advisor: AdvisorMxid) -> bool:
        self._maybe_fail()
        self.sent.append(("invite", room_id, advisor))
        return (room_id, advisor) in self.present

    def joined(self, room_id: RoomId, advisor: AdvisorMxid) -> None:
        self.present.add((room_id, advisor))

    async def revoke_invite(self, room_id: RoomId, advisor: AdvisorMxid, reason: str) -> None:
        self.sent.append(("revoke", room_id, advisor))

    async def set_visitor_typing(self, room_id: RoomId, puppet: PuppetMxid, typing: bool) -> None:
        self.sent.append(("typing", room_id, typing))

    async def mark_read(self, room_id: RoomId, puppet: PuppetMxid, event_id: EventId) -> None:
        self.sent.append(("read", room_id, event_id))

    async def bot_join(self, room_id: RoomId) -> None:
        self._maybe_fail()
        self.sent.append(("bot-join", room_id))

    async def open_direct_chat(self, advisor: AdvisorMxid) -> RoomId:
        self._maybe_fail()
        self.rooms += 1
        room = RoomId(f"!direct{self.rooms}:test")
        self.sent.append(("direct", room, advisor))
        return room

    async def presence(self, user: AdvisorMxid) -> Presence:
        self.presence_asked.append(user)
        return self.presences.get(user, Presence.UNKNOWN)

    def is_local(self, user: AdvisorMxid) -> bool:
        return not user.endswith(self.remote_servers)

    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        if self.fail_leaves > 0:
            self.fail_leaves -= 1
            raise RuntimeError("M_FORBIDDEN: the homeserver refuses the leave")
        self.sent.append(("leave", room_id, puppet))
        self.puppets_in.discard((room_id, puppet))

    async def create_space(self, name: str, key: str) -> RoomId:
        self._maybe_fail()
        if key in self.room_keys:
            return self.room_keys[key]
        self.rooms += 1
        space = RoomId(f"!space{self.rooms}:test")
        self.room_keys[key] = space
        self.spaces.append(("space", space, name))
        return space

    async def link_space(self, parent: RoomId, child: RoomId) -> None:
        self._maybe_fail()
        self.spaces.append(("link", parent, child))
        self.links.add((parent, child))

    async def unlink_space(self, parent: RoomId, child: RoomId) -> None:
        self._maybe_fail()
        self.spaces.append(("unlink", parent, child))
        self.links.discard((parent, child))

    async def name_space(self, space: RoomId, name: str) -> None:
        self.spaces.append(("name", space, name))

    async def invite_to_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        self._maybe_fail()
        self.spaces.append(("space-invite", space, advisor))
        self.in_space.add((space, advisor))

    async def kick_from_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        self.spaces.append(("space-kick", space, advisor))
        self.in_space.discard((space, advisor))

    async def leave_space(self, space: RoomId) -> None:
        self.spaces.append(("space-leave", space))

    async def space_state(self, space: RoomId) -> SpaceState | None:
        if space in self.lost_spaces:
            return None
        return SpaceState(
            children=frozenset(c for p, c in self.links if p == space),
            parents=frozenset(p for p, c in self.links if c == space),
            members=frozenset(a for s, a in self.in_space if s == space),
        )

    # call signs

    async def make_lobby(self, sign: str, name: str, topic: str) -> RoomId:
        self._maybe_fail()
        key = f"#cs_{sign}"
        if key in self.room_keys:
            return self.room_keys[key]
        self.rooms += 1
        lobby = RoomId(f"!lobby{self.rooms}:test")
        self.room_keys[key] = lobby
        self.sent.append(("lobby", lobby, sign, name))
        return lobby

    async def find_lobby(self, sign: str) -> RoomId | None:
        return self.room_keys.get(f"#cs_{sign}")

    async def describe_lobby(
        self, sign: str, lobby: RoomId, name: str, topic: str, listed: bool
    ) -> None:
        self._maybe_fail()
        self.sent.append(("lobby-described", lobby, name, listed))

    async def close_lobby(self, sign: str, lobby: RoomId | None) -> None:
        self.room_keys.pop(f"#cs_{sign}", None)
        self.sent.append(("lobby-closed", sign, lobby))

    async def reject_knock(self, lobby: RoomId, user: str, reason: str) -> None:
        self._maybe_fail()
        self.sent.append(("knock-rejected", lobby, user, reason))

    async def membership(self, room_id: RoomId, user: str) -> str | None:
        return self.memberships.get((room_id, user))

    async def invite_asker(self, room_id: RoomId, user: str) -> None:
        self._maybe_fail()
        self.sent.append(("asker-invited", room_id, user))

    async def call_sign_says(self, sign: str, room_id: RoomId, text: str, txn_id: str) -> None:
        self._maybe_fail()
        self.sent.append(("call-sign-says", room_id, sign, text))

    def call_sign_address(self, sign: str) -> tuple[str, str]:
        return f"#cs_{sign}:test", f"@sb_cs_{sign}:test"

    def lose_space(self, space: RoomId) -> None:
        """The space is deleted by hand: its links and members go with it."""
        self.lost_spaces.add(space)
        self.links = {(p, c) for p, c in self.links if space not in (p, c)}
        self.in_space = {(s, a) for s, a in self.in_space if s != space}

    def of(self, kind: str) -> list[tuple]:
        return [s for s in self.sent if s[0] == kind]

    def of_spaces(self, kind: str) -> list[tuple]:
        return [s for s in self.spaces if s[0] == kind]


class FakeVisitorChannel:
    def __init__(self) -> None:
        self.events: list[tuple[ConversationId, VisitorEvent]] = []
        self.watching: set[ConversationId] = set()

    def is_watching(self, conversation_id: ConversationId) -> bool:
        return conversation_id in self.watching

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None:
        self.events.append((conversation_id, event))

    def of(self, conversation_id: ConversationId, kind: type) -> list:
        return [e for c, e in self.events if c == conversation_id and isinstance(e, kind)]


class Settled:
    """A service whose every call is followed by running the outbox until nothing is due, as
    the dispatcher does right after each commit in production: a test sees the outcome of a
    use case, side effects included, when the call returns."""

    def __init__(self, store: Any, outbox: Dispatcher, *services: Any) -> None:
        self._store = store
        self._outbox = outbox
        self._services = services

    def __getattr__(self, name: str) -> Any:
        target = next(getattr(s, name) for s in self._services if hasattr(s, name))

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await target(*args, **kwargs)
            finally:
                await self._outbox.drain()
            # a conversation returned is shown as it is now, after its side effects
            if isinstance(result, Conversation):
                return await self._store.get_conversation(result.id)
            if isinstance(result, tuple) and result and isinstance(result[0], Conversation):
                return (await self._store.get_conversation(result[0].id), *result[1:])
            return result

        return call
