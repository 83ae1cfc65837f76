"""The admins' !topic commands and !group isolate, through the core's ports on the recording
fake: each answers what it did or what to type instead, and routing follows at once."""

from __future__ import annotations

import pytest

from appservice.commands import groups as group_commands
from bridge.model import ConversationStatus
from tests.appservice.test_commands import ADMIN, ANA, Bot, make_bot

BOB = "@bob:test"


@pytest.fixture
async def bot() -> Bot:
    bot = make_bot({"general": "General", "billing": "Billing"})
    group_commands.register(bot.registry, bot.core.groups)
    return bot


async def visitor(bot: Bot, session: str, topic: str):
    bot.clock.advance(1)
    form = {"name": "Vera", "topic": topic, "message": "Hello"}
    conversation, _ = await bot.core.visitors.start(session, form)
    await bot.core.outbox.drain()
    return await bot.store.get_conversation(conversation.id)


async def test_an_admin_routes_a_topic_to_a_group_and_lists_the_topics(bot: Bot) -> None:
    (listing,) = await bot.say(ADMIN, "!topic list")
    assert listing.splitlines() == [
        "Topics (id (label) → group):",
        "general (General) → /",
        "billing (Billing) → /",
    ]
    await bot.say(ADMIN, "!group create support")
    await bot.say(ADMIN, "!group create support/billing")
    assert await bot.say(ADMIN, "!topic route billing support/billing") == [
        "Visitors choosing billing now go to support/billing."
    ]
    assert await bot.say(ADMIN, "!group isolate support/billing on") == [
        "support/billing is isolated: its primary members get only its visitors."
    ]
    (listing,) = await bot.say(ADMIN, "!topic list")
    assert "billing (Billing) → support/billing (isolated)" in listing.splitlines()
    (listing,) = await bot.say(ADMIN, "!group list")
    assert "    support/billing — billing (isolated): nobody" in listing.splitlines()
    assert await bot.say(ADMIN, "!group isolate support/billing off") == [
        "support/billing is no longer isolated."
    ]
    assert await bot.say(ADMIN, "!topic route billing /") == [
        "Visitors choosing billing now go to /."
    ]


async def test_a_topic_whose_group_is_deleted_goes_to_everyone_and_says_so(bot: Bot) -> None:
    await bot.say(ADMIN, "!group create sales")
    await bot.say(ADMIN, "!topic route billing sales")
    await bot.say(ADMIN, "!group delete sales")
    (listing,) = await bot.say(ADMIN, "!topic list")
    assert "billing (Billing) → / (its group was deleted)" in listing.splitlines()


async def test_a_mistyped_topic_command_says_what_to_type_instead(bot: Bot) -> None:
    (answer,) = await bot.say(ADMIN, "!topic route nope /")
    assert "There is no topic 'nope'; the topics are: general, billing." in answer
    (answer,) = await bot.say(ADMIN, "!topic route billing support")
    assert "There is no group support" in answer
    (answer,) = await bot.say(ADMIN, "!topic")
    assert "list | route <topic> <group path>" in answer
    (answer,) = await bot.say(ADMIN, "!group isolate / on")
    assert "cannot be isolated" in answer
    (answer,) = await bot.say(ADMIN, "!group isolate / maybe")
    assert "isolate <path> on|off" in answer


async def test_a_member_of_an_isolated_group_gets_and_sees_only_its_visitors(bot: Bot) -> None:
    for who in (ANA, BOB):
        await bot.say(ADMIN, f"!advisor add {who}")
    await bot.say(ADMIN, "!group create billing")
    await bot.say(ADMIN, f"!group add billing {ANA} primary")
    await bot.say(ADMIN, "!group isolate billing on")
    await bot.say(ADMIN, "!topic route billing billing")
    await bot.say(ANA, "!available")
    general = await visitor(bot, "s1", "general")
    assert general.status is ConversationStatus.WAITING  # Ana is isolated in billing
    billing = await visitor(bot, "s2", "billing")
    assert billing.advisor == ANA
    assert await bot.say(ANA, "!queue") == [
        "0 waiting, 1 being offered, 0 in conversation in billing."
    ]
    assert await bot.say(BOB, "!queue") == ["1 waiting, 1 being offered, 0 in conversation."]
    await bot.say(BOB, "!available")
    assert (await bot.store.get_conversation(general.id)).advisor == BOB


async def test_advisors_cannot_route_topics(bot: Bot) -> None:
    await bot.say(ADMIN, f"!advisor add {ANA}")
    (answer,) = await bot.say(ANA, "!topic route billing /")
    assert answer.startswith("Unknown command !topic")  # admin commands are not shown to them
    (listing,) = await bot.say(ADMIN, "!topic list")
    assert "billing (Billing) → /" in listing.splitlines()
