"""Two processes on one PostgreSQL schema racing over the same conversations.

Each "process" is a full set of core services on its own database pool, run in its own
context (as separate processes would be); the gateway is the in-memory fake.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
from typing import Any, Awaitable, Callable

import pytest

from appservice.db import SqlStore, close_database, open_database
from bridge.desk import Desk, DeskSettings, build_desk
from bridge.model import AdvisorMxid, ConversationStatus, RoutingSettings
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


async def _process(url: str, clock: FakeClock) -> tuple[Desk, FakeMatrixGateway, Any]:
    db = await open_database(url)
    store, gateway = SlowStore(db), FakeMatrixGateway()
    desk = build_desk(
        store,
        gateway,
        FakeVisitorChannel(),
        clock,
        DeskSettings(topics={"general": "General"}, routing=RoutingSettings(1, 60.0)),
    )
    return desk, gateway, db


def apart(work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run as another process would: with no database connection borrowed from this one."""
    return asyncio.create_task(work(), context=contextvars.Context())  # type: ignore[arg-type]


@pytest.fixture
async def two():
    clock = FakeClock()
    async with fresh_schema_url() as url:
        (one, g1, db1), (other, g2, db2) = [await _process(url, clock) for _ in range(2)]
        g2.rooms = 1000  # distinct fake room ids per process
        one.gateway, other.gateway = g1, g2  # type: ignore[attr-defined]
        yield one, other, clock
        await close_database(db1)
        await close_database(db2)


async def settle(*processes: Desk) -> None:
    """Each process's dispatcher runs what is due, at the same time."""
    await asyncio.gather(*(apart(p.outbox.drain) for p in processes))


def sent(kind: str, *processes: Desk) -> list[tuple]:
    return [s for p in processes for s in p.gateway.of(kind)]  # type: ignore[attr-defined]


async def test_two_processes_never_offer_more_than_an_advisors_capacity(two):
    one, other, clock = two
    await one.advisors.add(A)
    for i in range(6):
        clock.advance(1)
        await (one if i % 2 else other).visitors.start(f"s{i}", FORM)
    await settle(one, other)
    for _ in range(5):
        await one.advisors.set_available(A, False)  # her offers go back to the queue
        await settle(one, other)
        ana = await one.store.get_advisor(A)
        await one.store.save_advisor(dataclasses.replace(ana, available=True))  # no pass
        invites_before = len(sent("invite", one, other))
        await asyncio.gather(*(apart(p.queue.route) for p in (one, other, one, other)))
        await settle(one, other)
        assert len(sent("invite", one, other)) - invites_before == 1  # one offer, sent once
        held = [
            c
            for c in await one.store.open_conversations()
            if c.advisor == A and c.status is not ConversationStatus.WAITING
        ]
        assert len(held) == 1, held  # capacity 1, whichever process routed


async def test_an_accept_racing_an_expiry_leaves_exactly_one_owner(two):
    one, other, clock = two
    await one.advisors.add(A)
    await one.advisors.add(B)
    await one.advisors.set_available(A, True)
    await one.advisors.set_available(B, True)
    outcomes = set()
    for i in range(8):
        clock.advance(1)
        conversation, _ = await one.visitors.start(f"race{i}", FORM)
        await settle(one)
        offered = (await one.store.get_conversation(conversation.id)).advisor
        clock.advance(61)  # the offer just expired, and the advisor accepts at that moment
        accepted, _ = await asyncio.gather(
            apart(lambda c=conversation.id, a=offered: one.queue.accept(c, a)),
            apart(other.outbox.drain),  # the expiry timer is due
        )
        final = await one.store.get_conversation(conversation.id)
        assert accepted == (final.status is ConversationStatus.ACTIVE)  # told the truth
        if final.status is ConversationStatus.ACTIVE:
            assert final.advisor == offered  # the accept won; the expiry did nothing
        else:
            assert final.status is ConversationStatus.INVITING and final.advisor != offered
        outcomes.add(final.status)
        await one.rooms.advisor_close(final.room_id, final.advisor, "x")
        await settle(one, other)
    assert outcomes  # both orders are legal; what matters is one owner each time


async def test_a_row_claimed_by_one_process_is_not_run_by_another_meanwhile(two):
    """One process makes the room for a visitor who just started while the other's
    dispatcher looks for work: the room is made once, and the advisor is invited to the
    room the conversation keeps, so their join is recognised."""
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
    conversation, _ = await one.visitors.start("s1", FORM)
    making_it = apart(one.outbox.drain)
    await making.wait()
    await apart(other.outbox.drain)  # the other process, while the room is being made
    go_on.set()
    await making_it
    await settle(one, other)

    rooms = sent("room", one, other)
    assert len(rooms) == 1, rooms
    final = await one.store.get_conversation(conversation.id)
    assert final.room_id == rooms[0][1]
    assert sent("invite", one, other) == [("invite", final.room_id, A)]
    await one.rooms.advisor_joined(final.room_id, A)
    assert (await one.store.get_conversation(conversation.id)).status is ConversationStatus.ACTIVE


async def test_one_visitors_start_sent_to_two_processes_at_once_makes_one_conversation(two):
    """A double click behind a load balancer: both processes get the same session's Start."""
    one, other, _ = two
    for attempt in range(5):
        session = f"double-{attempt}"
        (first, created1), (second, created2) = await asyncio.gather(
            apart(lambda s=session: one.visitors.start(s, FORM)),
            apart(lambda s=session: other.visitors.start(s, FORM)),
        )
        assert first.id == second.id
        assert sorted([created1, created2]) == [False, True]  # one 201, the other 200
    await settle(one, other)
    assert len(sent("room", one, other)) == 5
    assert len(await one.store.open_conversations()) == 5
