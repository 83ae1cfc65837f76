"""The admins' !group commands, through the core's ports on the recording fake: each answers
what it did or what to type instead, and the spaces follow through the outbox."""

from __future__ import annotations

import pytest

from appservice.commands import groups as group_commands
from bridge.model import AdvisorMxid
from tests.appservice.test_commands import ADMIN, ANA, Bot, make_bot


@pytest.fixture
async def bot() -> Bot:
    bot = make_bot()
    group_commands.register(bot.registry, bot.core.groups)
    return bot


async def test_an_admin_builds_the_tree_and_lists_it(bot: Bot) -> None:
    await bot.say(ADMIN, f"!advisor add {ANA}")
    assert await bot.say(ADMIN, "!group create support") == [
        "Group support (support) created; its space follows. Add advisors with "
        "!group add support @user:server."
    ]
    await bot.say(ADMIN, '!group create support/billing "Billing and invoices"')
    assert await bot.say(ADMIN, f"!group add support/billing {ANA} secondary") == [
        f"{ANA} is now in support/billing (secondary)."
    ]
    assert await bot.say(ADMIN, f"!group add support/billing {ANA} secondary") == [
        f"{ANA} was in support/billing (secondary) already."
    ]
    (listing,) = await bot.say(ADMIN, "!group list")
    assert listing.splitlines() == [
        "Groups (path — name: members):",
        f"/ — All advisors: {ANA}",
        "  support — support: nobody",
        f"    support/billing — Billing and invoices: {ANA} (secondary)",
    ]
    spaces = {s[2]: s[1] for s in bot.gateway.of_spaces("space")}
    assert (spaces["support"], spaces["Billing and invoices"]) in bot.gateway.links
    assert (spaces["Billing and invoices"], AdvisorMxid(ANA)) in bot.gateway.in_space


async def test_an_admin_renames_moves_removes_and_deletes(bot: Bot) -> None:
    await bot.say(ADMIN, f"!advisor add {ANA}")
    for path in ("support", "sales", "support/billing"):
        await bot.say(ADMIN, f"!group create {path}")
    assert await bot.say(ADMIN, "!group rename support/billing Invoices") == [
        "Group support/billing is now called Invoices."
    ]
    assert await bot.say(ADMIN, "!group move support/billing sales") == [
        "Group support/billing moved; it is now sales/billing."
    ]
    await bot.say(ADMIN, f"!group add sales/billing {ANA} primary")
    assert await bot.say(ADMIN, "!group delete sales/billing") == [
        f"sales/billing is the primary group of {ANA}; give them another one first "
        f"(!group add <path> {ANA} primary)."
    ]
    assert await bot.say(ADMIN, f"!group remove sales/billing {ANA}") == [
        f"This is {ANA}'s primary group; every advisor has one. Give them another "
        f"(!group add <path> {ANA} primary) and they leave this one."
    ]
    await bot.say(ADMIN, f"!group add / {ANA}")
    assert await bot.say(ADMIN, "!group delete sales/billing") == ["Group sales/billing deleted."]
    (listing,) = await bot.say(ADMIN, "!group list")
    assert "billing" not in listing


@pytest.mark.parametrize(
    "text, answer",
    [
        ("!group", "Usage: !group create <path>"),
        ("!group frob", "Usage: !group create <path>"),
        ("!group create", "Usage: !group"),
        ("!group create Support", "'Support' is not allowed in a group path"),
        ("!group create support/billing", "There is no group support; !group list shows"),
        ("!group move support /", "There is no group support"),
        ("!group delete /", "The root group / cannot be deleted."),
        ("!group add / ana", "'ana' is not a Matrix user id"),
        ("!group add / @bob:test", "@bob:test is not an advisor; add them first with !advisor"),
        (f"!group add / {ANA} boss", "'boss' is not a role; write primary or secondary."),
    ],
)
async def test_a_mistyped_group_command_says_what_to_type_instead(
    bot: Bot, text: str, answer: str
) -> None:
    await bot.say(ADMIN, f"!advisor add {ANA}")
    (said,) = await bot.say(ADMIN, text)
    assert answer in said


async def test_advisors_cannot_run_group_commands(bot: Bot) -> None:
    await bot.say(ADMIN, f"!advisor add {ANA}")
    assert await bot.say(ANA, "!group create support") == [
        "Unknown command !group. Type !help for the commands you can use."
    ]


async def test_an_admin_repairs_a_space_deleted_by_hand_and_is_told_what_was_done(
    bot: Bot,
) -> None:
    from appservice.commands import directory as directory_commands
    from bridge.services.directory import DirectoryService

    directory_commands.register(
        bot.registry, bot.core.space_repair, DirectoryService(bot.store, bot.core.topics)
    )
    await bot.say(ADMIN, f"!advisor add {ANA}")
    await bot.say(ADMIN, "!group create support")
    await bot.say(ADMIN, f"!group add support {ANA} secondary")
    assert await bot.say(ADMIN, "!directory repair") == [
        "Every group space is in step with the directory (1 checked)."
    ]
    (old,) = [s[1] for s in bot.gateway.of_spaces("space")]
    bot.gateway.lose_space(old)
    assert await bot.say(ADMIN, "!directory repair") == [
        "Repairs of the group spaces (1 checked):\n"
        f"- support: space {old} is gone; a new one is made\n"
        "The repairs run now."
    ]
    await bot.core.outbox.drain()
    (new,) = [s[1] for s in bot.gateway.of_spaces("space") if s[1] != old]
    assert (new, AdvisorMxid(ANA)) in bot.gateway.in_space
    # only admins repair
    assert await bot.say(ANA, "!directory repair") == ["Only admins can run !directory repair."]
