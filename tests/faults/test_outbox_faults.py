"""The outbox under faults that only a real process and a real homeserver show: Switchboard
killed between a commit and its handler, and the homeserver away for a minute with work
pending."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import aiohttp

from appservice.bootstrap import CRASH_HOOK
from tests.faults.conftest import make_advisors
from tests.faults.proxy import CuttableProxy

OUTAGE_SECONDS = 60.0
PENDING = 20


def texts(advisor, room: str, body: str) -> int:
    return sum(1 for _, b, _ in advisor.messages(room) if b == body)


async def test_killed_right_after_a_message_is_stored_it_reaches_the_room_once_after_a_restart(
    switchboard_process, people, homeserver
):
    process = switchboard_process
    (ana,) = [await people.advisor(None, "ana")]
    await make_advisors(process, people, homeserver, [ana])
    vera = await people.visitor(process)
    await vera.start()
    room = await ana.wait_for_invite()
    await ana.join(room)
    await ana.wait_for_message(room, "Hello, I was charged twice.")

    # the next commit that raises VisitorSaid kills the process before any handler runs
    process.stop()
    await asyncio.to_thread(process.start, env={CRASH_HOOK: "VisitorSaid:1"})
    body = {"client_id": "after-the-crash", "body": "Are you still there?"}
    try:
        status, _ = await vera.post("/api/conversation/messages", body)
    except aiohttp.ClientError:
        status = None  # the answer never came: the process died right after the commit
    assert status is None
    assert await asyncio.to_thread(process.wait_killed) != 0

    await asyncio.to_thread(process.start)  # its outbox still holds the message
    await ana.wait_for_message(room, "Are you still there?", timeout=20)
    # the page sends it again (same client id), as it does when an answer is lost
    status, again = await vera.post("/api/conversation/messages", body)
    assert status == 201 and again["message"]["body"] == "Are you still there?"
    await ana.send_text(room, "Yes.")  # a later event, so the room is read past the message
    await ana.wait_for_message(room, "Yes.")
    assert texts(ana, room, "Are you still there?") == 1


async def test_a_minute_without_the_homeserver_parks_nothing_and_the_work_runs_on_its_return(
    sqlite_desks, people, homeserver
):
    hs = urlsplit(homeserver.server.url)
    proxy = await CuttableProxy(hs.hostname or "127.0.0.1", hs.port or 80).start()
    # Vera writes PENDING messages back to back: more than a visitor may at once by default
    desk = await sqlite_desks.start(
        homeserver_address=proxy.url, portal={"message_burst": PENDING}
    )
    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    await vera.start()
    room = await ana.wait_for_invite()
    await ana.join(room)
    await vera.connect()
    await vera.wait_status("active")

    await proxy.cut()
    for i in range(PENDING):
        await vera.say(f"while away {i}", client_id=f"away-{i}")  # stored: 201 each
    began = time.monotonic()
    while time.monotonic() - began < OUTAGE_SECONDS:
        assert await desk.store.outbox.parked() == []  # an outage is not a failure
        await asyncio.sleep(5)
    pending = await desk.store.db.fetchval("SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
    assert pending >= PENDING, pending

    await proxy.start()
    back = time.monotonic()
    await ana.wait_for_message(room, f"while away {PENDING - 1}", timeout=15)
    took = time.monotonic() - back
    print(
        f"\n{PENDING} messages waited {OUTAGE_SECONDS:.0f} s; all in the room {took:.1f} s after"
    )
    assert took < 5
    assert await desk.store.outbox.parked() == []
    bodies = [b for _, b, _ in ana.messages(room) if b.startswith("while away")]
    assert bodies == [f"while away {i}" for i in range(PENDING)]  # in order, each once
    await proxy.cut()
