"""Admins' !callsign and what the event translator and the homeserver's queries make of call
signs, through the core's ports on the recording fake: assigning to an advisor or a group with
accented keywords, listing, publishing, removing, refusals with what to type instead; an
invite of a call sign's user, a knock, and the alias and user queries."""

from __future__ import annotations

import pytest

from appservice.call_signs import CallSignQueries
from appservice.commands import call_signs as call_sign_commands
from appservice.commands import directory as directory_commands
from appservice.commands import groups as group_commands
from appservice.config import load
from appservice.config.model import EXAMPLE_CONFIG
from appservice.events import MatrixEventHandler
from bridge.model import Presence, RoomId
from bridge.services.directory import DirectoryService
from tests.appservice.test_commands import ADMIN, ANA, Bot, make_bot

KIM = "@kim:elsewhere"


@pytest.fixture
async def bot() -> Bot:
    bot = make_bot()
    core = bot.core
    group_commands.register(bot.registry, core.groups)
    call_sign_commands.register(bot.registry, core.call_signs, bot.gateway)
    directory_commands.register(
        bot.registry, core.space_repair, DirectoryService(bot.store, core.topics, core.call_signs)
    )
    await bot.say(ADMIN, f"!advisor add {ANA}")
    await bot.say(ADMIN, "!group create support")
    await bot.say(ADMIN, "!group create support/billing Facturación")
    return bot


async def test_an_admin_assigns_call_signs_and_lists_them(bot: Bot) -> None:
    (said,) = await bot.say(ADMIN, f"!callsign set billing-es {ANA} facturación pagos")
    assert said.startswith(f"Call sign billing-es now reaches {ANA}: knock on #cs_billing-es")
    assert "@sb_cs_billing-es:test" in said and "!callsign publish billing-es on" in said
    (said,) = await bot.say(ADMIN, "!callsign set billing group support/billing factura")
    assert said.startswith("Call sign billing now reaches group support/billing")
    (said,) = await bot.say(ADMIN, "!callsign set billing-es group support/billing")
    assert said == "Call sign billing-es now reaches group support/billing."
    stored = await bot.store.get_call_sign("billing-es")
    assert stored is not None and stored.keywords == "facturación pagos"  # kept
    (said,) = await bot.say(ADMIN, "!callsign list")
    assert said.splitlines() == [
        "Call signs (● someone behind it is shown to the public now):",
        "○ billing → group support/billing (Facturación) — keywords: factura",
        "○ billing-es → group support/billing (Facturación) — keywords: facturación pagos",
    ]


async def test_keywords_publishing_and_removal(bot: Bot) -> None:
    await bot.say(ADMIN, f"!callsign set help {ANA}")
    (said,) = await bot.say(ADMIN, "!callsign keywords help ayuda  Ayúdame")
    assert said == "Keywords of help: ayuda Ayúdame."
    (said,) = await bot.say(ADMIN, "!callsign publish help on")
    assert said == "Call sign help is listed in the public room directory."
    assert bot.gateway.of("lobby-described")[-1][3] is True
    (said,) = await bot.say(ADMIN, "!callsign remove help")
    assert said.startswith("Call sign help removed")
    assert bot.gateway.of("lobby-closed")
    (said,) = await bot.say(ADMIN, "!callsign remove help")
    assert "There is no call sign 'help'" in said


@pytest.mark.parametrize(
    ("command", "answer"),
    [
        (f"!callsign set Billing_ES {ANA}", "'billing-es'"),
        ("!callsign set x @nobody:test", "is not an advisor; add them first with !advisor add"),
        ("!callsign set x group nowhere", "There is no group nowhere"),
        ("!callsign set x ana", "an advisor (@ana:example.org) or a group"),
        ("!callsign publish x maybe", "Usage: !callsign"),
        ("!callsign", "Usage: !callsign"),
    ],
)
async def test_a_wrong_command_says_what_to_type(bot: Bot, command: str, answer: str) -> None:
    (said,) = await bot.say(ADMIN, command)
    assert answer in said


