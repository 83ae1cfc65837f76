"""Big transactions pushed while visitors and advisors chat: none refused, nothing lost.

Synapse batches up to 100 events per transaction, and an event may be up to 64 KiB, so a
transaction of ~6 MiB is legitimate; a 413 would make the homeserver retry it forever and hold
every later event behind it.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import aiohttp

from tests.faults.load import ChatLoad, assert_nothing_lost_or_doubled, report

KIB = 1024


def _filler(n: int, size: int) -> dict[str, object]:
    """An event the desk has no business with (a room it does not serve), ``size`` bytes big."""
    return {
        "type": "m.room.message",
        "room_id": "!elsewhere:localhost",
        "sender": "@someone:localhost",
        "event_id": f"$filler-{uuid.uuid4().hex}-{n}",
        "origin_server_ts": 1,
        "content": {"msgtype": "m.text", "body": "x" * size},
    }


async def test_a_hundred_60_kib_transactions_and_one_of_6_mib_mid_load(sqlite_desks, people):
    desk = await sqlite_desks.start()
    team = [await people.advisor(desk, f"adv{i}") for i in range(2)]
    load = ChatLoad(desk.config.portal.public_url)
    await load.open(people, team, visitors=3)
    url = f"http://127.0.0.1:{desk.config.appservice.port}/_matrix/app/v1/transactions"
    headers = {"Authorization": f"Bearer {desk.config.appservice.hs_token}"}
    statuses: list[int] = []
    sizes: list[int] = []

    async def push(http: aiohttp.ClientSession, events: list[dict[str, object]]) -> None:
        body = json.dumps({"events": events}).encode()
        sizes.append(len(body))
        async with http.put(f"{url}/big-{uuid.uuid4().hex}", data=body, headers=headers) as r:
            statuses.append(r.status)

    async def pushes() -> None:
        async with aiohttp.ClientSession() as http:
            for i in range(100):
                await push(http, [_filler(i, 60 * KIB)])
            await push(http, [_filler(1000 + i, 62 * KIB) for i in range(100)])

    await asyncio.gather(load.exchange(messages=8), pushes())
    await load.settle()
    accounts = await load.account()
    report("100 transactions of 60 KiB and one of 6 MiB pushed meanwhile", accounts)
    assert statuses == [200] * 101, [s for s in statuses if s != 200]
    assert min(sizes) > 60 * KIB and max(sizes) > 6 * 1024 * KIB
    assert_nothing_lost_or_doubled(accounts)
