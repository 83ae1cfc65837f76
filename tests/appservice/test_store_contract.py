"""One set of assertions about the Store port, run against every store.

``MemoryStore`` (tests/fakes.py) is the reference; ``SqlStore`` runs on SQLite (a temporary
file) and on PostgreSQL (a fresh schema per test, see tests/pg.py). The AppserviceLog tests run
on the two SQL backends only: it has no in-memory twin.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from mautrix.util.async_db import Database

from appservice.db import AppserviceLog, SqlStore, close_database, open_database
from bridge.model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    EventId,
    Message,
    MessageId,
    Presence,
    PuppetMxid,
    RoomId,
    Sender,
    Visitor,
    VisitorId,
)
from bridge.ports import Store
from tests.fakes import FakeClock, MemoryStore
from tests.pg import database_url

T0 = 1_700_000_000.0


@dataclass
class Backend:
    name: str
    store: Store
    url: str | None = None  # the SQL backends' database, for a second "process"


@asynccontextmanager
async def started(url: str) -> AsyncIterator[Database]:
    db = await open_database(url)
    try:
        yield db
    finally:
        await close_database(db)


def apart(work: Callable[[], Awaitable[Any]]) -> asyncio.Task[Any]:
    """Run as another process would: with no database connection borrowed from this one
    (mautrix keeps "the connection in use" in a context variable)."""
    return asyncio.create_task(work(), context=contextvars.Context())  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield Backend("memory", MemoryStore())
        return
    async with database_url(request.param, tmp_path) as url, started(url) as db:
        yield Backend(request.param, SqlStore(db), url)


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.store


@pytest.fixture(params=["sqlite", "postgres"])
async def txn_log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[AppserviceLog, FakeClock]]:
    clock = FakeClock(T0)
    async with database_url(request.param, tmp_path) as url, started(url) as db:
        yield AppserviceLog(db, clock), clock


# builders


def visitor(n: int = 1, email: str | None = "v@example.org") -> Visitor:
    return Visitor(VisitorId(f"v{n}"), f"Visitor {n}", email, T0 + n)


ANN = AdvisorMxid("@ann:test")


def with_status(c: Conversation, status: ConversationStatus, **changes: object) -> Conversation:
    """``c`` moved to ``status``, with the fields that status requires (see Conversation)."""
    requirements: dict[ConversationStatus, dict[str, object]] = {
        ConversationStatus.WAITING: dict(advisor=None, invite_deadline=None, ended_at=None),
        ConversationStatus.INVITING: dict(
            advisor=ANN, invite_deadline=c.created_at + 60, ended_at=None
        ),
        ConversationStatus.ACTIVE: dict(advisor=ANN, invite_deadline=None, ended_at=None),
        ConversationStatus.ENDED: dict(
            invite_deadline=None, ended_at=c.created_at + 5, ended_by=Sender.VISITOR
        ),
    }
    changes = {**requirements[status], **changes}
    return dataclasses.replace(c, status=status, **changes)  # type: ignore[arg-type]


def conversation(
    n: int,
    visitor_n: int = 1,
    status: ConversationStatus = ConversationStatus.WAITING,
    **changes: object,
) -> Conversation:
    base = Conversation(
        id=ConversationId(f"c{n}"),
        visitor_id=VisitorId(f"v{visitor_n}"),
        topic=f"topic {n}",
        status=ConversationStatus.WAITING,
        created_at=T0 + 10 * n,
        queued_at=T0 + 10 * n,
    )
    return with_status(base, status, **changes)


def message(
    n: int, conv: int = 1, client_id: str | None = None, event_id: str | None = None
) -> Message:
    return Message(
        id=MessageId(f"m{conv}-{n}"),
        conversation_id=ConversationId(f"c{conv}"),
        seq=0,
        sender=Sender.VISITOR,
        author="Visitor 1",
        body=f"hello {n}",
        ts=T0 + n + 0.25,
        client_id=client_id,
        event_id=EventId(event_id) if event_id else None,
    )


async def with_visitors(store: Store, *numbers: int) -> None:
    for n in numbers or (1,):
        await store.add_visitor(visitor(n), f"session-{n}")


async def with_conversations(store: Store, *numbers: int) -> None:
    """Visitor n with open conversation cn, for each n."""
    await with_visitors(store, *numbers)
    for n in numbers:
        assert await store.add_conversation(conversation(n, visitor_n=n))


# visitors


async def test_visitor_is_found_by_each_of_their_sessions(store: Store) -> None:
    v = visitor(1, email=None)
    await store.add_visitor(v, "hash-a")
    await store.add_visitor(v, "hash-b")

    assert await store.visitor_by_session("hash-a") == v
    assert await store.visitor_by_session("hash-b") == v
    assert await store.visitor_by_session("hash-unknown") is None
    assert await store.get_visitor(v.id) == v
    assert await store.get_visitor(VisitorId("nobody")) is None


async def test_many_visitors_are_read_in_one_go(store: Store) -> None:
    many = [visitor(n) for n in range(1, 1202)]  # more than one query's worth
    for n, v in enumerate(many):
        await store.add_visitor(v, f"hash-{n}")
    wanted = [v.id for v in many] + [VisitorId("nobody"), many[0].id]
    found = await store.get_visitors(wanted)
    assert found == {v.id: v for v in many}
    assert await store.get_visitors([]) == {}


async def test_add_visitor_returns_the_visitor_it_bound_and_updates_them(store: Store) -> None:
    v = visitor(1)
    assert await store.add_visitor(v, "hash-a") == v
    renamed = dataclasses.replace(v, name="Vera", email=None)
    assert await store.add_visitor(renamed, "hash-a") == renamed  # the name given this time
    assert await store.visitor_by_session("hash-a") == renamed
    assert await store.get_visitor(v.id) == renamed


async def test_a_session_bound_already_keeps_its_visitor_and_the_newcomer_is_dropped(
    store: Store,
) -> None:
    first, second = visitor(1), visitor(2)
    assert await store.add_visitor(first, "hash-a") == first

    assert await store.add_visitor(second, "hash-a") == first  # the first one wins
    assert await store.visitor_by_session("hash-a") == first
    assert await store.get_visitor(second.id) is None  # its row is not kept
    assert await store.add_visitor(second, "hash-b") == second  # a session of its own


async def test_two_processes_binding_one_session_both_get_the_visitor_who_won(
    backend: Backend,
) -> None:
    """Two portal processes start the same session at once, each with a new visitor id."""
    stores = [backend.store, backend.store]
    async with AsyncExitStack() as stack:
        if backend.url is not None:
            stores[1] = SqlStore(await stack.enter_async_context(started(backend.url)))
        for attempt in range(5):
            session = f"double-{attempt}"
            mine = [visitor(10 * attempt + 1), visitor(10 * attempt + 2)]
            bound = await asyncio.gather(
                *(
                    apart(functools.partial(s.add_visitor, v, session))
                    for s, v in zip(stores, mine, strict=True)
                )
            )
            assert bound[0] == bound[1] and bound[0] in mine
            assert await backend.store.visitor_by_session(session) == bound[0]
            (loser,) = [v for v in mine if v != bound[0]]
            assert await backend.store.get_visitor(loser.id) is None
            assert await backend.store.get_visitor(bound[0].id) == bound[0]


async def test_a_visitor_who_loses_a_session_keeps_their_own_sessions_and_chats(
    request: pytest.FixtureRequest, backend: Backend
) -> None:
    """Only a visitor row made by the losing call is dropped: one bound elsewhere stays."""
    store = backend.store
    await with_conversations(store, 1, 2)  # v1 on session-1 with c1, v2 on session-2 with c2

    assert await store.add_visitor(visitor(2), "session-1") == visitor(1)

    assert await store.get_visitor(VisitorId("v2")) == visitor(2)
    assert await store.visitor_by_session("session-2") == visitor(2)
    assert await store.get_conversation(ConversationId("c2")) is not None


# conversations


async def test_conversation_round_trips_every_field(store: Store) -> None:
    await with_visitors(store, 1)
    c = conversation(1)
    assert await store.add_conversation(c)
    assert await store.get_conversation(c.id) == c

    offered = with_status(
        c,
        ConversationStatus.INVITING,
        puppet=PuppetMxid("@sb_visitor_v1:test"),
        room_id=RoomId("!r1:test"),
        advisor=AdvisorMxid("@ann:test"),
        invite_deadline=T0 + 60.5,
        skipped=(AdvisorMxid("@bob:test"), AdvisorMxid("@al:test")),
        version=3,
    )
    await store.save_conversation(offered)
    assert await store.get_conversation(c.id) == offered

    ended = with_status(
        offered,
        ConversationStatus.ENDED,
        read_up_to=7,
        ended_at=T0 + 99.125,
        ended_by=Sender.ADVISOR,
        version=7,
    )
    await store.save_conversation(ended)
    assert await store.get_conversation(c.id) == ended
    assert await store.get_conversation(ConversationId("nope")) is None


async def test_a_routing_pass_saves_its_offers_together(store: Store) -> None:
    await with_visitors(store, 1, 2, 3)
    waiting = [conversation(n, visitor_n=n) for n in (1, 2, 3)]
    for c in waiting:
        assert await store.add_conversation(c)
    offers = [
        with_status(
            c,
            ConversationStatus.INVITING,
            room_id=RoomId(f"!r{n}:test"),
            advisor=AdvisorMxid("@ann:test"),
            invite_deadline=T0 + 60,
            version=c.version + 1,
        )
        for n, c in enumerate(waiting[:2])
    ]
    await store.save_conversations(offers)
    await store.save_conversations([])
    assert [await store.get_conversation(c.id) for c in waiting] == [*offers, waiting[2]]


async def test_version_is_stored_as_given_by_add_and_save(store: Store) -> None:
    await with_visitors(store, 1)
    c = conversation(1, version=5)
    assert await store.add_conversation(c)
    assert (await store.get_conversation(c.id)).version == 5  # type: ignore[union-attr]
    for version in (6, 2**31 - 1, 0):  # the store keeps what it is given, nothing more
        await store.save_conversation(dataclasses.replace(c, version=version))
        assert (await store.get_conversation(c.id)).version == version  # type: ignore


async def test_second_open_conversation_is_refused_until_the_first_ends(store: Store) -> None:
    await with_visitors(store, 1, 2)
    first, second = conversation(1), conversation(2)
    assert await store.add_conversation(first)

    assert not await store.add_conversation(second)
    assert await store.get_conversation(second.id) is None
    assert await store.add_conversation(conversation(3, visitor_n=2))  # others are unaffected

    for status in (ConversationStatus.INVITING, ConversationStatus.ACTIVE):
        await store.save_conversation(with_status(first, status))
        assert not await store.add_conversation(second)

    await store.save_conversation(with_status(first, ConversationStatus.ENDED))
    assert await store.add_conversation(second)
    assert await store.get_conversation(second.id) == second


async def test_two_processes_cannot_both_open_a_conversation(backend: Backend) -> None:
    await with_visitors(backend.store, 1)
    candidates = [conversation(n) for n in range(1, 7)]
    if backend.url is None:
        results = await asyncio.gather(*(backend.store.add_conversation(c) for c in candidates))
    else:
        async with started(backend.url) as other_db:
            other = SqlStore(other_db)
            stores = [backend.store, other] * 3
            results = await asyncio.gather(
                *(s.add_conversation(c) for s, c in zip(stores, candidates, strict=True))
            )
    assert sorted(results) == [False] * 5 + [True]
    assert len(await backend.store.open_conversations()) == 1


async def test_conversation_is_found_by_room(store: Store) -> None:
    await with_visitors(store, 1, 2)
    await store.add_conversation(conversation(1, room_id=RoomId("!a:test")))
    await store.add_conversation(conversation(2, visitor_n=2, room_id=RoomId("!b:test")))

    found = await store.conversation_by_room(RoomId("!b:test"))
    assert found is not None and found.id == "c2"
    assert await store.conversation_by_room(RoomId("!none:test")) is None


async def test_latest_conversation_is_the_newest_of_the_visitor(store: Store) -> None:
    await with_visitors(store, 1, 2)
    assert await store.latest_conversation(VisitorId("v1")) is None
    old = conversation(5, status=ConversationStatus.ENDED)
    await store.add_conversation(old)
    new = conversation(7)
    await store.add_conversation(new)
    await store.add_conversation(conversation(9, visitor_n=2))

    assert await store.latest_conversation(VisitorId("v1")) == new


async def test_open_conversations_are_oldest_first_and_exclude_ended(store: Store) -> None:
    await with_visitors(store, 1, 2, 3, 4)
    await store.add_conversation(conversation(3, visitor_n=1))
    await store.add_conversation(conversation(1, visitor_n=2, status=ConversationStatus.ACTIVE))
    await store.add_conversation(conversation(4, visitor_n=3, status=ConversationStatus.ENDED))
    await store.add_conversation(conversation(2, visitor_n=4, status=ConversationStatus.INVITING))

    assert [c.id for c in await store.open_conversations()] == ["c1", "c2", "c3"]


# messages


async def test_messages_are_numbered_from_one_per_conversation(store: Store) -> None:
    await with_conversations(store, 1, 2)
    stored = []
    for n in range(1, 4):
        m = dataclasses.replace(message(n), seq=99)  # the caller's seq is ignored
        saved, created = await store.add_message(m)
        assert created
        assert saved == dataclasses.replace(m, seq=n)
        stored.append(saved)
    other, _ = await store.add_message(message(1, conv=2))

    assert other.seq == 1
    assert await store.messages(ConversationId("c1")) == stored


async def test_message_with_known_client_id_is_not_added_again(store: Store) -> None:
    await with_conversations(store, 1, 2)
    first, created = await store.add_message(message(1, client_id="k1"))
    assert created

    retry = dataclasses.replace(message(2, client_id="k1"), body="typed twice")
    again, created = await store.add_message(retry)
    assert (again, created) == (first, False)
    assert await store.messages(ConversationId("c1")) == [first]

    elsewhere, created = await store.add_message(message(1, conv=2, client_id="k1"))
    assert created and elsewhere.seq == 1  # a client id is only unique per conversation


async def test_message_with_known_event_id_is_not_added_again(store: Store) -> None:
    await with_conversations(store, 1, 2)
    first, _ = await store.add_message(message(1, event_id="$e1"))

    for duplicate in (message(2, event_id="$e1"), message(1, conv=2, event_id="$e1")):
        again, created = await store.add_message(duplicate)
        assert (again, created) == (first, False)
    assert await store.messages(ConversationId("c2")) == []
    second, created = await store.add_message(message(3, event_id="$e2"))
    assert created and second.seq == 2  # the refused ones left no gap


async def test_twenty_concurrent_messages_get_seqs_one_to_twenty(store: Store) -> None:
    await with_conversations(store, 1)
    results = await asyncio.gather(*(store.add_message(message(n)) for n in range(20)))

    assert all(created for _, created in results)
    assert sorted(m.seq for m, _ in results) == list(range(1, 21))
    stored = await store.messages(ConversationId("c1"))
    assert [m.seq for m in stored] == list(range(1, 21))
    assert {m.id for m in stored} == {m.id for m, _ in results}


async def test_messages_since_returns_only_later_ones(store: Store) -> None:
    await with_conversations(store, 1)
    for n in range(1, 6):
        await store.add_message(message(n))

    assert [m.seq for m in await store.messages(ConversationId("c1"), since=3)] == [4, 5]
    assert await store.messages(ConversationId("c1"), since=5) == []
    assert await store.messages(ConversationId("c-unknown")) == []


async def test_message_is_found_by_its_event(store: Store) -> None:
    await with_conversations(store, 1)
    await store.add_message(message(1))
    m, _ = await store.add_message(message(2, event_id="$e2"))

    assert await store.message_by_event(EventId("$e2")) == m
    assert await store.message_by_event(EventId("$nope")) is None


async def test_message_is_found_by_id_and_keeps_the_event_it_was_sent_as(store: Store) -> None:
    await with_conversations(store, 1, 2)
    a1, _ = await store.add_message(message(1))
    a2, _ = await store.add_message(message(2))
    b1, _ = await store.add_message(message(1, conv=2))
    assert await store.get_message(a1.id) == a1
    assert await store.get_message(b1.id) == b1
    assert await store.get_message(MessageId("nope")) is None

    await store.set_message_event(a1.id, EventId("$a1"))
    sent = dataclasses.replace(a1, event_id=EventId("$a1"))
    assert await store.get_message(a1.id) == sent
    assert await store.message_by_event(EventId("$a1")) == sent
    assert await store.messages(ConversationId("c1")) == [sent, a2]  # the others untouched
    assert await store.get_message(b1.id) == b1

    await store.set_message_event(MessageId("nope"), EventId("$x"))  # nothing to record
    assert await store.message_by_event(EventId("$x")) is None


async def test_a_claim_is_held_by_one_process_and_let_go_at_the_end_of_its_block(
    backend: Backend,
) -> None:
    store = backend.store

    async def other_process(name: str) -> bool:
        if backend.url is None:
            return True  # one process only: nobody else to ask
        async with started(backend.url) as other_db:
            async with SqlStore(other_db).claim(name) as mine:
                return mine

    def elsewhere(name: str) -> asyncio.Task[bool]:
        return apart(lambda: other_process(name))

    async with store.claim("room:c1") as mine:
        assert mine
        # SQLite and memory serve one process: the caller's own lock decides there
        assert await elsewhere("room:c1") is (backend.name != "postgres")
        assert await elsewhere("room:c2")  # another name is another claim
    assert await elsewhere("room:c1")  # let go when the block ended


# messages edited and removed in Matrix

C1 = ConversationId("c1")


def advisor_message(n: int, **changes: object) -> Message:
    return dataclasses.replace(
        message(n, event_id=f"$e{n}"),
        sender=Sender.ADVISOR,
        author="Ann",
        author_id=ANN,
        **changes,  # type: ignore[arg-type]
    )


async def test_a_message_keeps_its_author_and_the_message_it_answers(store: Store) -> None:
    await with_conversations(store, 1)
    first, _ = await store.add_message(advisor_message(1))
    reply, _ = await store.add_message(advisor_message(2, reply_to=first.seq))

    assert (reply.author_id, reply.reply_to) == (ANN, 1)
    assert await store.get_message(reply.id) == reply
    assert await store.message_by_event(EventId("$e2")) == reply


async def test_an_edit_and_a_removal_are_stored_and_listed_as_changed(store: Store) -> None:
    await with_conversations(store, 1)
    stored = [(await store.add_message(advisor_message(n)))[0] for n in range(1, 5)]
    edited = stored[1].edit(ANN, "typo fixed", 2000.5)
    removed = stored[2].remove(2001.5)
    assert edited is not None and removed is not None

    assert await store.change_message(stored[1], edited)
    assert await store.change_message(stored[2], removed)

    assert await store.get_message(edited.id) == edited
    assert (await store.message_by_event(EventId("$e3"))) == removed
    assert removed.body == "" and removed.removed_at == 2001.5
    assert await store.messages(C1) == [stored[0], edited, removed, stored[3]]
    # what a page holding messages up to `since` may show in an older state
    assert await store.changed_messages(C1, 4) == [edited, removed]
    assert await store.changed_messages(C1, 2) == [edited]
    assert await store.changed_messages(C1, 1) == []
    assert await store.changed_messages(ConversationId("c-unknown"), 9) == []


async def test_a_change_made_from_a_stale_copy_is_refused(store: Store) -> None:
    await with_conversations(store, 1)
    original, _ = await store.add_message(advisor_message(1))
    first = original.edit(ANN, "first edit", 2000.0)
    assert first is not None and await store.change_message(original, first)

    # another process read the message before the first edit, and edits it too
    stale = original.edit(ANN, "stale edit", 2001.0)
    assert stale is not None
    assert not await store.change_message(original, stale)
    removal = original.remove(2002.0)
    assert removal is not None and not await store.change_message(original, removal)
    assert await store.get_message(original.id) == first


async def test_two_processes_changing_one_message_both_apply_in_turn(backend: Backend) -> None:
    store = backend.store
    await with_conversations(store, 1)
    original, _ = await store.add_message(advisor_message(1))
    edit = original.edit(ANN, "edited", 2000.0)
    removal = original.remove(2001.0)
    assert edit is not None and removal is not None

    won = await asyncio.gather(
        apart(lambda: store.change_message(original, edit)),
        apart(lambda: store.change_message(original, removal)),
    )
    assert sorted(won) == [False, True]  # one of them read again (and decides anew)
    assert (await store.get_message(original.id)) in (edit, removal)


# advisors


async def test_advisor_round_trips_every_field_and_can_be_removed(store: Store) -> None:
    full = Advisor(
        mxid=AdvisorMxid("@ann:test"),
        available=True,
        presence=Presence.UNAVAILABLE,
        capacity=0,
        display_name="Ann",
        control_room=RoomId("!dm-ann:test"),
    )
    bare = Advisor(mxid=AdvisorMxid("@bob:test"))  # capacity None, presence unknown
    await store.save_advisor(full)
    await store.save_advisor(bare)
    assert await store.get_advisor(full.mxid) == full
    assert await store.get_advisor(bare.mxid) == bare
    assert await store.get_advisor(AdvisorMxid("@nobody:test")) is None

    for presence in Presence:
        changed = dataclasses.replace(full, presence=presence, available=False, capacity=None)
        await store.save_advisor(changed)
        assert await store.get_advisor(full.mxid) == changed

    assert await store.remove_advisor(full.mxid)
    assert not await store.remove_advisor(full.mxid)
    assert await store.get_advisor(full.mxid) is None
    assert await store.advisors() == [bare]


async def test_advisors_are_listed_in_mxid_order(store: Store) -> None:
    mxids = ["@zed:test", "@Zoe:test", "@amy:test", "@_bot:test", "@bob-2:test", "@bob:test"]
    for mxid in mxids:
        await store.save_advisor(Advisor(AdvisorMxid(mxid)))

    assert [a.mxid for a in await store.advisors()] == sorted(mxids)


# settings


async def test_settings_are_stored_and_overwritten(store: Store) -> None:
    assert await store.get_setting("round_robin") is None
    await store.set_setting("round_robin", "@ann:test")
    await store.set_setting("other", "")
    await store.set_setting("round_robin", "@bob:test")

    assert await store.get_setting("round_robin") == "@bob:test"
    assert await store.get_setting("other") == ""


# transactions


async def test_transaction_commits_grouped_writes(store: Store) -> None:
    async with asyncio.timeout(5), store.transaction():
        await store.add_visitor(visitor(1), "session-1")
        async with store.transaction():  # nesting joins (or savepoints inside) the outer one
            await store.add_conversation(conversation(1))
        await store.add_message(message(1))

    assert await store.get_conversation(ConversationId("c1")) is not None
    assert len(await store.messages(ConversationId("c1"))) == 1


async def test_transaction_rolls_back_every_write_when_the_body_raises(backend: Backend) -> None:
    store = backend.store
    await with_visitors(store, 1)

    # A transaction whose calls took other connections would deadlock SQLite's one-connection
    # pool: fail instead of hanging.
    with pytest.raises(RuntimeError, match="boom"):
        async with asyncio.timeout(5), store.transaction():
            assert await store.add_conversation(conversation(1))
            await store.add_message(message(1))
            await store.set_setting("cursor", "moved")
            # The calls share the transaction's connection, so it reads its own writes.
            assert await store.get_conversation(ConversationId("c1")) is not None
            assert len(await store.messages(ConversationId("c1"))) == 1
            raise RuntimeError("boom")

    assert await store.get_conversation(ConversationId("c1")) is None
    assert await store.messages(ConversationId("c1")) == []
    assert await store.get_setting("cursor") is None
    assert await store.add_conversation(conversation(1))  # the store is usable afterwards


async def test_an_event_marked_handled_commits_with_its_transaction(backend: Backend) -> None:
    store = backend.store

    async def handled(event_id: str) -> bool:
        if isinstance(store, MemoryStore):
            return event_id in store.handled_events
        assert isinstance(store, SqlStore)
        return await AppserviceLog(store.db).event_handled(event_id)

    await store.mark_event_handled("$e1")
    await store.mark_event_handled("$e1")  # a second mark is harmless
    with pytest.raises(RuntimeError, match="boom"):
        async with asyncio.timeout(5), store.transaction():
            await store.mark_event_handled("$e2")
            await store.add_visitor(visitor(1), "session-1")
            raise RuntimeError("boom")
    async with asyncio.timeout(5), store.transaction():
        await store.mark_event_handled("$e3")
        await store.add_visitor(visitor(1), "session-1")

    assert await handled("$e1")
    assert not await handled("$e2")  # rolled back with the change it caused
    assert await handled("$e3")
    assert await store.get_visitor(VisitorId("v1")) == visitor(1)


# the appservice's idempotency log


async def test_appservice_transaction_is_remembered_once_marked(
    txn_log: tuple[AppserviceLog, FakeClock],
) -> None:
    log, _ = txn_log
    assert not await log.transaction_done("txn1")
    await log.mark_transaction("txn1")
    await log.mark_transaction("txn1")  # a retry of the same transaction is harmless
    assert await log.transaction_done("txn1")
    assert not await log.transaction_done("txn2")


async def test_appservice_event_is_remembered_once_marked(
    txn_log: tuple[AppserviceLog, FakeClock],
) -> None:
    log, _ = txn_log
    assert not await log.event_handled("$e1")
    await asyncio.gather(log.mark_event("$e1"), log.mark_event("$e1"))
    await log.mark_event("$e1")
    assert await log.event_handled("$e1")
    assert not await log.event_handled("$e2")


async def test_prune_forgets_only_old_marks(txn_log: tuple[AppserviceLog, FakeClock]) -> None:
    log, clock = txn_log
    await log.mark_transaction("old-txn")
    await log.mark_event("$old")
    clock.advance(3600)
    await log.mark_transaction("new-txn")
    await log.mark_event("$new")

    await log.prune(older_than=T0 + 1800)

    assert not await log.transaction_done("old-txn")
    assert not await log.event_handled("$old")
    assert await log.transaction_done("new-txn")
    assert await log.event_handled("$new")
