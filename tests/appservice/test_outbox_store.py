"""One set of assertions about the OutboxStore port, run against every store.

``MemoryOutbox`` (tests/fakes.py) is the reference; ``SqlOutbox`` runs on SQLite (a temporary
file) and on PostgreSQL (a fresh schema per test, see tests/pg.py). What only PostgreSQL can
show (several processes claiming at once, a small pool, NOTIFY) runs there alone.

Times are wall-clock seconds passed in by the caller, so no test waits for a lease to run out.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import asyncpg
import pytest
from mautrix.util.async_db import Database

from appservice.db import SqlStore, close_database, open_database
from bridge.events import (
    ConversationEnded,
    ConversationOpened,
    DomainEvent,
    InviteWithdrawn,
    Offered,
    OfferExpires,
    QueueChanged,
    VisitorEntered,
    VisitorMayHaveLeft,
    VisitorSaid,
    decode,
)
from bridge.model import AdvisorMxid, ConversationId, MessageId, Visitor, VisitorId
from bridge.outbox import Dispatcher, Handlers
from bridge.ports import OutboxRow, OutboxStore, Store
from tests.fakes import FakeClock, MemoryStore
from tests.pg import database_url, fresh_schema_url, server_url

T0 = 1_700_000_000.0
LEASE = 15.0
ANN, BOB = AdvisorMxid("@ann:test"), AdvisorMxid("@bob:test")


@dataclass
class Backend:
    name: str
    store: Store
    url: str | None = None  # the SQL backends' database, for a second "process"

    @property
    def outbox(self) -> OutboxStore:
        return self.store.outbox


@asynccontextmanager
async def started(url: str, **db_args: Any) -> AsyncIterator[Database]:
    """The database at ``url``, migrated, with an empty outbox: migration 0004 leaves one
    QueueChanged row, for the first routing pass after an upgrade."""
    db = await open_database(url, db_args=db_args or None)
    await db.execute("DELETE FROM outbox WHERE kind = 'QueueChanged' AND created_at = 0")
    try:
        yield db
    finally:
        await close_database(db)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryStore())
        return
    async with database_url(request.param, tmp_path) as url, started(url) as db:
        yield Backend(request.param, SqlStore(db), url)


@pytest.fixture
def outbox(backend: Backend) -> OutboxStore:
    return backend.outbox


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with fresh_schema_url() as url:
        yield url


def apart(work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run as another process would: with no database connection borrowed from this one
    (mautrix keeps "the connection in use" in a context variable)."""
    return asyncio.create_task(work(), context=contextvars.Context())  # type: ignore[arg-type]


# builders and helpers


def said(conversation: str, n: int) -> VisitorSaid:
    return VisitorSaid(ConversationId(conversation), MessageId(f"{conversation}-m{n}"))


def opened(conversation: str) -> ConversationOpened:
    return ConversationOpened(ConversationId(conversation))


def expires(conversation: str, due: float, version: int = 1) -> OfferExpires:
    return OfferExpires(ConversationId(conversation), ANN, version, due)


def left(conversation: str, due: float) -> VisitorMayHaveLeft:
    return VisitorMayHaveLeft(ConversationId(conversation), due)


async def claim(
    outbox: OutboxStore, now: float, limit: int = 100, worker: str = "w1", lease: float = LEASE
) -> list[OutboxRow]:
    return await outbox.claim(worker, now, now + lease, limit)


def events(rows: list[OutboxRow]) -> list[DomainEvent]:
    return [decode(row.kind, row.payload) for row in rows]


async def run_all(outbox: OutboxStore, now: float) -> list[DomainEvent]:
    """Claim and finish, one at a time, every row due at ``now``: their events, in order."""
    ran: list[DomainEvent] = []
    while rows := await claim(outbox, now, limit=1, worker="runner"):
        await outbox.done(rows[0].id, now)
        ran.extend(events(rows))
    return ran


async def stored(backend: Backend) -> list[tuple[str, str, str]]:
    """Every row, done ones included, as (key, kind, state) in id order: a peek under the
    port, which lists parked rows only."""
    store = backend.store
    if isinstance(store, MemoryStore):
        rows = sorted(store.outbox.rows.values(), key=lambda r: r.row.id)
        return [(r.row.key, r.row.kind, r.state) for r in rows]
    assert isinstance(store, SqlStore)
    found = await store.db.fetch("SELECT key, kind, state FROM outbox ORDER BY id")
    return [(r["key"], r["kind"], r["state"]) for r in found]


