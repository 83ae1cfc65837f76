"""The desk as a state machine: Hypothesis drives advisors, visitors, the clock and an unreliable
homeserver through the real services on the in-memory fakes, and checks the routing and
delivery rules after every step.

The services are async and the machine is not: each machine owns a private event loop and runs
every coroutine to completion on it, so one step is one whole use case, as it is when the
appservice handles one event. ``TestDesk`` is a plain ``unittest`` case, which pytest-asyncio
leaves alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging
import sys
import uuid
from typing import Any, Awaitable, Callable, Sequence, TypeVar
from unittest import mock

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import bridge.services.conversations as conversations_module
import bridge.services.queue as queue_module
from bridge.errors import InvalidInput, NoOpenConversation, NotFound, Unavailable
from bridge.model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    EventId,
    Message,
    Presence,
    PuppetMxid,
    RoomId,
    RoutingSettings,
    Sender,
)
from bridge.ports import ReadEvent, StatusEvent
from bridge.routing import advisor_load, queue_positions
from bridge.services.advisors import AdvisorService
from bridge.services.conversations import ConversationService
from bridge.services.presenter import Presenter
from bridge.services.queue import QueueService
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel, MemoryStore

from .conftest import TOPICS, Desk

T = TypeVar("T")

ADVISORS = tuple(AdvisorMxid(f"@{name}:hs") for name in ("ana", "bob", "cid"))
COLLEAGUE = AdvisorMxid("@zed:hs")  # a Matrix user who is never made an advisor
SESSIONS = ("s0", "s1", "s2", "s3")
DEFAULT_CAPACITY = 2
INVITE_TIMEOUT = 60.0
ABANDON_AFTER = 300.0
INTRO = "New visitor:"

# What may run at the same time in production: portal requests run concurrently with each
# other, with the one housekeeping task and with the Matrix side; Matrix events (joins, leaves,
# commands, presence) are handled one at a time (appservice/transactions.py), and there is one
# ticker. So the first use case is any, the second a visitor's request or the tick.
VISITOR_SIDE = ("visitor_starts", "visitor_sends", "visitor_ends")
MATRIX_SIDE = (
    "owner_leaves",
    "advisor_joins",
    "advisor_closes",
    "advisor_available",
    "advisor_away",
    "advisor_offline",
    "advisor_online",
)

# Product bugs the machine found and that are not fixed yet. Each has an xfail(strict)
# regression test at the end of this file; the machine steps around it (or skips that one
# check) so it keeps looking for others. When a fix makes its test pass, remove the xfail mark
# and the entry here, and the machine checks that rule again.
KNOWN_BUGS: set[str] = set()


# Fields of a conversation that record how far the Matrix side has got, not what the
# conversation is: they may still move after the end (see ended_conversations_never_change).
ROOM_BOOKKEEPING = tuple(
    f.name
    for f in dataclasses.fields(Conversation)
    if f.name in ("room_id", "puppet", "announced", "room_closed", "invited")
)


class Outage(Exception):
    """What the fake homeserver raises when the machine told it to fail."""


class FlakyGateway(FakeMatrixGateway):
    """The fake homeserver, able to fail a later call than the next one (``fail_next`` fails
    only the next), and failing withdrawals and leaves too; a withdrawal is a kick, so the
    advisor is no longer in the room. ``failures`` counts the outages that fired (lost answers
    included), so a check can tell whether one happened during a use case. ``withdrawals_to_fail``
    fails that many withdrawals, whatever comes between (an outage that hits kicks only would
    otherwise be rare). Offering a visitor
    to an advisor who is in the room already sends no invite, as the real gateway does: it is
    noted as ``member``, not ``invite``."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_before_failure: int | None = None
        self.failures = 0
        self.withdrawals_to_fail = 0

    def _maybe_fail(self) -> None:
        if self.calls_before_failure is not None:
            if self.calls_before_failure == 0:
                self.calls_before_failure = None
                self.fail_next = Outage("the homeserver is down")
            else:
                self.calls_before_failure -= 1
        if self.fail_next is not None:
            self.failures += 1
        super()._maybe_fail()

    async def invite_advisor(self, room_id: RoomId, advisor: AdvisorMxid) -> bool:
        if (room_id, advisor) not in self.present:
            return await super().invite_advisor(room_id, advisor)
        self._maybe_fail()  # looking up the membership is a call to the homeserver too
        self.sent.append(("member", room_id, advisor))
        return True

    @property
    def failing(self) -> bool:
        return (
            self.fail_next is not None
            or self.calls_before_failure is not None
            or self.withdrawals_to_fail > 0
            or self.lose_answer_next
        )

    async def send_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, body: str, txn_id: str
    ) -> EventId:
        if self.lose_answer_next and self.fail_next is None and self.calls_before_failure != 0:
            self.failures += 1
        return await super().send_visitor_text(room_id, puppet, body, txn_id)

    async def revoke_invite(self, room_id: RoomId, advisor: AdvisorMxid, reason: str) -> None:
        if self.withdrawals_to_fail > 0:
            self.withdrawals_to_fail -= 1
            self.failures += 1
            raise Outage("the homeserver fails withdrawals")
        self._maybe_fail()
        await super().revoke_invite(room_id, advisor, reason)
        self.present.discard((room_id, advisor))

    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        self._maybe_fail()
        await super().puppet_leave(room_id, puppet)


class WatchedStore(MemoryStore):
    """The reference store, noting every write that changes a conversation already ended
    (an invariant checked between steps could miss a change made and kept within one step)."""

    def __init__(self) -> None:
        super().__init__()
        self.changed_after_end: list[tuple[Conversation, Conversation]] = []

    async def save_conversation(self, conversation: Conversation) -> None:
        old = self.conversations.get(conversation.id)
        if old is not None and not old.status.is_open and old != conversation:
            self.changed_after_end.append((old, conversation))
        await super().save_conversation(conversation)


