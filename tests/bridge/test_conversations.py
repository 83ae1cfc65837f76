"""Conversation rules: one per visitor, messages once each, history, ending."""

from __future__ import annotations

from typing import Callable

import pytest

from bridge.errors import InvalidInput, NoOpenConversation
from bridge.model import AdvisorMxid, ConversationStatus, EventId, Sender
from bridge.ports import MessageEvent, ReadEvent, StatusEvent, TypingEvent

A = AdvisorMxid("@ana:hs")
FORM = {"name": "Vera", "email": "vera@example.org", "topic": "billing", "message": "Hi!"}


async def test_start_answers_before_the_room_exists(desk):
    # the page shows "connecting you" meanwhile; the room is made from the outbox
    conversation, created = await desk.core.visitors.start("s1", FORM)
    assert created and conversation.room_id is None and not desk.gateway.sent
    assert desk.store.outbox.kinds() == [
        "ConversationOpened",
        "VisitorEntered",
        "VisitorSaid",
        "QueueChanged",
    ]
    await desk.settle()
    assert (await desk.conv(conversation.id)).room_id


async def test_start_creates_puppet_room_posts_form_and_first_message(desk):
    conversation, created = await desk.conversations.start("s1", FORM)
    assert created and conversation.room_id
    kinds = [s[0] for s in desk.gateway.sent]
    assert kinds == ["puppet", "room", "join", "notice", "text"]
    assert desk.gateway.of("puppet")[0][2] == "Vera (visitor)"
    notice = desk.gateway.of("notice")[0][2]
    assert "Vera" in notice and "vera@example.org" in notice and "Billing" in notice
    assert desk.gateway.of("text")[0][2] == "Hi!"


async def test_the_advisor_is_invited_as_soon_as_the_room_exists(desk):
    # the homeserver is what a burst of visitors waits for: nothing else goes before the invite
    await desk.advisor(A)
    conversation, _ = await desk.conversations.start("s1", FORM)
    kinds = [s[0] for s in desk.gateway.sent]
    assert kinds == ["puppet", "room", "invite", "join", "notice", "text"]
    assert desk.gateway.of("invite") == [("invite", conversation.room_id, A)]


async def test_starting_twice_opens_one_conversation(desk):
    first, created1 = await desk.conversations.start("s1", FORM)
    again, created2 = await desk.conversations.start("s1", FORM)
    assert (first.id, created1, created2) == (again.id, True, False)
    assert desk.gateway.rooms == 1


async def test_concurrent_starts_of_one_visitor_open_one_room(desk):
    import asyncio

    results = await asyncio.gather(*(desk.conversations.start("s1", FORM) for _ in range(5)))
    assert len({c.id for c, _ in results}) == 1
    assert desk.gateway.rooms == 1


@pytest.mark.parametrize(
    "form, field",
    [
        ({**FORM, "name": "  "}, "name"),
        ({**FORM, "name": ["x"]}, "name"),
        ({**FORM, "email": "not-an-email"}, "email"),
        ({**FORM, "topic": "nope"}, "topic"),
        ({**FORM, "message": "x" * 4001}, "message"),
        ({**FORM, "message": None}, "message"),
    ],
)
async def test_bad_forms_are_refused_with_the_field_and_store_nothing(desk, form, field):
    with pytest.raises(InvalidInput) as info:
        await desk.conversations.start("s1", form)
    assert info.value.field == field
    assert not desk.store.conversations and not desk.gateway.sent


async def test_a_homeserver_failure_keeps_the_visitor_queued_and_a_retry_repairs(desk):
    desk.gateway.fail_next = ConnectionError("homeserver down")
    conversation, _ = await desk.conversations.start("s1", FORM)
    assert conversation.room_id is None and conversation.status is ConversationStatus.WAITING
    assert not desk.store.outbox.kinds("parked")  # an outage is not a failure
    desk.clock.advance(2)  # the retry after a transient error is at most ~2 s away
    await desk.settle()
    repaired = await desk.conv(conversation.id)
    assert repaired.room_id
    assert all(m.event_id for m in await desk.store.messages(conversation.id))
    assert [s[2] for s in desk.gateway.of("text")] == ["Hi!"]


