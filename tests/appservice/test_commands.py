"""Every bot command, through the core's ports: the recording gateway shows what the bot said
(as maubot tests its bots). The end-to-end tests talk to the bot from a real client."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from appservice.commands import CommandContext, CommandRegistry, Role
from appservice.commands import desk as desk_commands
from appservice.commands import outbox as outbox_commands
from bridge.desk import Desk, DeskSettings, build_desk
from bridge.errors import TemporarilyUnavailable
from bridge.model import AdvisorMxid, ConversationStatus, Presence, RoomId, RoutingSettings
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel, MemoryStore

ADMIN = "@boss:test"
ANA = "@ana:test"
DM = RoomId("!dm:test")
FORM = {"name": "Vera", "topic": "general", "message": "Hello"}


@dataclass
class Bot:
    store: MemoryStore
    gateway: FakeMatrixGateway
    clock: FakeClock
    core: Desk
    registry: CommandRegistry

    async def say(self, sender: str, text: str, room: RoomId = DM) -> list[str]:
        """``sender`` types ``text`` in ``room``; what the bot answered there."""
        advisor = await self.core.advisors.get(sender)
        conversation = await self.core.rooms.conversation_in(room)
        role = Role.ADMIN if sender == ADMIN else Role.ADVISOR if advisor else Role.ANYONE

        async def reply(answer: str) -> None:
            await self.core.bot.say(room, answer)

        before = len(self.gateway.sent)
        await self.registry.run(
            text, CommandContext(sender, room, [], role, advisor, conversation, reply)
        )
        await self.core.outbox.drain()
        return [s[2] for s in self.gateway.sent[before:] if s[0] == "notice" and s[1] == room]

    async def visitor(self, session: str = "s1") -> Any:
        self.clock.advance(1)
        conversation, _ = await self.core.visitors.start(session, FORM)
        await self.core.outbox.drain()
        return await self.store.get_conversation(conversation.id)


def make_bot(topics: Mapping[str, str] | None = None) -> Bot:
    """The core on the recording fakes, with the advisors' and admins' desk commands; a test
    module registers the commands it tests besides on ``bot.registry``."""
    store, gateway, clock = MemoryStore(), FakeMatrixGateway(), FakeClock()
    core = build_desk(
        store,
        gateway,
        FakeVisitorChannel(),
        clock,
        DeskSettings(topics or {"general": "General"}, RoutingSettings(3, 60.0)),
    )
    registry = CommandRegistry()
    desk_commands.register(registry, core, default_capacity=3)
    return Bot(store, gateway, clock, core, registry)


@pytest.fixture
async def bot() -> Bot:
    bot = make_bot()
    outbox_commands.register(bot.registry, bot.store.outbox, bot.clock, bot.core.outbox.wake)
    return bot


async def test_help_lists_what_each_role_may_use(bot: Bot) -> None:
    (admin_help,) = await bot.say(ADMIN, "!help")
    assert "!advisor" in admin_help and "!outbox" in admin_help and "!available" in admin_help
    (anyone_help,) = await bot.say("@someone:test", "!help")
    assert anyone_help.splitlines()[1:] == ["!help — list the commands you can use"]


async def test_admin_adds_lists_and_removes_an_advisor_who_is_welcomed_in_a_direct_chat(
    bot: Bot,
) -> None:
    bot.gateway.presences[AdvisorMxid(ANA)] = Presence.ONLINE
    assert await bot.say(ADMIN, f"!advisor add {ANA}") == [
        f"{ANA} is now an advisor. They start as away: they type !available to receive visitors."
    ]
    (direct,) = bot.gateway.of("direct")
    assert direct[2] == ANA
    welcome = [s for s in bot.gateway.of("notice") if s[1] == direct[1]]
    assert len(welcome) == 1 and "You are now a Switchboard advisor" in welcome[0][2]
    ana = await bot.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.control_room == direct[1] and ana.presence is Presence.ONLINE
    assert await bot.say(ADMIN, f"!advisor add {ANA}") == [f"{ANA} is already an advisor."]
    assert len(bot.gateway.of("direct")) == 1
    (listing,) = await bot.say(ADMIN, "!advisor list")
    assert f"{ANA} — away, presence online, 0/3 visitors" in listing
    assert await bot.say(ADMIN, f"!advisor remove {ANA}") == [f"{ANA} is no longer an advisor."]
    assert await bot.say(ADMIN, f"!advisor remove {ANA}") == [f"{ANA} is not an advisor."]
    assert await bot.say(ADMIN, "!advisor list") == [
        "No advisors yet. Add one with !advisor add @user:server"
    ]


@pytest.mark.parametrize(
    "text, answer",
    [
        ("!advisor", "Usage: !advisor add|remove @user:server, or !advisor list"),
        ("!advisor fire @ana:test", "Usage: !advisor"),
        ("!advisor add", "!advisor add takes one Matrix user id."),
        ("!advisor add ana", "'ana' is not a Matrix user id"),
        ("!frobnicate", "Unknown command !frobnicate. Type !help"),
        ("!", "Type !help for the list of commands."),
    ],
)
async def test_a_mistyped_admin_command_gets_what_to_type_instead(
    bot: Bot, text: str, answer: str
) -> None:
    (said,) = await bot.say(ADMIN, text)
    assert said.startswith(answer) or answer in said
    assert not bot.gateway.of("direct")


async def test_commands_above_the_senders_role_are_unknown_to_them(bot: Bot) -> None:
    await bot.core.advisors.add(ANA)
    assert await bot.say(ANA, "!advisor add @mallory:test") == [
        "Unknown command !advisor. Type !help for the commands you can use."
    ]
    assert await bot.say("@someone:test", "!available") == [
        "Unknown command !available. Type !help for the commands you can use."
    ]


async def test_an_advisor_says_available_away_and_capacity_and_sees_their_status(
    bot: Bot,
) -> None:
    await bot.core.advisors.add(ANA)
    (said,) = await bot.say(ANA, "!available")
    assert said == "You are available: new visitors will be sent to you."
    conversation = await bot.visitor()
    assert conversation.status is ConversationStatus.INVITING and conversation.advisor == ANA
    assert await bot.say(ANA, "!capacity 5") == ["You take up to 5 visitors at once."]
    assert await bot.say(ANA, "!capacity default") == ["You take up to 3 visitors at once."]
    (usage,) = await bot.say(ANA, "!capacity lots")
    assert usage == "'lots' is not a number. Usage: !capacity <number>|default"
    assert await bot.say(ANA, "!capacity 0") == ["Capacity must be between 1 and 50."]
    assert await bot.say(ANA, "!status") == [
        "You are available; Matrix presence unknown; 1 of 3 visitors."
    ]
    assert await bot.say(ANA, "!queue") == ["0 waiting, 1 being offered, 0 in conversation."]
    (away,) = await bot.say(ANA, "!away")
    assert away == "You are away: no new visitors. Your open chats stay with you."
    # the offer went back: nobody else is there, so the visitor waits
    waiting = await bot.store.get_conversation(conversation.id)
    assert waiting.status is ConversationStatus.WAITING
    assert ("revoke", conversation.room_id, ANA) in bot.gateway.sent


async def test_available_while_offline_says_why_nobody_comes(bot: Bot) -> None:
    await bot.core.advisors.add(ANA)
    await bot.core.advisors.presence_changed(ANA, Presence.OFFLINE)
    (said,) = await bot.say(ANA, "!available")
    assert "nobody comes until online" in said


async def test_close_ends_the_chat_in_a_visitors_room_only(bot: Bot) -> None:
    await bot.core.advisors.add(ANA, "Ana")
    await bot.core.advisors.set_available(ANA, True)
    conversation = await bot.visitor()
    await bot.core.rooms.advisor_joined(conversation.room_id, AdvisorMxid(ANA))
    assert await bot.say(ANA, "!close") == ["!close works in a visitor's room."]
    said = await bot.say(ANA, "!close", room=conversation.room_id)
    assert said == ["Ana ended the chat. The transcript is saved."]  # the room's closing notice
    ended = await bot.store.get_conversation(conversation.id)
    assert ended.status is ConversationStatus.ENDED
    assert ("leave", conversation.room_id, conversation.puppet) in bot.gateway.sent


async def test_an_admin_lists_retries_and_discards_parked_side_effects(bot: Bot) -> None:
    assert await bot.say(ADMIN, "!outbox parked") == [
        "Nothing is parked: every side effect ran or is on its way."
    ]

    async def a_close_that_fails_for_good(session: str) -> Any:
        conversation = await bot.visitor(session)
        bot.gateway.fail_leaves = 10  # the homeserver refuses the puppet's leave, again and again
        await bot.core.visitors.visitor_end(session)
        for _ in range(5):  # five tries, with backoff between them
            await bot.core.outbox.drain()
            bot.clock.advance(200)
        return conversation

    first = await a_close_that_fails_for_good("s1")
    (listing,) = await bot.say(ADMIN, "!outbox parked")
    assert listing.startswith("1 parked") and "ConversationEnded" in listing
    assert "Type !outbox retry <id> once the cause is fixed" in listing
    (row,) = await bot.store.outbox.parked()
    assert await bot.say(ADMIN, "!outbox retry 999") == [
        "No parked row #999. Type !outbox parked for the list."
    ]
    bot.gateway.fail_leaves = 0
    assert await bot.say(ADMIN, f"!outbox retry {row.id}") == [
        f"#{row.id} will be tried again now."
    ]
    assert ("leave", first.room_id, first.puppet) in bot.gateway.sent
    assert await bot.store.outbox.parked() == []

    second = await a_close_that_fails_for_good("s2")
    (row,) = await bot.store.outbox.parked()
    assert await bot.say(ADMIN, f"!outbox discard #{row.id}") == [
        f"#{row.id} is discarded; the work after it goes ahead."
    ]
    assert await bot.store.outbox.parked() == []
    assert ("leave", second.room_id, second.puppet) not in bot.gateway.sent
    (usage,) = await bot.say(ADMIN, "!outbox retry")
    assert usage == (
        "!outbox retry takes the number of a parked row. "
        "Usage: !outbox parked | retry <id> | discard <id>"
    )


async def test_a_reply_waits_for_the_homeserver_and_is_sent_once(bot: Bot) -> None:
    bot.gateway.fail_next = TemporarilyUnavailable("down")
    assert await bot.say(ADMIN, "!queue") == []  # not yet: the homeserver is away
    bot.clock.advance(2)
    await bot.core.outbox.drain()
    said = [s[2] for s in bot.gateway.of("notice") if s[1] == DM]
    assert said == ["0 waiting, 0 being offered, 0 in conversation."]


async def test_the_bot_joins_a_chat_it_is_invited_to_and_knows_an_advisors_control_room(
    bot: Bot,
) -> None:
    await bot.core.advisors.add(ANA)
    await bot.core.bot.invited(RoomId("!hers:test"), ANA)
    await bot.core.bot.invited(RoomId("!theirs:test"), "@someone:test")
    await bot.core.outbox.drain()
    assert bot.gateway.of("bot-join") == [
        ("bot-join", "!hers:test"),
        ("bot-join", "!theirs:test"),
    ]
    hello = [s[1] for s in bot.gateway.of("notice") if "I am the Switchboard bot" in s[2]]
    assert hello == ["!hers:test", "!theirs:test"]
    ana = await bot.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.control_room == "!hers:test"