class Yielding:
    """A proxy whose every async call first yields to the event loop, as a round trip to a
    database or homeserver does. Alone, a use case runs exactly as before; two run together
    interleave at every I/O point (the fakes never suspend, so without this they could not)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def suspending(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return await attr(*args, **kwargs)

        return suspending


class _CountingUuid:
    """Stands in for the ``uuid`` module inside the services: ids in creation order.

    Conversation ids break ties in the queue order, so random ids would make a run differ from
    its replay and Hypothesis could not shrink a failure.
    """

    def __init__(self) -> None:
        self._n = 0

    def uuid4(self) -> uuid.UUID:
        self._n += 1
        return uuid.UUID(int=self._n)


def capacity_of(advisor: Advisor) -> int:
    return advisor.capacity if advisor.capacity is not None else DEFAULT_CAPACITY


def eligible(advisor: Advisor | None) -> bool:
    """May receive a new visitor: said available, and their Matrix client allows it."""
    return advisor is not None and advisor.available and advisor.reachable


class ObservedQueue(QueueService):
    """The real queue, with a hook after every routing pass (where the routing rules apply)."""

    observer: Callable[[dict[ConversationId, Conversation], int, bool], None] | None = None

    def __init__(self, *args: Any, memory: MemoryStore, fake: FlakyGateway) -> None:
        super().__init__(*args)
        self._memory = memory
        self._fake_gateway = fake

    async def dispatch(self) -> None:
        before = dict(self._memory.conversations)
        sent_before = len(self._fake_gateway.sent)
        failures = self._fake_gateway.failures
        await super().dispatch()
        failed = self._fake_gateway.failures != failures
        if self.observer is not None:
            self.observer(before, sent_before, failed)


class DeskMachine(RuleBasedStateMachine):
    """Invariants checked (the exact rules):

    After every step:
      * a visitor has at most one open conversation, and ``current()`` shows it to them;
      * ``inviting`` has an advisor, a deadline and a room; ``waiting`` has neither advisor
        nor deadline; ``active`` has an advisor and no deadline;
      * each conversation's messages have seq 1..n, no client_id twice in a conversation, no
        Matrix event id twice anywhere;
      * an ended conversation and its transcript never change (checked at every write, not
        only between steps); only the Matrix-side bookkeeping may still progress: a room that
        was being made is attached (never replaced), ``announced``, ``room_closed``, and
        invites are crossed off ``invited`` as they are withdrawn (never added);
      * in every room, the visitor texts that reached it are the visitor's messages in seq
        order, each once: the delivered ones, plus at most the next one (it landed, but the
        answer was lost; the retry must find it rather than send it again);
      * nobody keeps an invite to a room unless the conversation is still offered to them
        (every other invite was withdrawn, or taken by joining), or its withdrawal failed
        and is recorded to be retried (in ``invites_to_withdraw``).
    After every routing pass (``dispatch``) outside a concurrent step:
      * every advisor who got a NEW offer in that pass (a conversation that became ``inviting``
        for them, or got a fresh deadline) is still an advisor, available, reachable (presence
        online or unknown), and holds at most their capacity of offered + active conversations
        right after the pass. Holding more is possible (the capacity was lowered afterwards,
        or they joined a waiting room unasked), but then no new offer may be added on top;
      * every invite the gateway sent in that pass went to such an advisor;
      if no injected failure fired during the pass (a failed invite leaves its visitor waiting
      for the next tick, on purpose):
      * nobody with a room waits while an eligible advisor has spare capacity. The skipped
        rule in ``bridge/routing.py`` only reorders: a skipped advisor is passed over while
        anyone else has room, but is offered the visitor again rather than leave them waiting;
      * the last status published to every conversation is its current status, and for a
        waiting one its current place: the places shown are exactly 1..k.
    Once failures stop and ``tick()`` runs (rule ``homeserver_recovers``, and the teardown):
      * every visitor message of a conversation with a room reached it exactly once, in order,
        also what was still on its way when the chat ended;
      * every open conversation has its room and its intro notice, posted once;
      * every ended conversation with a room was closed: the visitor's puppet left;
      * nobody keeps an invite to a room that is not offered to them, and no withdrawal is
        left to retry.
    """

    def __init__(self) -> None:
        super().__init__()
        ids = _CountingUuid()  # one counter: message ids of both modules share a table
        self._patches = [
            mock.patch.object(conversations_module, "uuid", ids),
            mock.patch.object(queue_module, "uuid", ids),
        ]
        for patch in self._patches:
            patch.start()
        # the outages are on purpose: their warnings (with tracebacks) would drown a failure
        self._log = logging.getLogger("bridge")
        self._log_level = self._log.level
        self._log.setLevel(logging.CRITICAL)
        self.loop = asyncio.new_event_loop()
        self.store = WatchedStore()
        self.gateway = FlakyGateway()
        self.channel = FakeVisitorChannel()
        self.clock = FakeClock()
        # the services see suspending twins; the checks read the fakes directly
        store: Any = Yielding(self.store)
        gateway: Any = Yielding(self.gateway)
        presenter = Presenter(store, self.channel, TOPICS)
        self.queue = ObservedQueue(
            store,
            gateway,
            presenter,
            self.clock,
            RoutingSettings(DEFAULT_CAPACITY, INVITE_TIMEOUT),
            memory=self.store,
            fake=self.gateway,
        )
        self.queue.observer = self._after_dispatch
        self.concurrent = False  # two use cases in flight: the routing checks do not apply
        self.conversations = ConversationService(
            store,
            gateway,
            self.channel,
            presenter,
            self.queue,
            self.clock,
            TOPICS,
            abandon_after=ABANDON_AFTER,
        )
        self.advisors = AdvisorService(store, self.queue)
        self.counter = 0
        self.sent: dict[str, list[tuple[str | None, str]]] = {s: [] for s in SESSIONS}
        self.advisor_events: list[tuple[RoomId, AdvisorMxid, EventId, str]] = []
        self.ended: dict[ConversationId, tuple[Conversation, list[Message]]] = {}

    # -- plumbing -----------------------------------------------------------------------------

    def run(self, coro: Awaitable[T]) -> T:
        return self.loop.run_until_complete(coro)

    def attempt(self, coro: Awaitable[T], *expected: type[Exception]) -> T | Exception:
        """Run a use case; the errors it may legitimately raise come back as values."""
        try:
            return self.run(coro)
        except expected as e:
            return e

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def by_creation(self, *statuses: ConversationStatus) -> list[Conversation]:
        found = [
            c for c in self.store.conversations.values() if not statuses or c.status in statuses
        ]
        return sorted(found, key=lambda c: c.id)  # ids count up in creation order

    def with_room(self) -> list[Conversation]:
        return [c for c in self.by_creation() if c.room_id is not None]

    def open_of(self, session: str) -> Conversation | None:
        visitor_id = self.store.sessions.get(session)
        return next(
            (c for c in self.by_creation() if c.visitor_id == visitor_id and c.status.is_open),
            None,
        )

    def load(self) -> Any:
        return advisor_load(self.store.conversations.values())

    # -- advisors -----------------------------------------------------------------------------

    @rule(mxid=st.sampled_from(ADVISORS))
    def add_advisor(self, mxid: AdvisorMxid) -> None:
        self.run(self.advisors.add(mxid))

    @rule(mxid=st.sampled_from(ADVISORS))
    def remove_advisor(self, mxid: AdvisorMxid) -> None:
        self.attempt(self.advisors.remove(mxid), NotFound)

    @rule(mxid=st.sampled_from(ADVISORS), available=st.booleans())
    def advisor_says_available_or_away(self, mxid: AdvisorMxid, available: bool) -> None:
        self.attempt(self.advisors.set_available(mxid, available), NotFound)

    @rule(mxid=st.sampled_from(ADVISORS + (COLLEAGUE,)), presence=st.sampled_from(Presence))
    def presence_changes(self, mxid: AdvisorMxid, presence: Presence) -> None:
        self.run(self.advisors.presence_changed(mxid, presence))

    @rule(mxid=st.sampled_from(ADVISORS), capacity=st.sampled_from([None, 1, 2, 3, 0]))
    def capacity_changes(self, mxid: AdvisorMxid, capacity: int | None) -> None:
        outcome = self.attempt(self.advisors.set_capacity(mxid, capacity), NotFound, InvalidInput)
        assert isinstance(outcome, InvalidInput) == (capacity == 0)

    # -- visitors -----------------------------------------------------------------------------

    @rule(session=st.sampled_from(SESSIONS))
    def visitor_starts(self, session: str) -> None:
        already = self.open_of(session)
        body = self.fresh("hello ")
        form = {"name": f"Visitor {session}", "email": "", "topic": "general", "message": body}
        conversation, created = self.run(self.conversations.start(session, form))
        if already is not None:
            # a double click or a second tab: the open conversation, nothing new
            assert (conversation.id, created) == (already.id, False)
        else:
            assert created and conversation.status.is_open
            self.channel.watching.add(conversation.id)  # the chat page is open

    @rule(session=st.sampled_from(SESSIONS), retry=st.booleans(), pick=st.integers(0, 50))
    def visitor_sends(self, session: str, retry: bool, pick: int) -> None:
        earlier = self.sent[session]
        if retry and earlier:
            client_id, body = earlier[pick % len(earlier)]  # the same message, sent again
        else:
            client_id, body = self.fresh("c"), self.fresh("text ")
            if pick % 10 == 0:
                client_id = None  # a client without ids: refused, nothing stored
            else:
                earlier.append((client_id, body))
        conversation = self.open_of(session)
        before = list(self.store.messages_.get(conversation.id, [])) if conversation else []
        failures = self.gateway.failures
        outcome = self.attempt(
            self.conversations.visitor_message(session, client_id, body),
            NoOpenConversation,
            Unavailable,
            InvalidInput,
        )
        if client_id is None:
            assert isinstance(outcome, InvalidInput), outcome
            if conversation is not None:
                assert self.store.messages_.get(conversation.id, []) == before
            return
        if conversation is None:
            assert isinstance(outcome, NoOpenConversation), outcome
            return
        if isinstance(outcome, Unavailable):
            # saved, not delivered: only ever because the homeserver failed just now
            assert self.gateway.failures > failures, outcome
        after = self.store.messages_[conversation.id]
        resent = any(m.client_id == client_id for m in before)
        assert len(after) == len(before) + (0 if resent else 1)

    @rule(session=st.sampled_from(SESSIONS))
    def visitor_ends(self, session: str) -> None:
        outcome = self.attempt(self.conversations.visitor_end(session), NoOpenConversation)
        if isinstance(outcome, Conversation):
            assert outcome.status is ConversationStatus.ENDED
            assert self.open_of(session) is None

    @rule(session=st.sampled_from(SESSIONS), watching=st.booleans())
    def visitor_opens_or_closes_the_page(self, session: str, watching: bool) -> None:
        conversation = self.open_of(session)
        if conversation is not None:
            if watching:
                self.channel.watching.add(conversation.id)
            else:
                self.channel.watching.discard(conversation.id)

    # -- advisors in rooms --------------------------------------------------------------------

    async def _joins(self, room: RoomId, mxid: AdvisorMxid) -> None:
        self.gateway.joined(room, mxid)  # a member now: a later invite finds them present
        self.gateway.sent.append(("joined", room, mxid))  # for no_invite_is_left_dangling
        await self.conversations.advisor_joined(room, mxid)

    async def _leaves(self, room: RoomId, mxid: AdvisorMxid) -> None:
        self.gateway.present.discard((room, mxid))
        await self.conversations.advisor_left(room, mxid)

    @precondition(lambda self: self.by_creation(ConversationStatus.INVITING))
    @rule(pick=st.integers(0, 50))
    def invited_advisor_joins(self, pick: int) -> None:
        offers = self.by_creation(ConversationStatus.INVITING)
        offer = offers[pick % len(offers)]
        assert offer.room_id is not None and offer.advisor is not None
        self.run(self._joins(offer.room_id, offer.advisor))
        now = self.store.conversations[offer.id]
        assert (now.status, now.advisor) == (ConversationStatus.ACTIVE, offer.advisor)

    @precondition(lambda self: self.with_room())
    @rule(mxid=st.sampled_from(ADVISORS + (COLLEAGUE,)), pick=st.integers(0, 50))
    def someone_joins_a_room(self, mxid: AdvisorMxid, pick: int) -> None:
        """A late joiner (offer withdrawn), a wrong one (offered to somebody else), a colleague."""
        rooms = self.with_room()
        before = rooms[pick % len(rooms)]
        assert before.room_id is not None
        an_advisor = mxid in self.store.advisors_
        self.run(self._joins(before.room_id, mxid))
        now = self.store.conversations[before.id]
        if not an_advisor:  # a guest never takes a visitor, whatever the room's state
            assert now.advisor != mxid or now == before, now
        if before.status is ConversationStatus.INVITING and before.advisor != mxid:
            assert (now.status, now.advisor) == (before.status, before.advisor)
        if before.status is ConversationStatus.ACTIVE:
            assert (now.status, now.advisor) == (before.status, before.advisor)

    def withdrawals_pending(self) -> list[tuple[Conversation, AdvisorMxid]]:
        return [(c, mxid) for c in self.with_room() for mxid in c.invites_to_withdraw]

    @precondition(lambda self: self.withdrawals_pending())
    @rule(pick=st.integers(0, 50))
    def advisor_joins_on_an_invite_not_withdrawn_yet(self, pick: int) -> None:
        """The homeserver failed to withdraw an invite, and the advisor accepts it."""
        pending = self.withdrawals_pending()
        before, mxid = pending[pick % len(pending)]
        assert before.room_id is not None
        self.run(self._joins(before.room_id, mxid))
        now = self.store.conversations[before.id]
        # they take nothing, whatever became of the conversation (ended, offered to someone
        # else, waiting, with a colleague)
        assert (now.status, now.advisor) == (before.status, before.advisor), now

    @precondition(lambda self: self.with_room())
    @rule(mxid=st.sampled_from(ADVISORS + (COLLEAGUE,)), pick=st.integers(0, 50))
    def someone_leaves_a_room(self, mxid: AdvisorMxid, pick: int) -> None:
        rooms = self.with_room()
        conversation = rooms[pick % len(rooms)]
        assert conversation.room_id is not None
        self.run(self._leaves(conversation.room_id, mxid))

    @precondition(
        lambda self: self.by_creation(ConversationStatus.INVITING, ConversationStatus.ACTIVE)
    )
    @rule(pick=st.integers(0, 50))
    def owner_declines_or_leaves(self, pick: int) -> None:
        held = self.by_creation(ConversationStatus.INVITING, ConversationStatus.ACTIVE)
        conversation = held[pick % len(held)]
        assert conversation.room_id is not None and conversation.advisor is not None
        self.run(self._leaves(conversation.room_id, conversation.advisor))
        now = self.store.conversations[conversation.id]
        # back in the queue (possibly offered again at once, even to the same advisor if
        # nobody else has room), never closed by a decline
        assert now.status is not ConversationStatus.ENDED
        if now.status is ConversationStatus.ACTIVE:
            # handed at once to a colleague already in the room: no invite to wait for
            assert now.advisor != conversation.advisor, now
            assert (conversation.room_id, now.advisor) in self.gateway.present, now

    @precondition(lambda self: self.with_room())
    @rule(mxid=st.sampled_from(ADVISORS + (COLLEAGUE,)), pick=st.integers(0, 50))
    def advisor_says(self, mxid: AdvisorMxid, pick: int) -> None:
        rooms = self.with_room()
        conversation = rooms[pick % len(rooms)]
        assert conversation.room_id is not None
        event_id, body = EventId(self.fresh("$adv")), self.fresh("reply ")
        self.advisor_events.append((conversation.room_id, mxid, event_id, body))
        self._advisor_message(conversation.room_id, mxid, event_id, body)

    @precondition(lambda self: self.advisor_events)
    @rule(pick=st.integers(0, 50))
    def the_same_event_arrives_again(self, pick: int) -> None:
        room_id, mxid, event_id, body = self.advisor_events[pick % len(self.advisor_events)]
        self._advisor_message(room_id, mxid, event_id, body)

    def _advisor_message(self, room: RoomId, mxid: AdvisorMxid, event_id: EventId, body: str):
        conversation = self.run(self.store.conversation_by_room(room))
        assert conversation is not None
        known = self.run(self.store.message_by_event(event_id))
        count = len(self.store.messages_[conversation.id])
        message = self.run(
            self.conversations.advisor_message(room, mxid, "Ana", event_id, body, self.clock.t)
        )
        if not conversation.status.is_open:
            assert message is None
        elif known is not None:
            assert message == known and len(self.store.messages_[conversation.id]) == count
        else:
            assert message is not None and message.seq == count + 1

    @precondition(lambda self: self.advisor_events)
    @rule(pick=st.integers(0, 50), owner=st.booleans())
    def advisor_reads(self, pick: int, owner: bool) -> None:
        room, mxid, event_id, _body = self.advisor_events[pick % len(self.advisor_events)]
        conversation = self.run(self.store.conversation_by_room(room))
        assert conversation is not None
        reader = conversation.advisor if owner and conversation.advisor else mxid
        self.run(self.conversations.advisor_read(room, reader, event_id))

    @precondition(lambda self: self.with_room())
    @rule(mxid=st.sampled_from(ADVISORS + (COLLEAGUE,)), pick=st.integers(0, 50))
    def advisor_closes(self, mxid: AdvisorMxid, pick: int) -> None:
        rooms = self.with_room()
        conversation = rooms[pick % len(rooms)]
        assert conversation.room_id is not None
        ended = self.run(self.conversations.advisor_close(conversation.room_id, mxid, "Ana"))
        assert ended.status is ConversationStatus.ENDED

    # -- time, housekeeping and the homeserver ------------------------------------------------

    @rule(
        seconds=st.one_of(
            st.floats(0.5, 30),  # a moment
            st.floats(INVITE_TIMEOUT + 1, 2 * INVITE_TIMEOUT),  # an offer runs out
            st.floats(ABANDON_AFTER + 1, ABANDON_AFTER + 60),  # a closed page is given up
        )
    )
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.floats(-2 * INVITE_TIMEOUT, 2 * INVITE_TIMEOUT))
    def wall_clock_is_stepped(self, seconds: float) -> None:
        """NTP or an admin sets the wall clock, back or forward; no time passes."""
        self.clock.jump(seconds)

    @rule(
        first=st.sampled_from(MATRIX_SIDE + VISITOR_SIDE + ("tick",)),
        second=st.sampled_from(VISITOR_SIDE + ("tick",)),
        sessions=st.tuples(st.sampled_from(SESSIONS[:2]), st.sampled_from(SESSIONS[:2])),
        mxids=st.tuples(st.sampled_from(ADVISORS[:2]), st.sampled_from(ADVISORS[:2])),
        pick=st.integers(0, 50),
        lag=st.integers(0, 40),
    )
    def two_things_at_once(
        self,
        first: str,
        second: str,
        sessions: tuple[str, str],
        mxids: tuple[AdvisorMxid, AdvisorMxid],
        pick: int,
        lag: int,
    ) -> None:
        """Two use cases in flight together, as the portal and the appservice run them; the
        second starts ``lag`` round trips after the first."""
        if first == second == "tick":
            second = "visitor_sends"  # one ticker only
        coros = [
            self._use_case(first, sessions[0], mxids[0], pick, 0),
            self._use_case(second, sessions[1], mxids[1], pick, lag),
        ]
        existing = set(self.store.conversations)
        failures = self.gateway.failures
        self.concurrent = True
        try:
            outcomes = self.run(self._together(coros))
        finally:
            self.concurrent = False
        for outcome in outcomes:
            if isinstance(outcome, Unavailable):
                assert self.gateway.failures > failures, outcome
            elif isinstance(outcome, BaseException) and not isinstance(
                outcome, (NoOpenConversation, NotFound)
            ):
                raise outcome
        self.channel.watching.update(set(self.store.conversations) - existing)

    @staticmethod
    async def _together(coros: Sequence[Awaitable[None]]) -> list[Any]:
        return await asyncio.gather(*coros, return_exceptions=True)

    async def _use_case(
        self, name: str, session: str, mxid: AdvisorMxid, pick: int, delay: int
    ) -> None:
        for _ in range(delay):
            await asyncio.sleep(0)
        c = self.conversations
        held = self.by_creation(ConversationStatus.INVITING, ConversationStatus.ACTIVE)
        rooms = self.with_room()
        if name == "visitor_starts":
            form = {"name": "V", "email": "", "topic": "general", "message": self.fresh("hi ")}
            await c.start(session, form)
        elif name == "visitor_sends":
            await c.visitor_message(session, self.fresh("c"), self.fresh("text "))
        elif name == "visitor_ends":
            await c.visitor_end(session)
        elif name == "tick":
            await c.tick()
        elif name == "owner_leaves" and held:
            one = held[pick % len(held)]
            assert one.room_id is not None and one.advisor is not None
            await self._leaves(one.room_id, one.advisor)
        elif name == "advisor_joins" and rooms:
            room = rooms[pick % len(rooms)].room_id
            assert room is not None
            await self._joins(room, mxid)
        elif name == "advisor_closes" and rooms:
            room = rooms[pick % len(rooms)].room_id
            assert room is not None
            await c.advisor_close(room, mxid, "Ana")
        elif name == "advisor_available":
            await self.advisors.set_available(mxid, True)
        elif name == "advisor_away":
            await self.advisors.set_available(mxid, False)
        elif name == "advisor_offline":
            await self.advisors.presence_changed(mxid, Presence.OFFLINE)
        elif name == "advisor_online":
            await self.advisors.presence_changed(mxid, Presence.ONLINE)

    @rule()
    def tick(self) -> None:
        self.run(self.conversations.tick())

    @rule()
    def homeserver_loses_the_next_answer(self) -> None:
        """The next visitor text lands in the room, but the answer never comes back."""
        self.gateway.lose_answer_next = True

    @rule(calls_before=st.integers(0, 3))
    def homeserver_will_fail(self, calls_before: int) -> None:
        if calls_before == 0:
            self.gateway.fail_next = Outage("the homeserver is down")
        else:
            self.gateway.calls_before_failure = calls_before

    @rule(count=st.integers(1, 3))
    def homeserver_will_fail_withdrawals(self, count: int) -> None:
        self.gateway.withdrawals_to_fail = count

    @rule()
    def homeserver_recovers(self) -> None:
        self.gateway.fail_next = self.gateway.calls_before_failure = None
        self.gateway.withdrawals_to_fail = 0
        self.gateway.lose_answer_next = False
        self.run(self.conversations.tick())
        self._check_settled()

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None:  # the run passed: it must also settle
                self.homeserver_recovers()
        finally:
            self.loop.close()
            for patch in reversed(self._patches):
                patch.stop()
            self._log.setLevel(self._log_level)

    # -- the rules ----------------------------------------------------------------------------

    def _after_dispatch(
        self, before: dict[ConversationId, Conversation], sent_before: int, failed: bool
    ) -> None:
        if self.concurrent:
            return  # another use case may be half-way: the state is between two steps
        advisors = self.store.advisors_
        load = self.load()
        for c in self.store.conversations.values():
            old = before.get(c.id)
            if c.status is not ConversationStatus.INVITING or old == c:
                continue
            # a new offer: the advisor must be able to take one more visitor
            assert c.advisor is not None
            advisor = advisors.get(c.advisor)
            assert eligible(advisor), f"offered {c.id} to {advisor or c.advisor}"
            assert advisor is not None
            assert load[c.advisor] <= capacity_of(advisor), (
                f"{c.advisor} holds {load[c.advisor]} > capacity {capacity_of(advisor)} "
                "after a new offer"
            )
        for kind, _room, mxid, *_ in self.gateway.sent[sent_before:]:
            if kind in ("invite", "member"):
                assert eligible(advisors.get(mxid)), f"invited {mxid}"
        if failed:
            return
        spare = sorted(
            a.mxid for a in advisors.values() if eligible(a) and load[a.mxid] < capacity_of(a)
        )
        stranded = [
            c.id for c in self.by_creation(ConversationStatus.WAITING) if c.room_id is not None
        ]
        assert not (spare and stranded), f"{stranded} wait while {spare} have room"
        positions = queue_positions(self.store.conversations.values())
        assert sorted(positions.values()) == list(range(1, len(positions) + 1))
        for c in self.store.conversations.values():
            # what the visitor's page shows last is where the conversation stands
            shown = self.channel.of(c.id, StatusEvent)
            assert shown, f"{c.id} never told its status"
            view = shown[-1].conversation
            assert (view.status, view.queue_position) == (c.status.value, positions.get(c.id)), (
                c,
                view,
            )

    def _check_settled(self) -> None:
        # every invite that is no longer an offer was withdrawn; none waits for a retry
        assert not self._dangling_invites(), self._dangling_invites()
        assert not self.run(self.store.invites_to_withdraw())
        for c in self.by_creation():
            said = [m for m in self.store.messages_[c.id] if m.sender is Sender.VISITOR]
            landed = [s[2] for s in self.gateway.of("text") if s[1] == c.room_id]
            if c.room_id is None:
                assert not c.status.is_open, f"{c.id} still has no room"
                continue  # ended before its room was made: nothing could be delivered
            # everything the visitor wrote reached the room, once each, in order, also what
            # was still on its way when the chat ended
            assert all(m.delivered for m in said), f"{c.id}: not delivered"
            assert landed == [m.body for m in said], f"{c.id}: not each once: {landed}"
            if not c.status.is_open:
                # the room was told, and the visitor's puppet left it
                assert ("leave", c.room_id, c.puppet) in self.gateway.sent, c.id
                continue
            assert c.puppet is not None, c
            intros = [
                s
                for s in self.gateway.of("notice")
                if s[1] == c.room_id and s[2].startswith(INTRO)
            ]
            assert len(intros) == 1, f"{c.id}: {len(intros)} intro notices"

    @invariant()
    def one_open_conversation_per_visitor_and_they_see_it(self) -> None:
        for session in SESSIONS:
            visitor_id = self.store.sessions.get(session)
            mine = [
                c
                for c in self.store.conversations.values()
                if c.visitor_id == visitor_id and c.status.is_open
            ]
            assert len(mine) <= 1, mine
            if mine:
                current = self.run(self.conversations.current(session))
                assert current is not None and current.id == mine[0].id, (session, current)

    @invariant()
    def no_invite_is_left_dangling(self) -> None:
        """An advisor's last invite to a room is withdrawn, or taken (joined), unless the
        conversation is still offered to them: nobody is left with an invite to a chat that is
        not theirs (ended, or offered to somebody else). Until the homeserver is back, a
        withdrawal that failed is recorded, to be retried."""
        for mxid, c in self._dangling_invites():
            assert mxid in c.invites_to_withdraw, (f"{mxid} keeps an invite to {c.room_id}", c)

    def _dangling_invites(self) -> list[tuple[AdvisorMxid, Conversation]]:
        """Advisors left with an invite to a conversation that is not offered to them."""
        last: dict[tuple[str, str], str] = {}
        for kind, room, *rest in self.gateway.sent:
            if kind in ("invite", "member", "revoke", "joined"):
                last[(room, rest[0])] = kind
        dangling = []
        for (room, mxid), kind in last.items():
            if kind != "invite" or (room, mxid) in self.gateway.present:
                continue
            c = self.run(self.store.conversation_by_room(RoomId(room)))
            assert c is not None
            if (c.status, c.advisor) != (ConversationStatus.INVITING, mxid):
                dangling.append((AdvisorMxid(mxid), c))
        return dangling

    @invariant()
    def statuses_are_consistent(self) -> None:
        for c in self.store.conversations.values():
            if c.status is ConversationStatus.INVITING:
                assert c.advisor is not None and c.invite_deadline is not None, c
                assert c.room_id is not None, c
            elif c.status is ConversationStatus.WAITING:
                assert c.advisor is None and c.invite_deadline is None, c
            elif c.status is ConversationStatus.ACTIVE:
                assert c.advisor is not None and c.invite_deadline is None, c

    @invariant()
    def transcripts_are_numbered_once(self) -> None:
        event_ids: set[str] = set()
        for cid, log in self.store.messages_.items():
            assert [m.seq for m in log] == list(range(1, len(log) + 1)), cid
            client_ids = [m.client_id for m in log if m.client_id is not None]
            assert len(client_ids) == len(set(client_ids)), cid
            for m in log:
                if m.event_id is not None:
                    assert m.event_id not in event_ids, m
                    event_ids.add(m.event_id)

    @invariant()
    def ended_conversations_never_change(self) -> None:
        for c in self.store.conversations.values():
            if c.status.is_open:
                continue
            log = list(self.store.messages_[c.id])
            if c.id not in self.ended:
                self.ended[c.id] = (c, log)
                continue
            then, then_log = self.ended[c.id]
            assert [(m.seq, m.body) for m in log] == [(m.seq, m.body) for m in then_log]
        for old, new in self.store.changed_after_end:
            # the Matrix side of the end may still be under way: a room being made when the
            # visitor left is attached (and closed by tick), the room is marked closed, the
            # invites are withdrawn
            assert set(new.invited) <= set(old.invited), f"invited after the end: {new}"
            for name in ROOM_BOOKKEEPING:
                if name in ("room_id", "puppet") and getattr(old, name) is not None:
                    continue  # attached once, never replaced
                new = dataclasses.replace(new, **{name: getattr(old, name)})
            assert new == old, f"ended conversation changed: {old} -> {new}"

    @invariant()
    def rooms_get_visitor_text_once_in_order(self) -> None:
        texts: dict[str, list[str]] = {}
        for _kind, room, body in self.gateway.of("text"):
            texts.setdefault(room, []).append(body)
        for c in self.store.conversations.values():
            mine = [m for m in self.store.messages_[c.id] if m.sender is Sender.VISITOR]
            delivered = [m for m in mine if m.delivered]
            assert mine[: len(delivered)] == delivered, f"{c.id}: delivered out of order"
            if c.room_id is None:
                assert not delivered
                continue
            # what reached the room: the delivered ones, and at most the next one (it landed
            # but its answer was lost: not marked delivered until the retry finds it)
            landed = texts.pop(c.room_id, [])
            assert landed == [m.body for m in mine[: len(landed)]], f"{c.id}: {landed}"
            assert len(delivered) <= len(landed) <= len(delivered) + 1, c.id
        assert not texts, f"text sent to rooms of no conversation: {texts}"


DeskMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDesk = DeskMachine.TestCase


# -- regression tests for what the machine found --------------------------------------------
# Each is the smallest example of a product bug the machine found. Fixed ones pass; one not
# fixed yet is marked xfail(strict=True) and named in KNOWN_BUGS above.

FORM = {"name": "Vera", "email": "", "topic": "general", "message": "Hello"}


def make_desk(gateway: FakeMatrixGateway) -> Desk:
    """The desk of ``tests/bridge/conftest.py``, on a gateway of the test's choosing."""
    store, channel, clock = MemoryStore(), FakeVisitorChannel(), FakeClock()
    presenter = Presenter(store, channel, TOPICS)
    queue = QueueService(store, gateway, presenter, clock, RoutingSettings(3, 60.0))
    conversations = ConversationService(store, gateway, channel, presenter, queue, clock, TOPICS)
    return Desk(store, gateway, channel, clock, queue, conversations, AdvisorService(store, queue))


