"""Faults while visitors and advisors chat: nothing lost, nothing doubled.

Each test runs a bounded load (a few conversations, a few dozen messages each way), breaks
something in the middle, then accounts for every message.
"""

from __future__ import annotations

import asyncio

import asyncpg

from tests.faults.load import ChatLoad, assert_nothing_lost_or_doubled, report
from tests.pg import server_url


async def _load(desk, people, advisors: int = 2, visitors: int = 3) -> ChatLoad:
    team = [await people.advisor(desk, f"adv{i}") for i in range(advisors)]
    load = ChatLoad(desk.config.portal.public_url)
    await load.open(people, team, visitors)
    return load


async def test_a_handler_failing_mid_transaction_is_retried_and_nothing_is_lost(
    sqlite_desks, people
):
    desk = await sqlite_desks.start()
    load = await _load(desk, people)
    real = desk.conversations.advisor_message
    failures = {"left": 2}

    async def flaky(*args, **kwargs):
        if failures["left"] and len(load.chats[0].advisor_sent) >= 3:
            failures["left"] -= 1
            raise RuntimeError("injected: the handler broke")
        return await real(*args, **kwargs)

    desk.conversations.advisor_message = flaky  # type: ignore[method-assign]
    await load.exchange(messages=8)
    await load.settle(timeout=40)
    accounts = await load.account()
    report("handler raising inside a transaction", accounts)
    assert failures["left"] == 0, "the fault was never injected"
    assert_nothing_lost_or_doubled(accounts)


async def test_visitor_websockets_cut_again_and_again_lose_and_double_nothing(
    sqlite_desks, people
):
    desk = await sqlite_desks.start()
    load = await _load(desk, people)
    stop = asyncio.Event()

    async def cutter() -> None:
        while not stop.is_set():
            for chat in load.chats:
                last = max([m["seq"] for m in chat.visitor.messages()] or [0])
                await chat.visitor.disconnect()
                await asyncio.sleep(0.05)
                await chat.visitor.connect(since=last)
            await asyncio.sleep(0.2)

    cutting = asyncio.create_task(cutter())
    await load.exchange(messages=10)
    stop.set()
    await cutting
    await load.settle()
    accounts = await load.account()
    report("visitor websockets cut repeatedly", accounts)
    assert_nothing_lost_or_doubled(accounts)
    for chat in load.chats:  # over all the connections, each message arrived exactly once
        seqs = [m["seq"] for m in chat.visitor.messages()]
        assert len(seqs) == len(set(seqs)), f"{chat.tag}: a frame arrived twice"
        bodies = [m["body"] for m in chat.visitor.messages() if m["sender"] == "advisor"]
        assert bodies == chat.advisor_sent


async def test_the_homeserver_replaying_transactions_under_load_doubles_nothing(
    sqlite_desks, people
):
    desk = await sqlite_desks.start()
    load = await _load(desk, people)
    endpoint = desk.endpoint
    original = endpoint._handle
    replays = {"count": 0}

    async def replaying(body):
        await original(body)
        await original(body)  # the same events again, as after a lost acknowledgement
        replays["count"] += 1

    endpoint._handle = replaying  # type: ignore[method-assign]
    await load.exchange(messages=8)
    await load.settle()
    accounts = await load.account()
    report("transactions replayed", accounts)
    assert replays["count"] > 0
    assert_nothing_lost_or_doubled(accounts)


async def test_database_connections_dropped_mid_load_lose_and_double_nothing(pg_desks, people):
    desk = await pg_desks.start()
    load = await _load(desk, people)
    stop = asyncio.Event()
    dropped = {"backends": 0}

    async def terminator() -> None:
        admin = await asyncpg.connect(server_url())
        try:
            while not stop.is_set():
                await asyncio.sleep(0.4)
                rows = await admin.fetch(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND backend_type = 'client backend'"
                )
                dropped["backends"] += len(rows)
        finally:
            await admin.close()

    terminating = asyncio.create_task(terminator())
    await load.exchange(messages=8)
    stop.set()
    await terminating
    await load.settle(timeout=60)
    accounts = await load.account()
    report(f"PostgreSQL backends terminated ({dropped['backends']})", accounts)
    assert dropped["backends"] > 0
    assert_nothing_lost_or_doubled(accounts)