# adding and claiming


async def test_a_row_carries_its_event_key_priority_and_times(outbox: OutboxStore) -> None:
    timer = expires("c1", due=T0 + 60.5)
    await outbox.add([opened("c1"), said("c1", 1), timer], T0)

    first, timer_row = await claim(outbox, T0 + 60.5)  # the said row waits behind its key
    assert events([first, timer_row]) == [opened("c1"), timer]
    assert (first.key, first.kind, first.priority) == ("c:c1", "ConversationOpened", 0)
    assert (first.due_at, first.created_at) == (T0, T0)  # due at once
    assert (timer_row.key, timer_row.due_at, timer_row.created_at) == ("t:c1:1", T0 + 60.5, T0)
    for row in (first, timer_row):
        assert (row.tries, row.failures, row.parked, row.last_error) == (1, 0, False, None)


async def test_only_due_rows_are_claimed(outbox: OutboxStore) -> None:
    await outbox.add([expires("c1", due=T0 + 60), said("c2", 1)], T0)

    now_rows = await claim(outbox, T0)
    assert events(now_rows) == [said("c2", 1)]
    await outbox.done(now_rows[0].id, T0)
    assert await claim(outbox, T0 + 59.9) == []
    assert events(await claim(outbox, T0 + 60)) == [expires("c1", due=T0 + 60)]


async def test_a_key_runs_its_oldest_unfinished_row_first_whatever_its_priority(
    outbox: OutboxStore,
) -> None:
    conversation = ConversationId("c1")
    # raised in this order on purpose: the later ConversationOpened has the higher priority
    await outbox.add([VisitorEntered(conversation), opened("c1"), said("c1", 1)], T0)

    (head,) = await claim(outbox, T0)
    assert head.kind == "VisitorEntered"
    assert await claim(outbox, T0 + 1, worker="w2") == []  # a leased head blocks its key
    await outbox.done(head.id, T0 + 1)

    (head,) = await claim(outbox, T0 + 1)
    assert head.kind == "ConversationOpened"
    await outbox.retry(head.id, T0 + 5, 1, "boom")
    assert await claim(outbox, T0 + 4) == []  # the retried head is not due: its key waits
    (again,) = await claim(outbox, T0 + 5)
    assert (again.id, again.tries, again.failures, again.last_error) == (head.id, 2, 1, "boom")
    assert again.due_at == T0 + 5

    # the worker died: its row stays blocked until the lease runs out, then is claimed again
    assert await claim(outbox, T0 + 5 + LEASE, worker="w2") == []
    (retaken,) = await claim(outbox, T0 + 5 + LEASE + 0.5, worker="w2")
    assert (retaken.id, retaken.tries) == (head.id, 3)
    await outbox.done(retaken.id, T0 + 21)
    assert events(await claim(outbox, T0 + 21)) == [said("c1", 1)]


async def test_different_keys_are_claimed_together_up_to_the_limit(outbox: OutboxStore) -> None:
    await outbox.add(
        [
            said("c1", 1),
            said("c1", 2),  # behind c1's first
            said("c2", 1),
            Offered(ConversationId("c1"), ANN, 1),  # c:c1:@ann, its own key
            QueueChanged(),
        ],
        T0,
    )

    first = await claim(outbox, T0, limit=2)
    rest = await claim(outbox, T0, limit=10)
    assert len(first) == 2 and len(rest) == 2
    assert {r.key for r in first + rest} == {"c:c1", "c:c2", f"c:c1:{ANN}", "queue"}
    assert said("c1", 2) not in events(first + rest)
    assert await claim(outbox, T0) == []