def intros_in(desk: Desk, room: RoomId | None) -> list[tuple]:
    return [s for s in desk.gateway.of("notice") if s[1] == room and s[2].startswith(INTRO)]


async def test_a_new_chat_after_the_clock_went_back_is_the_visitors_current_one(desk):
    await desk.visitor("s1")
    await desk.conversations.visitor_end("s1")
    desk.clock.advance(-5)  # NTP steps the wall clock back
    again, created = await desk.conversations.start("s1", FORM)
    assert created and again.status.is_open
    current = await desk.conversations.current("s1")
    assert current is not None and current.id == again.id
    message = await desk.conversations.visitor_message("s1", "c1", "Are you there?")
    assert message.conversation_id == again.id


async def test_the_intro_is_posted_once_the_homeserver_is_back():
    desk = make_desk(FlakyGateway())
    desk.gateway.calls_before_failure = 2  # puppet and room made, then the intro fails
    conversation, _ = await desk.conversations.start("s1", FORM)
    await desk.conversations.tick()
    assert desk.gateway.of("text") == [("text", conversation.room_id, "Hello")]
    assert len(intros_in(desk, conversation.room_id)) == 1


async def test_what_the_visitor_wrote_before_ending_reaches_the_advisor(desk):
    conversation, _ = await desk.conversations.start("s1", FORM)
    desk.gateway.fail_next = Outage("the homeserver is down")
    with pytest.raises(Unavailable):
        await desk.conversations.visitor_message("s1", "c1", "My order is 1234")
    await desk.conversations.visitor_end("s1")
    await desk.conversations.tick()
    texts = [s[2] for s in desk.gateway.of("text") if s[1] == conversation.room_id]
    assert texts == ["Hello", "My order is 1234"]


