"""Faults that take a whole process away: Switchboard killed, the homeserver restarted."""

from __future__ import annotations

import asyncio

from tests.faults.conftest import make_advisors
from tests.faults.load import (
    ChatLoad,
    assert_nothing_lost_or_doubled,
    report,
    report_unsent,
)


async def test_switchboard_killed_mid_load_and_restarted_loses_and_doubles_nothing(
    switchboard_process, people, homeserver
):
    process = switchboard_process
    team = [await people.advisor(None, f"adv{i}") for i in range(2)]
    await make_advisors(process, people, homeserver, team)
    load = ChatLoad(process.config.portal.public_url)
    await load.open(people, team, visitors=3)

    async def crash() -> None:
        await asyncio.sleep(0.6)
        process.kill()
        await asyncio.sleep(0.5)  # senders keep trying while it is down
        await asyncio.to_thread(process.start)  # the pages reconnect by themselves

    await asyncio.gather(load.exchange(messages=10), crash())
    await load.settle(timeout=60)
    accounts = await load.account()
    report(f"Switchboard SIGKILLed and restarted ({load.retries} sends retried)", accounts)
    assert load.retries > 0, "the kill did not hit the load"
    report_unsent(homeserver.server.data_dir / "homeserver.db")
    assert_nothing_lost_or_doubled(accounts)