async def test_claims_go_by_priority_then_due_time_then_id(outbox: OutboxStore) -> None:
    await outbox.add([left("c5", due=T0 + 5), said("c4", 1), said("c1", 1)], T0)
    await outbox.add([expires("c2", due=T0 + 50), opened("c3")], T0)
    await outbox.add([QueueChanged()], T0 + 10)
    expected = [
        opened("c3"),  # priority 0, due T0
        QueueChanged(),  # priority 0, due T0 + 10
        expires("c2", due=T0 + 50),  # priority 0, due T0 + 50
        said("c4", 1),  # priority 1, due T0, the older row
        said("c1", 1),
        left("c5", due=T0 + 5),  # priority 1, due T0 + 5 although added first
    ]

    assert events(await claim(outbox, T0 + 100)) == expected
    await outbox.release_claims()
    one_by_one = [events(await claim(outbox, T0 + 100, limit=1)) for _ in expected]
    assert one_by_one == [[e] for e in expected]


async def test_max_priority_claims_only_the_urgent_rows(outbox: OutboxStore) -> None:
    await outbox.add([said("c1", 1), opened("c2"), QueueChanged()], T0)

    urgent = await outbox.claim("w1", T0, T0 + LEASE, 10, max_priority=0)
    assert events(urgent) == [opened("c2"), QueueChanged()]
    assert await outbox.claim("w1", T0, T0 + LEASE, 10, max_priority=0) == []
    assert events(await outbox.claim("w1", T0, T0 + LEASE, 10, max_priority=1)) == [said("c1", 1)]


async def test_renew_extends_only_the_workers_own_leases(outbox: OutboxStore) -> None:
    await outbox.add([said("c1", 1), said("c2", 1)], T0)
    (mine,) = await claim(outbox, T0, limit=1, worker="w1")
    (theirs,) = await claim(outbox, T0, limit=1, worker="w2")

    await outbox.renew("w1", T0 + 100)

    (taken,) = await claim(outbox, T0 + LEASE + 1, worker="w3")  # w2's lease ran out
    assert taken.id == theirs.id
    await outbox.done(taken.id, T0 + LEASE + 1)
    assert await claim(outbox, T0 + 99, worker="w3") == []
    assert [r.id for r in await claim(outbox, T0 + 100.5, worker="w3")] == [mine.id]


# coalescing


async def test_a_coalescing_event_adds_nothing_while_one_waits_unclaimed(
    backend: Backend,
) -> None:
    outbox = backend.outbox
    await outbox.add([QueueChanged(), QueueChanged()], T0)
    await outbox.add([QueueChanged()], T0 + 1)
    assert await stored(backend) == [("queue", "QueueChanged", "pending")]

    (running,) = await claim(outbox, T0 + 1)
    assert running.created_at == T0
    await outbox.add([QueueChanged()], T0 + 2)  # raised while the pass runs: another pass
    await outbox.add([QueueChanged()], T0 + 3)
    assert [k for _, k, _ in await stored(backend)] == ["QueueChanged"] * 2
    assert await claim(outbox, T0 + 3) == []  # after the running one
    await outbox.done(running.id, T0 + 3)
    (second,) = await claim(outbox, T0 + 3)
    assert second.created_at == T0 + 2

    non_coalescing = [said("c1", 1), said("c1", 1)]
    await outbox.add(non_coalescing, T0 + 3)
    assert len(await stored(backend)) == 4


async def test_a_visitor_timer_set_again_moves_and_its_handler_keeps_a_later_one(
    backend: Backend,
) -> None:
    outbox = backend.outbox
    await outbox.add([left("c1", due=T0 + 30)], T0)
    await outbox.add([left("c1", due=T0 + 50), left("c2", due=T0 + 30)], T0 + 20)
    assert await stored(backend) == [
        ("a:c1", "VisitorMayHaveLeft", "pending"),
        ("a:c2", "VisitorMayHaveLeft", "pending"),
    ]
    (c2,) = await claim(outbox, T0 + 30)  # c1's page closed again: its timer moved
    assert c2.key == "a:c2"
    await outbox.done(c2.id, T0 + 30)

    (timer,) = await claim(outbox, T0 + 50)
    assert decode(timer.kind, timer.payload) == left("c1", due=T0 + 50)
    # while its handler runs, the page closes once more (in another process): a new row
    await outbox.add([left("c1", due=T0 + 100)], T0 + 50)
    # and the handler, finding the time not up, sets it again: the later close's row stands
    await outbox.add([dataclasses.replace(left("c1", due=T0 + 60), again=True)], T0 + 50)
    await outbox.done(timer.id, T0 + 50)
    (later,) = await claim(outbox, T0 + 100)
    assert decode(later.kind, later.payload) == left("c1", due=T0 + 100)
    await outbox.done(later.id, T0 + 100)
    # with none pending, setting it again adds one
    await outbox.add([dataclasses.replace(left("c1", due=T0 + 160), again=True)], T0 + 100)
    assert await outbox.next_due() == T0 + 160