async def test_the_puppet_leaves_an_ended_chat_once_the_homeserver_is_back(desk):
    conversation, _ = await desk.conversations.start("s1", FORM)
    desk.gateway.fail_next = Outage("the homeserver is down")
    await desk.conversations.visitor_end("s1")
    await desk.conversations.tick()
    assert ("leave", conversation.room_id, conversation.puppet) in desk.gateway.sent


class SlowRooms(FakeMatrixGateway):
    """Creating a room takes until the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.creating = asyncio.Event()
        self.proceed = asyncio.Event()

    async def create_room(self, puppet: PuppetMxid, name: str, topic: str) -> RoomId:
        self.creating.set()
        await self.proceed.wait()
        return await super().create_room(puppet, name, topic)


async def test_a_chat_ended_while_its_room_is_made_is_left():
    desk = make_desk(SlowRooms())
    starting = asyncio.create_task(desk.conversations.start("s1", FORM))
    await desk.gateway.creating.wait()
    (conversation_id,) = desk.store.conversations
    ending = asyncio.create_task(desk.conversations.visitor_end("s1"))
    for _ in range(1000):  # until the end is recorded (its room work may wait for the room)
        if not desk.store.conversations[conversation_id].status.is_open:
            break
        await asyncio.sleep(0)
    desk.gateway.proceed.set()
    await asyncio.wait_for(asyncio.gather(starting, ending), 5)
    await desk.conversations.tick()
    assert desk.store.conversations[conversation_id].status is ConversationStatus.ENDED
    _kind, room, puppet, _name = desk.gateway.of("room")[0]
    assert ("leave", room, puppet) in desk.gateway.sent


async def test_a_read_receipt_after_the_end_changes_nothing(desk):
    advisor = ADVISORS[0]
    await desk.advisor(advisor)
    conversation_id = await desk.visitor("s1")
    room = (await desk.conv(conversation_id)).room_id
    await desk.conversations.advisor_joined(room, advisor)
    reply = await desk.conversations.advisor_message(
        room, advisor, "Ana", EventId("$reply"), "How can I help?", desk.clock.now()
    )
    assert reply is not None
    ended = await desk.conversations.advisor_close(room, advisor, "Ana")
    reads = len(desk.channel.of(conversation_id, ReadEvent))
    await desk.conversations.advisor_read(room, advisor, EventId("$reply"))
    assert (await desk.conv(conversation_id)).read_up_to == ended.read_up_to
    assert len(desk.channel.of(conversation_id, ReadEvent)) == reads


class HeldInvites(FakeMatrixGateway):
    """Sending an invite takes until the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.inviting = asyncio.Event()
        self.proceed = asyncio.Event()

    async def invite_advisor(self, room_id: RoomId, advisor: AdvisorMxid) -> bool:
        self.inviting.set()
        await self.proceed.wait()
        return await super().invite_advisor(room_id, advisor)