async def test_only_admins_manage_call_signs_and_advisors_find_them(bot: Bot) -> None:
    (said,) = await bot.say(ANA, f"!callsign set mine {ANA}")
    assert said.startswith("Unknown command !callsign")  # hidden from advisors
    assert await bot.store.get_call_sign("mine") is None
    await bot.say(ADMIN, f"!callsign set billing-es {ANA} facturación")
    await bot.core.advisors.presence_changed(ANA, Presence.ONLINE)
    await bot.say(ANA, "!available")
    (said,) = await bot.say(ANA, "!find FACTURACION")
    assert f"● billing-es → {ANA} (billing-es) — facturación" in said.splitlines()


SECRET = "s" * 32
ENV = {
    "SWITCHBOARD_HOMESERVER__DOMAIN": "test",
    "SWITCHBOARD_APPSERVICE__AS_TOKEN": SECRET,
    "SWITCHBOARD_APPSERVICE__HS_TOKEN": SECRET,
    "SWITCHBOARD_PORTAL__SECRET": SECRET,
}


def handler(bot: Bot) -> MatrixEventHandler:
    return MatrixEventHandler(load(EXAMPLE_CONFIG, env=ENV), bot.core, bot.registry)


def member(room: str, sender: str, target: str, membership: str, direct: bool = True) -> dict:
    return {
        "type": "m.room.member",
        "room_id": room,
        "sender": sender,
        "state_key": target,
        "event_id": f"${room}{target}{membership}",
        "content": {"membership": membership, "displayname": "Kim", "is_direct": direct},
    }


async def test_an_invite_of_a_call_signs_user_or_a_knock_asks_it(bot: Bot) -> None:
    await bot.say(ADMIN, f"!callsign set billing-es {ANA}")
    events = handler(bot)
    await events.handle(member("!dm:elsewhere", KIM, "@sb_cs_billing-es:test", "invite"))
    # not a valid call sign, one that does not exist, or a room that is no direct chat:
    # nothing is asked, no user is made, no row is written
    await events.handle(member("!dm2:elsewhere", KIM, "@sb_cs_Billing:test", "invite"))
    await events.handle(member("!dm3:elsewhere", KIM, "@sb_cs_nobody:test", "invite"))
    await events.handle(
        member("!big:elsewhere", "@mo:elsewhere", "@sb_cs_billing-es:test", "invite", False)
    )
    lobby = (await bot.store.get_call_sign("billing-es")).lobby_id  # type: ignore[union-attr]
    assert lobby is not None
    await events.handle(member(lobby, "@lee:elsewhere", "@lee:elsewhere", "knock"))
    # a knock someone else "sent" for another user is not theirs to make
    await events.handle(member(lobby, "@lee:elsewhere", "@mo:elsewhere", "knock"))
    await bot.core.outbox.drain()
    askers = sorted(c.asker or "" for c in await bot.store.open_conversations())
    assert askers == ["@kim:elsewhere", "@lee:elsewhere"]
    assert [s[1] for s in bot.gateway.of("call-sign-says")] == [RoomId("!dm:elsewhere")]
    assert set(bot.store.call_sign_chats) == {RoomId("!dm:elsewhere")}


class UserMaker:
    def __init__(self) -> None:
        self.made: list[str] = []

    async def call_sign_user_made(self, sign: str, name: str) -> None:
        self.made.append(sign)


async def test_the_homeservers_queries_are_answered_for_call_signs_only(bot: Bot) -> None:
    config = load(EXAMPLE_CONFIG, env=ENV)
    maker = UserMaker()
    queries = CallSignQueries(config, bot.core.call_signs, maker)  # type: ignore[arg-type]
    await bot.say(ADMIN, f"!callsign set billing-es {ANA}")
    assert not await queries.alias_exists("#cs_billing-es:test")  # not ready: no database
    queries.ready()
    assert await queries.alias_exists("#cs_billing-es:test")
    assert not await queries.alias_exists("#cs_nobody:test")
    assert not await queries.alias_exists("#cs_Bad_Sign:test")
    assert not await queries.alias_exists("#sb_conv_1:test")  # a conversation's, not made here
    assert not await queries.alias_exists("#cs_billing-es:elsewhere")
    assert await queries.user_exists("@sb_cs_billing-es:test")
    assert not await queries.user_exists("@sb_cs_nobody:test")
    assert not await queries.user_exists("@sb_visitor_1:test")  # puppets: never on demand
    assert maker.made == ["billing-es"]