# settling a row


async def test_retry_releases_the_claim_and_sets_when_the_row_is_due(
    outbox: OutboxStore,
) -> None:
    await outbox.add([said("c1", 1)], T0)
    (row,) = await claim(outbox, T0, lease=1000)

    await outbox.retry(row.id, T0 + 5, 2, "TimeoutError: slow")

    assert await claim(outbox, T0 + 4.9) == []
    assert await outbox.next_due() == T0 + 5
    (again,) = await claim(outbox, T0 + 5)  # long before the first lease would run out
    assert (again.id, again.due_at, again.tries) == (row.id, T0 + 5, 2)
    assert (again.failures, again.last_error) == (2, "TimeoutError: slow")

    await outbox.retry(again.id, T0 + 6, 2, None)  # a transient wait clears the last error
    (third,) = await claim(outbox, T0 + 6)
    assert third.last_error is None
    await outbox.done(third.id, T0 + 6)
    await outbox.retry(third.id, T0 + 7, 3, "late")  # a done row stays done
    assert await claim(outbox, T0 + 100) == []
    assert await outbox.next_due() is None


async def test_a_parked_row_holds_back_its_key_until_unparked_or_discarded(
    outbox: OutboxStore,
) -> None:
    await outbox.add([said("c1", 1), said("c1", 2), ConversationEnded(ConversationId("c1"))], T0)
    await outbox.add([said("c2", 1)], T0)
    head, other = await claim(outbox, T0)
    assert events([head, other]) == [said("c1", 1), said("c2", 1)]
    await outbox.done(other.id, T0)

    await outbox.park(head.id, 5, "M_FORBIDDEN: not in the room")

    assert await claim(outbox, T0 + 1000) == []  # no later row of c1 overtakes it
    (parked,) = await outbox.parked()
    assert (parked.id, parked.parked, parked.failures, parked.tries) == (head.id, True, 5, 1)
    assert parked.last_error == "M_FORBIDDEN: not in the room"
    assert await outbox.pending("c:c1", "VisitorSaid")

    assert await outbox.unpark(head.id, T0 + 100)
    assert not await outbox.unpark(head.id, T0 + 100)  # not parked any more
    assert not await outbox.unpark(999_999, T0 + 100)
    assert await outbox.parked() == []
    (retried,) = await claim(outbox, T0 + 100)
    assert (retried.id, retried.parked, retried.failures) == (head.id, False, 0)
    assert (retried.due_at, retried.tries) == (T0 + 100, 2)

    await outbox.park(retried.id, 1, "again")
    assert not await outbox.discard(other.id, T0 + 200)  # only a parked row is discarded
    assert await outbox.discard(retried.id, T0 + 200)
    assert not await outbox.discard(retried.id, T0 + 200)
    assert await outbox.parked() == []
    assert events(await claim(outbox, T0 + 200)) == [said("c1", 2)]  # the key goes on
    assert not await outbox.unpark(retried.id, T0 + 200)  # a discarded row stays done


async def test_park_and_retry_leave_a_row_that_is_not_pending_alone(outbox: OutboxStore) -> None:
    await outbox.add([said("c1", 1), said("c2", 1)], T0)
    done_row, parked_row = await claim(outbox, T0)
    await outbox.done(done_row.id, T0)
    await outbox.park(parked_row.id, 5, "first")

    await outbox.park(done_row.id, 5, "late")  # a second process settling a row twice
    await outbox.park(parked_row.id, 6, "second")
    await outbox.retry(parked_row.id, T0 + 1, 7, "third")

    assert [(r.id, r.failures, r.last_error) for r in await outbox.parked()] == [
        (parked_row.id, 5, "first")
    ]


