"""Advisors' !find and !directory, through the core's ports on the recording fake: matching
groups and advisors with who is available, accents and case not counting, isolated groups
seeing only themselves, and strangers refused."""

from __future__ import annotations

import pytest

from appservice.commands import directory as directory_commands
from appservice.commands import groups as group_commands
from bridge.model import Presence
from bridge.services.directory import DirectoryService
from tests.appservice.test_commands import ADMIN, ANA, Bot, make_bot

BEA = "@bea:test"
CARLOS = "@carlos:test"


@pytest.fixture
async def bot() -> Bot:
    bot = make_bot({"general": "General", "billing": "Billing"})
    core = bot.core
    group_commands.register(bot.registry, core.groups)
    directory_commands.register(
        bot.registry, core.space_repair, DirectoryService(bot.store, core.topics)
    )
    for advisor in (ANA, BEA, CARLOS):
        await bot.say(ADMIN, f"!advisor add {advisor}")
    await bot.say(ADMIN, "!group create support")
    await bot.say(ADMIN, '!group create support/billing "Facturación"')
    await bot.say(ADMIN, "!group create sales")
    await bot.say(ADMIN, f"!group add support/billing {ANA} primary")
    await bot.say(ADMIN, f"!group add support/billing {BEA} primary")
    await bot.say(ADMIN, f"!group add sales {CARLOS} primary")
    # ana: online and available; bea: available but offline; carlos: online but away
    await core.advisors.presence_changed(ANA, Presence.ONLINE)
    await core.advisors.presence_changed(BEA, Presence.OFFLINE)
    await core.advisors.presence_changed(CARLOS, Presence.ONLINE)
    await bot.say(ANA, "!available")
    await bot.say(BEA, "!available")
    await core.outbox.drain()
    return bot


async def test_an_advisor_finds_an_accented_group_by_a_plain_prefix(bot: Bot) -> None:
    (said,) = await bot.say(CARLOS, "!find factura")
    assert said.splitlines() == [
        "Found for 'factura' (● shown to visitors now):",
        "Groups:",
        "● support/billing — Facturación: 1 of 2 available",
    ]


async def test_find_lists_advisors_with_who_the_public_is_shown(bot: Bot) -> None:
    (said,) = await bot.say(ANA, "!find SUPPORT")
    assert "● support/billing — Facturación: 1 of 2 available" in said.splitlines()
    (said,) = await bot.say(ANA, "!find bea")
    assert said.splitlines()[-2:] == ["Advisors:", f"○ {BEA} — offline"]
    (said,) = await bot.say(ADMIN, "!find a")  # every word starting with a: ana, all advisors
    lines = said.splitlines()
    assert f"● {ANA} — available" in lines
    assert "● / — All advisors: 1 of 3 available" in lines


async def test_find_says_when_nothing_matches_and_what_to_type(bot: Bot) -> None:
    assert await bot.say(ANA, "!find zzz") == ["Nothing matches 'zzz'."]
    (said,) = await bot.say(ANA, "!find")
    assert said == "Say what to look for. Usage: !find <keyword…>"


async def test_directory_shows_the_tree_with_who_is_available_where(bot: Bot) -> None:
    (said,) = await bot.say(CARLOS, "!directory")
    assert said.splitlines() == [
        "Directory (● someone is available now):",
        "● / — All advisors: 1 of 3 available",
        "  ○ sales — sales: 0 of 1 available",
        "  ○ support — support: 0 of 0 available",
        "    ● support/billing — Facturación: 1 of 2 available",
    ]


async def test_an_isolated_groups_advisor_sees_only_their_group(bot: Bot) -> None:
    await bot.say(ADMIN, "!group isolate sales on")
    (said,) = await bot.say(CARLOS, "!directory")
    assert said.splitlines() == [
        "Directory (your group sales is isolated: only it is listed) (● someone is available "
        "now):",
        "○ sales — sales: 0 of 1 available",
    ]
    assert await bot.say(CARLOS, "!find ana") == [
        "Nothing matches 'ana' (your group sales is isolated: only it is listed)."
    ]
    (said,) = await bot.say(ANA, "!find carlos")  # ana's group is not isolated
    assert said.splitlines()[-1] == f"○ {CARLOS} — away"


async def test_strangers_cannot_find_or_list_and_advisors_cannot_repair(bot: Bot) -> None:
    assert await bot.say("@stranger:test", "!find ana") == [
        "Unknown command !find. Type !help for the commands you can use."
    ]
    assert await bot.say("@stranger:test", "!directory") == [
        "Unknown command !directory. Type !help for the commands you can use."
    ]
    assert await bot.say(ANA, "!directory repair") == ["Only admins can run !directory repair."]