async def test_a_visitor_who_ended_is_not_shown_a_queue_place_afterwards():
    desk = make_desk(HeldInvites())
    await desk.visitor("s1")
    second = await desk.visitor("s2")  # nobody on duty: both wait, s2 second
    await desk.advisors.add(ADVISORS[0])
    await desk.advisors.set_capacity(ADVISORS[0], 1)
    on_duty = asyncio.create_task(desk.advisors.set_available(ADVISORS[0], True))
    await desk.gateway.inviting.wait()  # s1 is being offered
    await desk.conversations.visitor_end("s2")
    desk.gateway.proceed.set()
    await asyncio.wait_for(on_duty, 5)
    last = desk.channel.of(second, StatusEvent)[-1].conversation
    assert (last.status, last.queue_position) == ("ended", None)


async def test_an_invite_is_withdrawn_once_the_homeserver_is_back():
    desk = make_desk(FlakyGateway())
    await desk.advisor(ADVISORS[0])
    conversation_id = await desk.visitor("s1")
    offered = await desk.conv(conversation_id)
    assert offered.status is ConversationStatus.INVITING
    desk.gateway.fail_next = Outage("the homeserver is down")
    await desk.conversations.visitor_end("s1")
    await desk.conversations.tick()
    actions = [s[0] for s in desk.gateway.sent if s[0] in ("invite", "revoke")]
    assert actions[-1] == "revoke", actions