# timers and clocks


async def test_next_due_is_when_the_earliest_claimable_row_is_due(outbox: OutboxStore) -> None:
    assert await outbox.next_due() is None
    await outbox.add([expires("c1", due=T0 + 60), said("c2", 1)], T0 + 1)
    assert await outbox.next_due() == T0 + 1

    (row,) = await claim(outbox, T0 + 1)
    assert await outbox.next_due() == row.due_at + 15  # claimed: once its lease runs out
    await outbox.done(row.id, T0 + 2)
    assert await outbox.next_due() == T0 + 60

    (timer,) = await claim(outbox, T0 + 60)
    await outbox.park(timer.id, 5, "stuck")
    assert await outbox.next_due() is None  # a parked row waits for an admin, not a time


async def test_rebase_brings_rows_back_within_their_delay_of_a_clock_stepped_back(
    outbox: OutboxStore,
) -> None:
    await outbox.add([expires("c1", due=T0 + 60), left("c2", due=T0 + 30), said("c3", 1)], T0)
    await outbox.add([said("c4", 1), said("c5", 1)], T0)
    for row in await claim(outbox, T0):
        if row.key == "c:c4":
            await outbox.retry(row.id, T0 + 20, 1, "boom")  # a backoff: no delay of its own
        elif row.key == "c:c5":
            await outbox.park(row.id, 5, "stuck")  # parked rows have no due time to move
        else:
            await outbox.retry(row.id, row.due_at, 0, None)  # c3: unclaimed, due at T0

    back = T0 - 1000
    assert await outbox.rebase(back) == 4
    assert await outbox.rebase(back) == 0  # nothing further ahead than its delay now
    assert await outbox.rebase(T0 + 10) == 0  # a step forward moves nothing

    assert await outbox.next_due() == back
    assert await run_all(outbox, back) == [said("c3", 1), said("c4", 1)]
    assert await run_all(outbox, back + 29.9) == []
    assert await run_all(outbox, back + 30) == [left("c2", due=T0 + 30)]
    assert await run_all(outbox, back + 59.9) == []
    assert await run_all(outbox, back + 60) == [expires("c1", due=T0 + 60)]
    (parked,) = await outbox.parked()
    assert parked.due_at == T0


async def test_a_claim_made_before_a_clock_step_back_keeps_only_what_was_left_of_it(
    outbox: OutboxStore,
) -> None:
    await outbox.add([said("c1", 1), said("c2", 1)], T0)
    await claim(outbox, T0, worker="dead")  # leases until T0 + 15, then the worker died
    # 5 s later the clock steps back an hour; a dispatcher saw it happen
    back = T0 + 5 - 3600
    await outbox.rebase(back, LEASE, step=3600)
    assert await claim(outbox, back + 9.9, worker="w2") == []  # 10 s were left of the leases
    for row in await claim(outbox, back + 10.1, worker="w2"):
        await outbox.done(row.id, back + 10.1)
    # a step that was not seen happen (a first look): capped at a lease from now
    await outbox.add([said("c3", 1)], T0)
    await claim(outbox, T0, worker="dead")
    await outbox.rebase(back, LEASE)
    assert await claim(outbox, back + LEASE - 0.1, worker="w2") == []
    assert [r.key for r in await claim(outbox, back + LEASE + 0.1, worker="w2")] == ["c:c3"]


async def test_release_claims_forgets_every_lease(outbox: OutboxStore) -> None:
    await outbox.add([said("c1", 1), said("c2", 1)], T0)
    held, finished = await claim(outbox, T0, lease=1000)
    await outbox.done(finished.id, T0)
    assert await claim(outbox, T0 + 1, worker="w2") == []

    await outbox.release_claims()

    (again,) = await claim(outbox, T0 + 1, worker="w2")
    assert (again.id, again.tries) == (held.id, 2)


