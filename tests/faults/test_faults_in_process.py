"""Faults while visitors and advisors chat: nothing lost, nothing doubled.

Each test runs a bounded load (a few conversations, a few dozen messages each way), breaks
something in the middle, then accounts for every message.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import asyncpg

from appservice.clock import WallClock
from appservice.db.url import parse_database_url
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
    real = desk.rooms.advisor_said
    failures = {"left": 2}

    async def flaky(*args, **kwargs):
        if failures["left"] and len(load.chats[0].advisor_sent) >= 3:
            failures["left"] -= 1
            raise RuntimeError("injected: the handler broke")
        return await real(*args, **kwargs)

    desk.rooms.advisor_said = flaky  # type: ignore[method-assign]
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
                last = chat.visitor.last_seq()
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
                    "AND backend_type = 'client backend' AND application_name = $1",
                    parse_database_url(
                        desk.config.database_url
                    ).application_name,  # this desk only
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


class JumpingClock(WallClock):
    """The machine's clock, which an administrator (or NTP) can step."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic()


async def test_clock_steps_back_and_forward_never_freeze_or_skip_an_offer(sqlite_desks, people):
    clock = JumpingClock()
    desk = await sqlite_desks.start(invite_timeout=2.0, clock=clock)
    ana = await people.advisor(desk, "ana")
    bob = await people.advisor(desk, "bob")
    by_id = {ana.user_id: ana, bob.user_id: bob}
    vera = await people.visitor(desk)
    started = await vera.start()
    invited = [asyncio.create_task(a.wait_for_invite()) for a in (ana, bob)]
    done, pending = await asyncio.wait(invited, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    room = done.pop().result()
    first = by_id[(await desk.store.get_conversation(started["conversation"]["id"])).advisor]
    second = bob if first is ana else ana
    clock.offset = -3600  # stepped back an hour right after the offer
    began = time.monotonic()
    # withdrawn after one timeout of real time, not after the hour comes back
    await first.wait_for_member(room, first.user_id, "leave", timeout=10)
    assert time.monotonic() - began < 6
    assert await second.wait_for_invite() == room
    clock.offset += 86_400  # and now a day forward: the offer moves on, nobody is lost
    await first.wait_for_invite(timeout=10)
    conversation = await desk.store.get_conversation(started["conversation"]["id"])
    assert conversation.status.value == "inviting" and conversation.advisor == first.user_id
    await first.join(room)
    await vera.connect()
    await vera.wait_status("active")


async def test_a_page_that_stops_reading_is_cut_off_and_nobody_else_notices(sqlite_desks, people):
    desk = await sqlite_desks.start()
    slow, fast = await people.visitor(desk), await people.visitor(desk)
    slow_id = (await slow.start())["conversation"]["id"]
    fast_id = (await fast.start())["conversation"]["id"]
    stuck = await slow.http.ws_connect(
        f"{slow.url}/api/ws", origin=slow.url, max_msg_size=0
    )  # connected, and then never reads a byte
    # ws_connect returns at the 101, before the server has looked the page's conversation up:
    # frames published before it subscribes reach nobody, and too few are left to cut it off
    deadline = time.monotonic() + 5
    while not desk.hub.is_watching(slow_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert desk.hub.is_watching(slow_id)
    await fast.connect()
    await fast.wait_for(lambda f: f.get("type") == "status")
    big = {"type": "typing", "typing": True, "name": "x" * 32_000}
    began = time.monotonic()
    for i in range(1500):  # ~48 MB for a reader that never reads
        desk.hub.publish_frame(slow_id, big)
        if i % 100 == 0:
            desk.hub.publish_frame(fast_id, {"type": "read", "up_to": i + 1})
            await asyncio.sleep(0)
    await fast.wait_for(lambda f: f.get("type") == "read" and f["up_to"] == 1401)
    assert time.monotonic() - began < 10
    code = None
    while code is None:  # now read what was buffered, until the server's close
        frame = await asyncio.wait_for(stuck.receive(), 10)
        if frame.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            code = stuck.close_code
    # 1013 "try again later" when the close frame gets through the backlog, 1006 when the
    # server gives up waiting for the reader first; either way the page reconnects and reads
    assert code in (1013, 1006)
    # the page may see the close a moment before the server's handler lets go of the socket
    deadline = time.monotonic() + 5
    while desk.hub.is_watching(slow_id) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not desk.hub.is_watching(slow_id) and desk.hub.is_watching(fast_id)
    await stuck.close()
