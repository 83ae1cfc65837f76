"""Fixtures of the fault tests: the e2e ones, and Switchboard as a process of its own."""

from __future__ import annotations

import asyncio

import pytest

from tests.desks import free_port, open_bot_chat
from tests.faults.process import SwitchboardProcess, write_config


@pytest.fixture
async def switchboard_process(homeserver, tmp_path):  # noqa: F811  (the fixtures above)
    port = free_port()
    config_path = tmp_path / "switchboard.yaml"
    write_config(
        homeserver.config.path,
        config_path,
        {
            "database.url": f"sqlite:///{tmp_path / 'switchboard.db'}",
            "portal.port": port,
            "portal.public_url": f"http://127.0.0.1:{port}",
            "logging.root.level": "INFO",
        },
    )
    process = SwitchboardProcess(config_path)
    await asyncio.to_thread(process.start)
    yield process
    process.stop()


async def make_advisors(process, people, homeserver, team) -> None:  # noqa: F811
    """An admin adds the advisors with the bot, as in production; they say !available."""
    admin_id = homeserver.new_user("admin")
    process.stop()
    write_config(process.config_path, process.config_path, {"desk.admins": [admin_id]})
    await asyncio.to_thread(process.start)
    await add_advisors_through_the_bot(process, people, admin_id, team)


async def add_advisors_through_the_bot(process, people, admin_id, team) -> None:  # noqa: F811
    """The admin ``admin_id`` (in the running process's desk.admins) adds each advisor of
    ``team`` with ``!advisor add``; each joins the bot's chat and says !available."""
    admin = await people.login(admin_id)
    bot = process.config.bot_mxid
    dm = await open_bot_chat(admin, bot)
    for advisor in team:
        await admin.send_text(dm, f"!advisor add {advisor.user_id}")
        await admin.wait_for_message(dm, f"{advisor.user_id} is now an advisor", sender=bot)
        control = await advisor.wait_for_invite()
        await advisor.join(control)
        await advisor.send_text(control, "!available")
        await advisor.wait_for_message(control, "You are available", sender=bot)