async def test_prune_removes_only_done_rows_older_than_the_bound(backend: Backend) -> None:
    outbox = backend.outbox
    await outbox.add([said("c1", 1), said("c2", 1), said("c3", 1), said("c4", 1)], T0)
    rows = await claim(outbox, T0)
    await outbox.done(rows[0].id, T0 + 1)
    await outbox.done(rows[1].id, T0 + 2)
    await outbox.park(rows[3].id, 5, "stuck")  # c3 stays claimed, c4 parked

    await outbox.prune(older_than=T0 + 2)
    assert await stored(backend) == [
        ("c:c2", "VisitorSaid", "done"),
        ("c:c3", "VisitorSaid", "pending"),
        ("c:c4", "VisitorSaid", "parked"),
    ]
    await outbox.prune(older_than=T0 + 10_000)
    assert [state for _, _, state in await stored(backend)] == ["pending", "parked"]


async def test_pending_is_true_until_the_row_of_that_key_and_kind_is_done(
    outbox: OutboxStore,
) -> None:
    assert not await outbox.pending("c:c1", "VisitorSaid")
    await outbox.add([said("c1", 1), InviteWithdrawn(ConversationId("c1"), BOB, "gone")], T0)
    assert await outbox.pending("c:c1", "VisitorSaid")
    assert await outbox.pending(f"c:c1:{BOB}", "InviteWithdrawn")
    assert not await outbox.pending("c:c1", "ConversationEnded")  # another kind
    assert not await outbox.pending("c:c2", "VisitorSaid")  # another key
    assert not await outbox.pending(f"c:c1:{ANN}", "InviteWithdrawn")

    rows = {r.key: r for r in await claim(outbox, T0)}
    assert await outbox.pending("c:c1", "VisitorSaid")  # claimed
    await outbox.park(rows["c:c1"].id, 5, "stuck")
    assert await outbox.pending("c:c1", "VisitorSaid")  # parked
    await outbox.done(rows[f"c:c1:{BOB}"].id, T0)
    assert not await outbox.pending(f"c:c1:{BOB}", "InviteWithdrawn")
    assert await outbox.discard(rows["c:c1"].id, T0)
    assert not await outbox.pending("c:c1", "VisitorSaid")


# transactions


async def test_an_add_commits_or_rolls_back_with_its_transaction(backend: Backend) -> None:
    store, outbox = backend.store, backend.outbox
    visitor = Visitor(VisitorId("v1"), "V", None, T0)
    with pytest.raises(RuntimeError, match="boom"):
        async with asyncio.timeout(5), store.transaction():
            await store.add_visitor(visitor, "session-1")
            await outbox.add([said("c1", 1), QueueChanged()], T0)
            raise RuntimeError("boom")

    assert await stored(backend) == []
    assert await outbox.next_due() is None
    assert not await outbox.pending("queue", "QueueChanged")
    assert await store.get_visitor(visitor.id) is None

    async with asyncio.timeout(5), store.transaction():
        await store.add_visitor(visitor, "session-1")
        await outbox.add([QueueChanged()], T0)
    assert await stored(backend) == [("queue", "QueueChanged", "pending")]


# PostgreSQL: several processes, a small pool, NOTIFY


async def test_two_processes_claiming_at_once_never_get_the_same_row(pg_url: str) -> None:
    async with started(pg_url) as db1, started(pg_url) as db2:
        stores = [SqlStore(db1), SqlStore(db2)]
        keys = 24
        for n in range(1, 4):  # three rows per key, in order
            await stores[0].outbox.add([said(f"c{k}", n) for k in range(keys)], T0)

        claimed: list[OutboxRow] = []
        for _ in range(10):
            batches = await asyncio.gather(
                *(
                    apart(functools.partial(s.outbox.claim, f"w{w}", T0, T0 + 1000, 5))
                    for w, s in enumerate(stores * 4)
                )
            )
            round_rows = [row for batch in batches for row in batch]
            if not round_rows:
                break
            ids = [row.id for row in round_rows]
            assert len(set(ids)) == len(ids), "a row was claimed twice"
            keys_taken = [row.key for row in round_rows]
            assert len(set(keys_taken)) == len(keys_taken), "two rows of one key at once"
            for row in round_rows:
                await stores[row.id % 2].outbox.done(row.id, T0)
            claimed.extend(round_rows)

        assert len(claimed) == len({row.id for row in claimed}) == 3 * keys
        assert all(row.tries == 1 for row in claimed)
        for k in range(keys):  # each key's rows ran oldest first
            mine = [e for e in events(claimed) if e.key == f"c:c{k}"]
            assert mine == [said(f"c{k}", n) for n in range(1, 4)]