class RefusesWithdrawals(FakeMatrixGateway):
    """A homeserver that fails every withdrawal until the test says it is back; a withdrawal
    is a kick, so the advisor is no longer in the room."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True

    async def revoke_invite(self, room_id: RoomId, advisor: AdvisorMxid, reason: str) -> None:
        if self.down:
            raise Outage("the homeserver is down")
        await super().revoke_invite(room_id, advisor, reason)
        self.present.discard((room_id, advisor))


def invites_of(desk: Desk, room: RoomId | None, mxid: AdvisorMxid) -> list[str]:
    """What the desk did about the advisor's invite to the room, in order."""
    return [
        kind
        for kind, *rest in desk.gateway.sent
        if kind in ("invite", "revoke") and tuple(rest[:2]) == (room, mxid)
    ]


async def joins(desk: Desk, room: RoomId | None, mxid: AdvisorMxid) -> None:
    assert room is not None
    desk.gateway.joined(room, mxid)
    await desk.conversations.advisor_joined(room, mxid)


async def test_joining_on_an_expired_invite_not_yet_withdrawn_takes_nothing_from_a_colleague():
    desk = make_desk(RefusesWithdrawals())
    ana, bob = ADVISORS[:2]
    await desk.advisor(ana)
    await desk.advisor(bob)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    desk.clock.advance(INVITE_TIMEOUT + 1)
    await desk.conversations.tick()  # ana's offer ran out (withdrawing it fails): bob's now
    await joins(desk, room, ana)  # ana accepts the invite she still has
    conv = await desk.conv(cid)
    assert (conv.status, conv.advisor) == (ConversationStatus.INVITING, bob)
    desk.gateway.down = False
    await desk.conversations.tick()
    assert invites_of(desk, room, ana) == ["invite", "revoke"]  # removed once it could be
    assert not await desk.store.invites_to_withdraw()
    await joins(desk, room, bob)
    conv = await desk.conv(cid)
    assert (conv.status, conv.advisor, conv.invited) == (ConversationStatus.ACTIVE, bob, ())


