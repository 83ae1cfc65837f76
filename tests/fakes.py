"""In-memory twins of the core's ports, for unit tests of pure logic."""

from __future__ import annotations

import copy
import dataclasses
from contextlib import asynccontextmanager
from typing import AsyncIterator

from bridge.model import (
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
from bridge.ports import VisitorEvent


class FakeClock:
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
            ) = saved
            raise

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        yield  # one process: the services' own locks suffice

    @asynccontextmanager
    async def claim(self, name: str) -> AsyncIterator[bool]:
        yield True  # one process: the services' own locks decide

    async def add_visitor(self, visitor: Visitor, session_hash: str) -> None:
        self.visitors[visitor.id] = visitor
        self.sessions[session_hash] = visitor.id

    async def visitor_by_session(self, session_hash: str) -> Visitor | None:
        vid = self.sessions.get(session_hash)
        return self.visitors.get(vid) if vid else None

    async def get_visitor(self, visitor_id: VisitorId) -> Visitor | None:
        return self.visitors.get(visitor_id)

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

    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None:
        return self.conversations.get(conversation_id)

    async def conversation_by_room(self, room_id: RoomId) -> Conversation | None:
        return next((c for c in self.conversations.values() if c.room_id == room_id), None)

    async def latest_conversation(self, visitor_id: VisitorId) -> Conversation | None:
        mine = [c for c in self.conversations.values() if c.visitor_id == visitor_id]
        return max(mine, key=lambda c: (c.status.is_open, c.created_at), default=None)

    async def rooms_to_close(self) -> list[Conversation]:
        return [
            c
            for c in self.conversations.values()
            if not c.status.is_open and c.room_id is not None and not c.room_closed
        ]

    async def invites_to_withdraw(self) -> list[Conversation]:
        return [c for c in self.conversations.values() if c.invites_to_withdraw]

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

    async def mark_delivered(self, message_id: MessageId, event_id: EventId) -> None:
        for log in self.messages_.values():
            for i, m in enumerate(log):
                if m.id == message_id:
                    log[i] = dataclasses.replace(m, delivered=True, event_id=event_id)

    async def undelivered_messages(self, conversation_id: ConversationId) -> list[Message]:
        return [m for m in self.messages_.get(conversation_id, []) if not m.delivered]

    @asynccontextmanager
    async def claim_undelivered(
        self, conversation_id: ConversationId
    ) -> AsyncIterator[list[Message]]:
        yield await self.undelivered_messages(conversation_id)

    async def conversations_with_undelivered(self) -> set[ConversationId]:
        return {cid for cid, log in self.messages_.items() if any(not m.delivered for m in log)}

    async def save_advisor(self, advisor: Advisor) -> None:
        self.advisors_[advisor.mxid] = advisor

    async def get_advisor(self, mxid: AdvisorMxid) -> Advisor | None:
        return self.advisors_.get(mxid)

    async def remove_advisor(self, mxid: AdvisorMxid) -> bool:
        return self.advisors_.pop(mxid, None) is not None

    async def advisors(self) -> list[Advisor]:
        return sorted(self.advisors_.values(), key=lambda a: a.mxid)

    async def get_setting(self, key: str) -> str | None:
        return self.settings.get(key)

    async def set_setting(self, key: str, value: str) -> None:
        self.settings[key] = value


class FakeMatrixGateway:
    """Records what would have been sent to Matrix in ``sent``."""

    def __init__(self) -> None:
        self.sent: list[tuple] = []
        self.rooms = 0
        self.fail_next: Exception | None = None
        self.present: set[tuple[RoomId, AdvisorMxid]] = set()
        self.puppets_in: set[tuple[RoomId, PuppetMxid]] = set()  # joined, not left yet
        self.landed: set[str] = set()  # txn ids of sends that reached the room
        self.lose_answer_next = False

    def _maybe_fail(self) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error

    async def create_puppet(self, visitor: Visitor) -> PuppetMxid:
        self._maybe_fail()
        mxid = PuppetMxid(f"@sb_visitor_{visitor.id}:test")
        self.sent.append(("puppet", mxid, f"{visitor.name} (visitor)"))
        return mxid

    async def create_room(self, puppet: PuppetMxid, name: str, topic: str) -> RoomId:
        self._maybe_fail()
        self.rooms += 1
        room = RoomId(f"!room{self.rooms}:test")
        self.sent.append(("room", room, puppet, name))
        return room

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

    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        self.sent.append(("leave", room_id, puppet))
        self.puppets_in.discard((room_id, puppet))

    def of(self, kind: str) -> list[tuple]:
        return [s for s in self.sent if s[0] == kind]


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
