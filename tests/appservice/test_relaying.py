"""Matrix events as the homeserver pushes them, through the appservice's translator into the
core (on the in-memory fakes): what an advisor's client sends reaches the visitor right, what
the desk itself says in the room never echoes back to the visitor, and the advisor's presence
is known from their first join on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from appservice.commands import CommandRegistry
from appservice.commands import desk as desk_commands
from appservice.config import Config, generate
from appservice.content import read_message, strip_reply_fallback
from appservice.events import MatrixEventHandler
from bridge.desk import Desk
from bridge.model import (
    AdvisorMxid,
    ConversationId,
    EventId,
    Message,
    Presence,
    RoomId,
    Sender,
)
from bridge.ports import MessageChangedEvent, MessageEvent
from tests.bridge.conftest import make_desk
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel, MemoryStore

ANA = "@ana:test"
FORM = {"name": "Vera", "topic": "general", "message": "Is my order late?"}


@dataclass
class Room:
    core: Desk
    store: MemoryStore
    channel: FakeVisitorChannel
    gateway: FakeMatrixGateway
    events: MatrixEventHandler
    config: Config
    conversation_id: ConversationId
    room_id: RoomId
    clock: FakeClock
    n: int = 0

    async def push(self, kind: str, content: dict[str, Any], sender: str = ANA, **top: Any) -> str:
        """The homeserver pushes an event of ``sender`` in the conversation's room."""
        self.n += 1
        event_id = f"$ev{self.n}"
        await self.events.handle(
            {
                "type": kind,
                "room_id": self.room_id,
                "sender": sender,
                "event_id": event_id,
                "origin_server_ts": int((self.clock.now() + self.n) * 1000),
                "content": content,
                **top,
            }
        )
        await self.core.outbox.drain()
        return event_id

    async def text(self, body: str, msgtype: str = "m.text", **content: Any) -> str:
        return await self.push("m.room.message", {"msgtype": msgtype, "body": body, **content})

    def page(self) -> list[Message]:
        """The messages pushed to the visitor's page (new ones and changes), in order."""
        return [
            e.message
            for e in self.channel.of(self.conversation_id, (MessageEvent, MessageChangedEvent))
        ]

    async def transcript(self) -> list[tuple[Sender, str]]:
        return [(m.sender, m.body) for m in await self.store.messages(self.conversation_id)]


@pytest.fixture
async def room(tmp_path: Path) -> Room:
    config = generate(
        tmp_path / "config.yaml", tmp_path / "registration.yaml", {"homeserver.domain": "test"}
    )
    desk = make_desk()
    core, store, channel, gateway, clock = (
        desk.core,
        desk.store,
        desk.channel,
        desk.gateway,
        desk.clock,
    )
    commands = CommandRegistry()
    desk_commands.register(commands, core, default_capacity=3)
    await core.advisors.add(ANA, "Ana", welcome=False)
    await core.advisors.set_available(ANA, True)
    conversation, _ = await core.visitors.start("s1", FORM)
    await core.outbox.drain()
    stored = await store.get_conversation(conversation.id)
    assert stored is not None and stored.room_id is not None
    events = MatrixEventHandler(config, core, commands)
    found = Room(
        core, store, channel, gateway, events, config, conversation.id, stored.room_id, clock
    )
    await found.push("m.room.member", {"membership": "join"}, state_key=ANA)
    channel.events.clear()
    return found


async def test_an_advisors_notice_reaches_the_visitor_like_text(room: Room) -> None:
    await room.text("Our office is closed on Monday.", msgtype="m.notice")
    assert [(m.sender, m.author, m.body) for m in room.page()] == [
        (Sender.ADVISOR, "Ana", "Our office is closed on Monday.")
    ]


