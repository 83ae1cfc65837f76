"""Faults that take a whole process away: Switchboard killed, the homeserver restarted."""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import free_port
from tests.faults.load import (
    ChatLoad,
    assert_nothing_lost_or_doubled,
    report,
    report_unsent,
)
from tests.faults.process import SwitchboardProcess, write_config


@pytest.fixture
async def switchboard_process(homeserver, tmp_path):
    port = free_port()
    config_path = tmp_path / "switchboard.yaml"
    write_config(
        homeserver.config.path,
        config_path,
        {
            "database.url": f"sqlite:///{tmp_path / 'switchboard.db'}",
            "portal.port": port,
            "portal.public_url": f"http://127.0.0.1:{port}",
            "logging.level": "INFO",
        },
    )
    process = SwitchboardProcess(config_path)
    await asyncio.to_thread(process.start)
    yield process
    process.stop()


async def test_switchboard_killed_mid_load_and_restarted_loses_and_doubles_nothing(
    switchboard_process, people, homeserver
):
    process = switchboard_process
    team = [await people.advisor(None, f"adv{i}") for i in range(2)]
    await _make_advisors(process, people, homeserver, team)
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


async def _make_advisors(process, people, homeserver, team) -> None:
    """An admin adds the advisors with the bot, as in production; they say !available."""
    admin_id = homeserver.new_user("admin")
    process.stop()
    write_config(process.config_path, process.config_path, {"desk.admins": [admin_id]})
    await asyncio.to_thread(process.start)
    admin = await people.login(admin_id)
    bot = process.config.bot_mxid
    dm = await admin.create_room(invite=[bot], is_direct=True)
    await admin.wait_for_message(dm, "Type !help", sender=bot)
    for advisor in team:
        await admin.send_text(dm, f"!advisor add {advisor.user_id}")
        await admin.wait_for_message(dm, f"{advisor.user_id} is now an advisor", sender=bot)
        control = await advisor.wait_for_invite()
        await advisor.join(control)
        await advisor.send_text(control, "!available")
        await advisor.wait_for_message(control, "You are available", sender=bot)