async def test_joining_an_ended_chat_on_an_invite_not_yet_withdrawn_changes_nothing():
    desk = make_desk(RefusesWithdrawals())
    ana = ADVISORS[0]
    await desk.advisor(ana)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    await desk.conversations.visitor_end("s1")
    ended, transcript = await desk.conv(cid), await desk.store.messages(cid)
    await joins(desk, room, ana)
    assert await desk.conv(cid) == ended
    assert await desk.store.messages(cid) == transcript  # no "Ana joined the chat."
    desk.gateway.down = False
    await desk.conversations.tick()
    assert invites_of(desk, room, ana) == ["invite", "revoke"]
    assert (await desk.conv(cid)).invited == ()


async def test_joining_on_an_invite_taken_back_does_not_take_the_waiting_visitor():
    desk = make_desk(RefusesWithdrawals())
    ana = ADVISORS[0]
    await desk.advisor(ana)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    await desk.advisors.set_available(ana, False)  # her offer is taken back (which fails)
    await joins(desk, room, ana)
    conv = await desk.conv(cid)
    assert (conv.status, conv.advisor) == (ConversationStatus.WAITING, None)
    desk.gateway.down = False
    await desk.conversations.tick()
    assert invites_of(desk, room, ana) == ["invite", "revoke"]
    await desk.advisors.set_available(ana, True)  # back on duty: offered properly
    assert invites_of(desk, room, ana) == ["invite", "revoke", "invite"]