async def test_a_waiting_visitor_learns_their_place_with_or_without_a_room(desk):
    first, _ = await desk.conversations.start("s1", FORM)
    desk.clock.advance(1)  # arrivals one second apart, so queue order is defined
    desk.gateway.fail_next = ConnectionError("homeserver down")
    second, _ = await desk.conversations.start("s2", FORM)
    assert first.room_id and second.room_id is None

    def places(conversation_id):
        return [
            e.conversation.queue_position for e in desk.channel.of(conversation_id, StatusEvent)
        ]

    assert places(first.id)[-1] == 1 and places(second.id)[-1] == 2


async def test_visitor_messages_are_stored_once_per_client_id_and_relayed_once(desk):
    await desk.conversations.start("s1", FORM)
    m1 = await desk.conversations.visitor_message("s1", "c-1", "  second\r\nline ")
    again = await desk.conversations.visitor_message("s1", "c-1", "second\nline")
    assert m1.id == again.id and m1.body == "second\nline" and m1.seq == 2
    assert [s[2] for s in desk.gateway.of("text")] == ["Hi!", "second\nline"]


@pytest.mark.parametrize("client_id", [None, "", "x" * 65, 7, "prechat-form"])
async def test_a_message_needs_its_own_client_id_and_nothing_is_stored_without_one(
    desk, client_id
):
    conversation, _ = await desk.conversations.start("s1", FORM)
    with pytest.raises(InvalidInput) as refused:
        await desk.conversations.visitor_message("s1", client_id, "hello")
    assert refused.value.field == "client_id"
    assert [m.body for m in await desk.store.messages(conversation.id)] == ["Hi!"]


async def test_advisor_messages_are_idempotent_by_event_id_and_reach_the_visitor(desk):
    conversation, _ = await desk.conversations.start("s1", FORM)
    room = conversation.room_id
    for _ in range(2):
        await desk.conversations.advisor_message(room, A, "Ana", EventId("$e1"), "Hello Vera", 5.0)
    history = await desk.conversations.history(conversation.id)
    assert [(m.sender, m.body) for m in history] == [
        (Sender.VISITOR, "Hi!"),
        (Sender.ADVISOR, "Hello Vera"),
    ]
    pushed = desk.channel.of(conversation.id, MessageEvent)
    assert [e.message.body for e in pushed] == ["Hello Vera"]
    assert [m.seq for m in await desk.conversations.history(conversation.id, since=1)] == [2]


async def test_typing_and_read_receipts_reach_the_visitor(desk):
    await desk.advisor(A)
    conversation, _ = await desk.conversations.start("s1", FORM)
    room = conversation.room_id
    await desk.conversations.advisor_joined(room, A)
    await desk.conversations.advisor_typing(room, [A])
    await desk.conversations.advisor_typing(room, [])
    assert [e.typing for e in desk.channel.of(conversation.id, TypingEvent)] == [True, False]
    first = (await desk.conversations.history(conversation.id))[0]
    await desk.conversations.advisor_read(room, A, first.event_id)
    assert desk.channel.of(conversation.id, ReadEvent)[-1].up_to == first.seq
    assert (await desk.conv(conversation.id)).read_up_to == first.seq
    await desk.conversations.visitor_typing("s1", True)
    assert desk.gateway.of("typing")[-1][2] is True