async def test_fifty_concurrent_claims_do_not_exhaust_a_small_pool(pg_url: str) -> None:
    async with started(pg_url, min_size=1, max_size=2) as db:
        store = SqlStore(db)
        await store.outbox.add([said(f"c{k}", 1) for k in range(60)], T0)

        async with asyncio.timeout(10):
            batches = await asyncio.gather(
                *(
                    apart(functools.partial(store.outbox.claim, f"w{w}", T0, T0 + LEASE, 1))
                    for w in range(50)
                )
            )
            # the claims hold nothing: the pool serves the next query at once
            assert await asyncio.wait_for(db.fetchval("SELECT 1"), 1) == 1

        ids = [row.id for batch in batches for row in batch]
        assert len(ids) == len(set(ids))
        assert len(ids) == 50  # more rows than claims: nobody comes back empty


@asynccontextmanager
async def listening(channel: str) -> AsyncIterator[asyncio.Queue[str]]:
    heard: asyncio.Queue[str] = asyncio.Queue()
    conn = await asyncpg.connect(server_url())  # NOTIFY is per database: any schema hears it
    await conn.add_listener(channel, lambda _c, _pid, _ch, payload: heard.put_nowait(payload))
    try:
        yield heard
    finally:
        await conn.close()


async def nothing_heard(heard: asyncio.Queue[str]) -> bool:
    await asyncio.sleep(0.2)
    return heard.empty()


async def test_add_notifies_the_channel_when_its_transaction_commits(pg_url: str) -> None:
    channel = "sb_test_outbox_" + secrets.token_hex(4)
    async with started(pg_url) as db, listening(channel) as heard:
        store = SqlStore(db, notify_channel=channel)
        outbox = store.outbox

        async with store.transaction():
            await outbox.add([said("c1", 1)], T0)
            assert await nothing_heard(heard)  # not before the commit
        assert await asyncio.wait_for(heard.get(), 2) == '{"o":1}'

        with pytest.raises(RuntimeError):
            async with store.transaction():
                await outbox.add([said("c1", 2)], T0)
                raise RuntimeError("rolled back")
        assert await nothing_heard(heard)

        await outbox.add([], T0)  # nothing added: nobody to wake
        await SqlStore(db).outbox.add([said("c2", 1)], T0)  # no channel given
        assert await nothing_heard(heard)

        await outbox.add([said("c3", 1)], T0)  # outside a transaction: at once
        assert await asyncio.wait_for(heard.get(), 2) == '{"o":1}'

        (row,) = [r for r in await claim(outbox, T0) if r.key == "c:c3"]
        await outbox.park(row.id, 5, "stuck")
        assert await nothing_heard(heard)
        assert await outbox.unpark(row.id, T0)  # an admin's retry wakes the dispatchers too
        assert await asyncio.wait_for(heard.get(), 2) == '{"o":1}'


# what the dispatcher makes of next_due


@pytest.mark.parametrize("head", ["parked", "retried later", "leased by another process"])
async def test_an_idle_dispatcher_does_not_spin_on_rows_it_cannot_claim(head: str) -> None:
    clock = FakeClock(T0)  # time stands still: nothing becomes claimable while it runs
    store = MemoryStore()
    await store.outbox.add([said("c1", 1), said("c1", 2)], T0)
    (row,) = await claim(store.outbox, T0, limit=1, worker="another process")
    if head == "parked":
        await store.outbox.park(row.id, 5, "refused")
    elif head == "retried later":
        await store.outbox.retry(row.id, T0 + 120, 4, "refused")  # the longest backoff
    claims = 0
    real_claim = store.outbox.claim

    async def counted(*args: Any, **kwargs: Any) -> list[OutboxRow]:
        nonlocal claims
        claims += 1
        return await real_claim(*args, **kwargs)

    store.outbox.claim = counted  # type: ignore[method-assign]
    dispatcher = Dispatcher(store, Handlers(), clock)
    running = asyncio.create_task(dispatcher.run_forever())
    await asyncio.sleep(0.2)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)

    assert claims <= 4, f"{claims} claims in 0.2 s"
