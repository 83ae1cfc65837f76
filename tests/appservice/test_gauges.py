"""The counts a scrape reads from the database (appservice/db/gauges.py), on SQLite and
PostgreSQL: the queue by status, the longest wait, and the outbox's pending, timers and parked
rows, with how long the oldest pending one has waited."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from appservice.db import SqlStore
from appservice.db.gauges import read_counts
from bridge.model import AdvisorMxid, Conversation, ConversationId, ConversationStatus, VisitorId
from tests.appservice.test_outbox_store import expires, said, started
from tests.appservice.test_store_contract import visitor
from tests.pg import database_url

T0 = 1_700_000_000.0
ANA = AdvisorMxid("@ana:test")


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    async with database_url(request.param, tmp_path) as url, started(url) as db:
        yield SqlStore(db)


async def chat(store: SqlStore, n: int, status: ConversationStatus, queued_at: float) -> None:
    await store.add_visitor(visitor(n), f"session-{n}")
    waiting = Conversation(
        id=ConversationId(f"c{n}"),
        visitor_id=VisitorId(f"v{n}"),
        topic="billing",
        status=ConversationStatus.WAITING,
        created_at=queued_at,
        queued_at=queued_at,
    )
    assert await store.add_conversation(waiting)
    changes: dict[str, object] = {"status": status}
    if status in (ConversationStatus.INVITING, ConversationStatus.ACTIVE):
        changes["advisor"] = ANA
    if status is ConversationStatus.INVITING:
        changes["invite_deadline"] = queued_at + 60
    if status is ConversationStatus.ENDED:
        changes["ended_at"] = queued_at + 1
    if status is not ConversationStatus.WAITING:
        await store.save_conversation(dataclasses.replace(waiting, **changes))


async def test_an_empty_desk_counts_zero_everywhere_and_nobody_waiting(store: SqlStore):
    counts = await read_counts(store.db, T0)
    assert counts.conversations == {"waiting": 0, "inviting": 0, "active": 0}
    assert counts.oldest_queued_at is None and counts.oldest_pending_at is None
    assert (counts.outbox_pending, counts.outbox_scheduled, counts.outbox_parked) == (0, 0, 0)


async def test_open_chats_by_status_and_the_longest_waiting_visitor(store: SqlStore):
    await chat(store, 1, ConversationStatus.ACTIVE, T0 - 900)  # taken: waits no more
    await chat(store, 2, ConversationStatus.INVITING, T0 - 300)
    await chat(store, 3, ConversationStatus.WAITING, T0 - 120)
    await chat(store, 4, ConversationStatus.WAITING, T0 - 60)
    await chat(store, 5, ConversationStatus.ENDED, T0 - 2000)  # not counted
    counts = await read_counts(store.db, T0)
    assert counts.conversations == {"waiting": 2, "inviting": 1, "active": 1}
    assert counts.oldest_queued_at == T0 - 300


async def test_pending_rows_count_from_their_creation_and_timers_from_their_due_time(
    store: SqlStore,
):
    outbox = store.outbox
    await outbox.add([said("c1", 1)], T0 - 40)  # a visitor's text, 40 s ago
    await outbox.add([expires("c2", due=T0 - 5)], T0 - 65)  # a timer that came due 5 s ago
    await outbox.add([expires("c3", due=T0 + 55)], T0 - 5)  # a timer not due yet
    [text] = [r for r in await outbox.claim("w", T0 - 39, T0, 10) if r.kind == "VisitorSaid"]
    # the homeserver is down: the text is retried in a second, and again, and again…
    await outbox.retry(text.id, T0 + 1, 0, "TemporarilyUnavailable")
    counts = await read_counts(store.db, T0)
    assert (counts.outbox_pending, counts.outbox_scheduled) == (2, 1)
    # …yet it has waited since it was written, not since its last try
    assert counts.oldest_pending_at == T0 - 40


async def test_a_parked_row_is_counted_apart_and_the_rows_it_holds_back_keep_aging(
    store: SqlStore,
):
    outbox = store.outbox
    await outbox.add([said("c1", 1), said("c1", 2)], T0 - 100)
    [first] = await outbox.claim("w", T0 - 99, T0, 10)
    await outbox.park(first.id, 5, "ValueError: refused")
    counts = await read_counts(store.db, T0)
    assert (counts.outbox_pending, counts.outbox_scheduled, counts.outbox_parked) == (1, 0, 1)
    assert counts.oldest_pending_at == T0 - 100
    await outbox.discard(first.id, T0)
    [second] = await outbox.claim("w", T0, T0 + 15, 10)
    await outbox.done(second.id, T0 + 1)
    counts = await read_counts(store.db, T0 + 1)
    assert (counts.outbox_pending, counts.outbox_parked, counts.oldest_pending_at) == (0, 0, None)