async def test_ending_tells_the_visitor_leaves_the_room_and_keeps_the_transcript(desk):
    await desk.advisor(A)
    conversation, _ = await desk.conversations.start("s1", FORM)
    await desk.conversations.advisor_joined(conversation.room_id, A)
    await desk.conversations.advisor_message(
        conversation.room_id, A, "Ana", EventId("$1"), "Hi", 1
    )
    ended = await desk.conversations.visitor_end("s1")
    assert ended.status is ConversationStatus.ENDED and ended.ended_by is Sender.VISITOR
    assert desk.gateway.of("leave")
    assert desk.channel.of(conversation.id, StatusEvent)[-1].conversation.status == "ended"
    transcript = await desk.conversations.transcript(conversation.id)
    assert [m.sender for m in transcript] == [
        Sender.VISITOR,
        Sender.SYSTEM,
        Sender.ADVISOR,
        Sender.SYSTEM,
    ]
    assert transcript[-1].body == "The visitor ended the chat."
    with pytest.raises(NoOpenConversation):
        await desk.conversations.visitor_message("s1", "c2", "still there?")
    # a new chat after the end is a new conversation for the same visitor
    again, created = await desk.conversations.start("s1", FORM)
    assert created and again.id != conversation.id and again.visitor_id == conversation.visitor_id


async def test_the_advisor_closing_ends_the_chat(desk):
    await desk.advisor(A)
    conversation, _ = await desk.conversations.start("s1", FORM)
    await desk.conversations.advisor_joined(conversation.room_id, A)
    ended = await desk.conversations.advisor_close(conversation.room_id, A, "Ana")
    assert ended.ended_by is Sender.ADVISOR
    assert (await desk.conversations.transcript(conversation.id))[-1].body == "Ana ended the chat."


async def test_the_start_limit_is_asked_only_when_a_conversation_would_be_created(desk):
    from bridge.errors import RateLimited

    asked: list[str] = []

    def admit(wait: float) -> Callable[[], float]:
        def ask() -> float:
            asked.append("asked")
            return wait

        return ask

    await desk.conversations.start("s1", FORM, admit=admit(0.0))
    await desk.conversations.start("s1", FORM, admit=admit(30.0))  # a retry: not asked
    assert asked == ["asked"]
    with pytest.raises(RateLimited) as refused:
        await desk.conversations.start("s2", FORM, admit=admit(30.0))
    assert refused.value.retry_after == 30.0
    assert len(desk.store.conversations) == 1 and desk.gateway.rooms == 1


async def test_a_message_over_the_limit_is_not_stored_and_a_retry_of_a_stored_one_is_free(
    desk,
):
    from bridge.errors import RateLimited

    asked: list[float] = []

    def admit(wait: float) -> Callable[[], float]:
        def ask() -> float:
            asked.append(wait)
            return wait

        return ask

    conversation, _ = await desk.conversations.start("s1", FORM)
    stored = await desk.conversations.visitor_message("s1", "m1", "first", admit=admit(0.0))
    with pytest.raises(RateLimited) as refused:
        await desk.conversations.visitor_message("s1", "m2", "second", admit=admit(4.5))
    assert refused.value.retry_after == 4.5
    # the page lost the answer to m1 and sends it again while the limit holds: it is answered
    again = await desk.conversations.visitor_message("s1", "m1", "first", admit=admit(4.5))
    assert again.id == stored.id and asked == [0.0, 4.5]
    bodies = [m.body for m in await desk.store.messages(conversation.id)]
    assert bodies == [FORM["message"], "first"]


async def test_a_send_that_landed_but_lost_its_answer_is_not_sent_again(desk):
    conversation, _ = await desk.conversations.start("s1", FORM)
    desk.gateway.lose_answer_next = True
    # stored: the page is answered; the send lands but its answer is lost
    await desk.conversations.visitor_message("s1", "c-1", "only once please")
    # the page retries too; the homeserver (restarted) no longer knows the txn id: look first
    await desk.conversations.visitor_message("s1", "c-1", "only once please")
    desk.clock.advance(2)
    await desk.settle()
    assert [s[2] for s in desk.gateway.of("text")].count("only once please") == 1
    assert all(
        m.event_id
        for m in await desk.store.messages(conversation.id)
        if m.sender is Sender.VISITOR
    )
