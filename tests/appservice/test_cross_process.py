"""Two processes on one PostgreSQL schema racing over the same conversations.

Each "process" is a full set of core services on its own database pool, run in its own
context (as separate processes would be); the gateway is the in-memory fake.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

import pytest

from appservice.db import SqlStore, close_database, open_database
from bridge.model import AdvisorMxid, ConversationStatus, RoutingSettings
from bridge.services.advisors import AdvisorService
from bridge.services.conversations import ConversationService
from bridge.services.presenter import Presenter
from bridge.services.queue import QueueService
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel
from tests.pg import fresh_schema_url

A, B = AdvisorMxid("@ana:hs"), AdvisorMxid("@bob:hs")
FORM = {"name": "Vera", "topic": "general", "message": "hi"}


class SlowStore(SqlStore):
    """Reads take a while, as under load: wide open windows for a race to fall into."""

    async def open_conversations(self):  # type: ignore[no-untyped-def]
        found = await super().open_conversations()
        await asyncio.sleep(0.02)
        return found

    async def get_conversation(self, conversation_id):  # type: ignore[no-untyped-def]
        found = await super().get_conversation(conversation_id)
        await asyncio.sleep(0.02)
        return found


@dataclass
class Process:
    store: SqlStore
    gateway: FakeMatrixGateway
    queue: QueueService
    conversations: ConversationService
    advisors: AdvisorService


async def _process(url: str, clock: FakeClock) -> tuple[Process, Any]:
    db = await open_database(url)
    store, gateway, channel = SlowStore(db), FakeMatrixGateway(), FakeVisitorChannel()
    presenter = Presenter(store, channel, {"general": "General"})
    queue = QueueService(store, gateway, presenter, clock, RoutingSettings(1, 60.0))
    conversations = ConversationService(
        store, gateway, channel, presenter, queue, clock, {"general": "General"}
    )
    return Process(store, gateway, queue, conversations, AdvisorService(store, queue)), db


def apart(work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run as another process would: with no database connection borrowed from this one."""
    return asyncio.create_task(work(), context=contextvars.Context())  # type: ignore[arg-type]


@pytest.fixture
async def two():
    clock = FakeClock()
    async with fresh_schema_url() as url:
        (one, db1), (other, db2) = [await _process(url, clock) for _ in range(2)]
        other.gateway.rooms = 1000  # distinct fake room ids per process
        yield one, other, clock
        await close_database(db1)
        await close_database(db2)


async def test_two_processes_never_offer_more_than_an_advisors_capacity(two):
    one, other, clock = two
    await one.advisors.add(A)
    for i in range(6):
        clock.advance(1)
        await (one if i % 2 else other).conversations.start(f"s{i}", FORM)
    for _ in range(5):
        await one.advisors.set_available(A, False)  # her offers go back to the queue
        ana = await one.store.get_advisor(A)
        await one.store.save_advisor(dataclasses.replace(ana, available=True))  # no dispatch
        invites_before = len(one.gateway.of("invite")) + len(other.gateway.of("invite"))
        await asyncio.gather(*(apart(p.queue.dispatch) for p in (one, other, one, other)))
        invites = len(one.gateway.of("invite")) + len(other.gateway.of("invite"))
        assert invites - invites_before == 1  # one offer, made once, by one process
        held = [
            c
            for c in await one.store.open_conversations()
            if c.advisor == A and c.status is not ConversationStatus.WAITING
        ]
        assert len(held) == 1, held  # capacity 1, whichever process dispatched


async def test_an_accept_racing_an_expiry_leaves_exactly_one_owner(two):
    one, other, clock = two
    await one.advisors.add(A)
    await one.advisors.add(B)
    await one.advisors.set_available(A, True)
    await one.advisors.set_available(B, True)
    outcomes = set()
    for i in range(8):
        clock.advance(1)
        conversation, _ = await one.conversations.start(f"race{i}", FORM)
        offered = (await one.store.get_conversation(conversation.id)).advisor
        clock.advance(61)  # the offer just expired, and the advisor accepts at that moment
        accepted, _ = await asyncio.gather(
            apart(lambda c=conversation.id, a=offered: one.queue.accept(c, a)),
            apart(lambda: other.queue.expire_offers()),
        )
        final = await one.store.get_conversation(conversation.id)
        assert accepted == (final.status is ConversationStatus.ACTIVE)  # told the truth
        if final.status is ConversationStatus.ACTIVE:
            assert final.advisor == offered  # the accept won; the expiry did nothing
        else:
            assert final.status is ConversationStatus.INVITING and final.advisor != offered
        outcomes.add(final.status)
        await one.conversations.advisor_close(final.room_id, final.advisor, "x")
    assert outcomes  # both orders are legal; what matters is one owner each time


async def test_a_conversation_gets_one_room_when_another_process_repairs_meanwhile(two):
    """One process makes the room for a visitor who just started while the other's
    housekeeping sees a conversation without a room: the advisor is invited to the room the
    conversation keeps, so their join is recognised (seen in the multi-process fault test)."""
    one, other, _ = two
    await one.advisors.add(A)
    await one.advisors.set_available(A, True)
    making, go_on = asyncio.Event(), asyncio.Event()
    make_room = one.gateway.create_room

    async def slow_create_room(*args: Any, **kwargs: Any) -> Any:
        making.set()
        await go_on.wait()  # the homeserver takes its time, as under load
        return await make_room(*args, **kwargs)

    one.gateway.create_room = slow_create_room  # type: ignore[method-assign]
    starting = apart(lambda: one.conversations.start("s1", FORM))
    await making.wait()
    await apart(other.conversations.tick)  # its housekeeping, while the room is being made
    go_on.set()
    conversation, _ = await starting
    await apart(other.conversations.tick)
    await apart(one.conversations.tick)

    rooms = one.gateway.of("room") + other.gateway.of("room")
    assert len(rooms) == 1, rooms
    final = await one.store.get_conversation(conversation.id)
    assert final.room_id == rooms[0][1]
    invites = one.gateway.of("invite") + other.gateway.of("invite")
    assert invites == [("invite", final.room_id, A)]
    await one.conversations.advisor_joined(final.room_id, A)
    assert (await one.store.get_conversation(conversation.id)).status is ConversationStatus.ACTIVE