async def test_an_advisor_offered_the_visitor_again_keeps_the_new_invite():
    desk = make_desk(RefusesWithdrawals())
    ana = ADVISORS[0]
    await desk.advisor(ana)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    desk.clock.advance(INVITE_TIMEOUT + 1)
    await desk.conversations.tick()  # ran out; nobody else: offered to ana again at once
    desk.gateway.down = False
    await desk.conversations.tick()
    assert invites_of(desk, room, ana) == ["invite", "invite"]  # the new one is not withdrawn
    await joins(desk, room, ana)
    assert (await desk.conv(cid)).status is ConversationStatus.ACTIVE


async def test_an_invite_on_its_way_when_the_chat_ends_is_withdrawn_after_it_lands():
    desk = make_desk(HeldInvites())
    ana = ADVISORS[0]
    await desk.advisors.add(ana)
    cid = await desk.visitor("s1")  # nobody on duty yet: waits
    room = (await desk.conv(cid)).room_id
    on_duty = asyncio.create_task(desk.advisors.set_available(ana, True))
    await desk.gateway.inviting.wait()
    ending = asyncio.create_task(desk.conversations.visitor_end("s1"))
    for _ in range(100):  # the end is recorded; its withdrawal must wait for the invite
        await asyncio.sleep(0)
    assert not (await desk.conv(cid)).status.is_open
    desk.gateway.proceed.set()
    await asyncio.wait_for(asyncio.gather(on_duty, ending), 5)
    assert invites_of(desk, room, ana) == ["invite", "revoke"]


async def test_a_chat_that_ends_before_its_invite_is_sent_gets_no_invite():
    desk = make_desk(FakeMatrixGateway())
    ana = ADVISORS[0]
    await desk.advisors.add(ana)
    cid = await desk.visitor("s1")  # nobody on duty yet: waits
    room = (await desk.conv(cid)).room_id
    # the routing pass offers the visitor; the end runs between the offer and its invite
    await asyncio.gather(
        desk.advisors.set_available(ana, True), desk.conversations.visitor_end("s1")
    )
    assert (await desk.conv(cid)).status is ConversationStatus.ENDED
    assert invites_of(desk, room, ana)[-1:] == ["revoke"]