async def test_the_desks_own_notices_and_the_visitors_puppet_never_echo_to_the_page(
    room: Room,
) -> None:
    bot, puppet = room.config.bot_mxid, room.config.puppet_mxid("x")
    await room.push("m.room.message", {"msgtype": "m.notice", "body": "New visitor"}, sender=bot)
    await room.push("m.room.message", {"msgtype": "m.text", "body": "Hi"}, sender=puppet)
    await room.push(
        "m.room.message",
        {
            "msgtype": "m.notice",
            "body": "* fixed",
            "m.new_content": {"msgtype": "m.notice", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$ev1"},
        },
        sender=bot,
    )
    assert room.page() == []


async def test_an_edit_replaces_the_text_shown_and_is_marked_edited(room: Room) -> None:
    original = await room.text("Your refund is on it's way")
    await room.push(
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": " * Your refund is on its way",
            "m.new_content": {"msgtype": "m.text", "body": "Your refund is on its way"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    first, change = room.page()
    assert (first.body, change.seq, change.body) == (
        "Your refund is on it's way",
        first.seq,
        "Your refund is on its way",
    )
    assert change.edited_at is not None
    assert (Sender.ADVISOR, "Your refund is on its way") in await room.transcript()


async def test_an_edited_emote_keeps_the_advisors_name(room: Room) -> None:
    original = await room.text("waves", msgtype="m.emote")
    await room.push(
        "m.room.message",
        {
            "msgtype": "m.emote",
            "body": "* waves hello",
            "m.new_content": {"msgtype": "m.emote", "body": "waves hello"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    assert [m.body for m in room.page()] == ["* Ana waves", "* Ana waves hello"]


async def test_a_reply_arrives_without_its_fallback_and_quotes_the_message_it_answers(
    room: Room,
) -> None:
    question = (await room.store.messages(room.conversation_id))[0]
    assert question.body == "Is my order late?" and question.event_id
    puppet = room.gateway.of("puppet")[0][1]
    await room.text(
        f"> <{puppet}> Is my order late?\n\nNo, it ships today.",
        format="org.matrix.custom.html",
        formatted_body=(
            f'<mx-reply><blockquote><a href="https://matrix.to/#/{puppet}">{puppet}</a><br>'
            "Is my order late?</blockquote></mx-reply>No, it ships today."
        ),
        **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}},
    )
    (reply,) = room.page()
    assert (reply.body, reply.reply_to) == ("No, it ships today.", question.seq)


async def test_a_reply_from_a_client_without_fallbacks_keeps_the_advisors_own_quote(
    room: Room,
) -> None:
    question = (await room.store.messages(room.conversation_id))[0]
    await room.text(
        "> Is my order late?\nIt is not.",
        format="org.matrix.custom.html",
        formatted_body="<blockquote>Is my order late?</blockquote>It is not.",
        **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}},
    )
    (reply,) = room.page()
    assert (reply.body, reply.reply_to) == ("> Is my order late?\nIt is not.", question.seq)


async def test_a_command_sent_as_a_reply_is_still_a_command(room: Room) -> None:
    question = (await room.store.messages(room.conversation_id))[0]
    await room.text(
        "> <@sb_visitor:test> Is my order late?\n\n!close",
        **{"m.relates_to": {"m.in_reply_to": {"event_id": question.event_id}}},
    )
    conversation = await room.store.get_conversation(room.conversation_id)
    assert conversation is not None and not conversation.status.is_open
    assert all(m.body != "!close" for m in room.page())


@pytest.mark.parametrize("where", ["content", "top level"])
async def test_a_redaction_removes_the_message_from_the_page_and_its_text_from_the_store(
    room: Room, where: str
) -> None:
    gone = await room.text("Sorry, wrong customer: Mr Smith's order")
    if where == "content":  # rooms v11 and later
        await room.push("m.room.redaction", {"redacts": gone})
    else:
        await room.push("m.room.redaction", {}, redacts=gone)
    new, change = room.page()
    assert (change.seq, change.body) == (new.seq, "") and change.removed_at is not None
    stored = await room.store.message_by_event(EventId(gone))
    assert stored is not None and (stored.body, stored.removed_at) == ("", change.removed_at)


async def test_malformed_edits_replies_and_redactions_are_ignored(room: Room) -> None:
    before = await room.transcript()
    for content in (
        {"msgtype": "m.text", "body": "*x", "m.relates_to": {"rel_type": "m.replace"}},
        {
            "msgtype": "m.text",
            "body": "*x",
            "m.new_content": "x",
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$ev1"},
        },
        {
            "msgtype": "m.text",
            "body": "> <@a:b> only a fallback\n\n",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$ev1"}},
        },
    ):
        await room.push("m.room.message", content)
    await room.push("m.room.redaction", {"redacts": 7})
    await room.push("m.room.redaction", {})
    assert await room.transcript() == before and room.page() == []


def test_reply_fallbacks_are_stripped_and_only_they() -> None:
    assert strip_reply_fallback("> <@a:b> one\n> two\n\nanswer\n> kept") == "answer\n> kept"
    said = read_message(
        {
            "msgtype": "m.text",
            "body": "> * <@a:b> waves\n\nhi",
            "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
        }
    )
    assert said is not None and (said.body, said.reply_to) == ("hi", "$q")
    plain = read_message({"msgtype": "m.text", "body": "> <not a reply>"})
    assert plain is not None and plain.body == "> <not a reply>"
    thread = read_message(
        {
            "msgtype": "m.text",
            "body": "in a thread",
            "m.relates_to": {
                "rel_type": "m.thread",
                "event_id": "$root",
                "is_falling_back": True,
                "m.in_reply_to": {"event_id": "$last"},
            },
        }
    )
    assert thread is not None and thread.reply_to is None


async def test_an_advisor_online_before_sharing_a_room_is_known_online_once_they_join(
    room: Room,
) -> None:
    # online all along, but the homeserver would not say so before they shared a room with
    # the bot, and pushes only changes: asked once, at the join
    ana = await room.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.presence is Presence.UNKNOWN
    room.gateway.presences[AdvisorMxid(ANA)] = Presence.ONLINE
    await room.push("m.room.member", {"membership": "join"}, state_key=ANA)
    ana = await room.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.presence is Presence.ONLINE

    # from then on, what the homeserver pushes; no more questions
    asked = len(room.gateway.presence_asked)
    await room.events.handle_ephemeral(
        {"type": "m.presence", "sender": ANA, "content": {"presence": "unavailable"}}
    )
    await room.push("m.room.member", {"membership": "join"}, state_key=ANA)
    ana = await room.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.presence is Presence.UNAVAILABLE
    assert len(room.gateway.presence_asked) == asked


async def test_a_push_that_beats_the_answer_to_our_question_wins(room: Room) -> None:
    room.gateway.presences[AdvisorMxid(ANA)] = Presence.ONLINE  # what the question will read
    real = room.gateway.presence

    async def slow_answer(user: AdvisorMxid) -> Presence:
        answer = await real(user)
        # meanwhile the advisor went away and the homeserver pushed it
        await room.core.advisors.presence_changed(ANA, Presence.OFFLINE)
        return answer

    room.gateway.presence = slow_answer  # type: ignore[method-assign]
    await room.push("m.room.member", {"membership": "join"}, state_key=ANA)
    ana = await room.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.presence is Presence.OFFLINE


async def test_after_the_homeserver_was_away_every_advisor_is_asked_once_again(
    room: Room,
) -> None:
    # Ana went offline while the homeserver was away: that change is never pushed again
    await room.core.advisors.presence_changed(ANA, Presence.ONLINE)
    room.gateway.presences[AdvisorMxid(ANA)] = Presence.OFFLINE
    await room.core.advisors.presence_may_be_stale()  # a catch-up read the rooms back
    await room.core.outbox.drain()
    ana = await room.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.presence is Presence.OFFLINE

    # a push that comes between the question being raised and asked wins over the answer
    room.gateway.presences[AdvisorMxid(ANA)] = Presence.OFFLINE
    await room.core.advisors.presence_may_be_stale()
    await room.core.advisors.presence_changed(ANA, Presence.ONLINE)  # pushed meanwhile
    await room.core.outbox.drain()
    ana = await room.store.get_advisor(AdvisorMxid(ANA))
    assert ana is not None and ana.presence is Presence.ONLINE
