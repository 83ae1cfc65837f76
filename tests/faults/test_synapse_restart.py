"""The homeserver restarted mid-load. In a file of its own, run last among the Synapse tests:
after a restart Synapse needs a moment before it pushes to appservices at full speed again.

Synapse drops the events it held in memory for us when it stops (element-hq/synapse#11637), and
a transaction it stored just before stopping stays unsent while the appservice counts as up
(seen here: 'load-1 a2' in application_services_txns, state unset); Switchboard reads both back
from the rooms once it answers again (appservice.catch_up)."""

from __future__ import annotations

import asyncio

from tests.faults.load import (
    ChatLoad,
    assert_nothing_lost_or_doubled,
    report,
    report_unsent,
)


async def test_the_homeserver_restarted_mid_load_loses_and_doubles_nothing(
    sqlite_desks, people, homeserver
):
    desk = await sqlite_desks.start()
    team = [await people.advisor(desk, f"adv{i}") for i in range(2)]
    load = ChatLoad(desk.config.portal.public_url)
    await load.open(people, team, visitors=3)

    async def restart() -> None:
        await asyncio.sleep(0.6)
        homeserver.server.stop()
        await asyncio.sleep(1.0)  # senders keep trying while it is down
        homeserver.server.start()  # in this thread: the homeserver is tied to it
        for advisor in team:
            advisor.restart_sync()

    await asyncio.gather(load.exchange(messages=10), restart())
    await load.settle(timeout=60)
    accounts = await load.account()
    report(f"homeserver stopped and restarted ({load.retries} sends retried)", accounts)
    assert load.retries > 0, "the restart did not hit the load"
    report_unsent(homeserver.server.data_dir / "homeserver.db")
    assert_nothing_lost_or_doubled(accounts)
