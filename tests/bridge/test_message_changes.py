"""What an advisor does to messages in Matrix reaches the visitor's page and the transcript:
edits, removals and replies, each idempotent (the homeserver delivers at least once)."""

from __future__ import annotations

from bridge.model import AdvisorMxid, ConversationId, EventId, Message, RoomId, Sender
from bridge.outbox import CAUSE, Cause
from bridge.ports import MessageChangedEvent, MessageEvent

A = AdvisorMxid("@ana:hs")
COLLEAGUE = AdvisorMxid("@bob:hs")
FORM = {"name": "Vera", "email": "vera@example.org", "topic": "billing", "message": "Hi!"}


async def chatting(desk) -> tuple[ConversationId, RoomId]:
    await desk.advisor(A)
    conversation, _ = await desk.conversations.start("s1", FORM)
    await desk.conversations.advisor_joined(conversation.room_id, A)
    return conversation.id, conversation.room_id


async def said(desk, room: RoomId, event_id: str, body: str, by: str = A, **kw) -> Message:
    context = await desk.core.rooms.context(room, by)
    message = await desk.core.rooms.advisor_said(
        context, AdvisorMxid(by), EventId(event_id), body, desk.clock.now(), **kw
    )
    assert message is not None
    return message


async def edit(desk, room: RoomId, original: str, body: str, by: str = A, at: float = 0.0):
    context = await desk.core.rooms.context(room, by)
    return await desk.core.rooms.advisor_edited(
        context, AdvisorMxid(by), EventId(original), body, at or desk.clock.now()
    )


def pushed_changes(desk, cid: ConversationId) -> list[tuple[int, str, bool]]:
    return [
        (e.message.seq, e.message.body, e.message.removed_at is not None)
        for e in desk.channel.of(cid, MessageChangedEvent)
    ]


async def test_an_edit_replaces_the_text_on_the_page_and_in_the_transcript_marked_edited(desk):
    cid, room = await chatting(desk)
    original = await said(desk, room, "$hello", "Helo Vera")
    desk.clock.advance(3)

    edited = await edit(desk, room, "$hello", "Hello Vera")

    assert edited is not None and edited.edited_at == desk.clock.now()
    assert pushed_changes(desk, cid) == [(original.seq, "Hello Vera", False)]
    stored = await desk.store.get_message(original.id)
    assert (stored.body, stored.edited_at, stored.seq) == ("Hello Vera", desk.clock.now(), 3)
    # a page reconnecting with what it has gets the change again; a fresh one has it anyway
    assert [m.body for m in await desk.core.visitors.changes(cid, since=3)] == ["Hello Vera"]
    assert await desk.core.visitors.changes(cid, since=0) == []


async def test_an_edit_seen_twice_or_older_than_the_text_shown_changes_nothing(desk):
    cid, room = await chatting(desk)
    await said(desk, room, "$m", "first")
    t0 = desk.clock.now()
    assert await edit(desk, room, "$m", "second", at=t0 + 2) is not None
    assert await edit(desk, room, "$m", "second", at=t0 + 2) is None  # the same edit again
    assert await edit(desk, room, "$m", "stale", at=t0 + 1) is None  # an older one, late
    assert await edit(desk, room, "$m", "third", at=t0 + 3) is not None

    assert (await desk.store.message_by_event(EventId("$m"))).body == "third"
    assert [body for _, body, _ in pushed_changes(desk, cid)] == ["second", "third"]


async def test_only_the_author_may_edit_and_only_an_advisors_message(desk):
    cid, room = await chatting(desk)
    await said(desk, room, "$ana", "mine")
    await desk.advisor(COLLEAGUE)
    visitor_text = (await desk.store.messages(cid))[0]
    assert visitor_text.sender is Sender.VISITOR and visitor_text.event_id

    assert await edit(desk, room, "$ana", "hijacked", by=COLLEAGUE) is None
    assert await edit(desk, room, visitor_text.event_id, "puppet text", by=A) is None
    assert await edit(desk, room, "$unknown", "nothing there") is None  # e.g. a command
    said_so_far = [m.body for m in await desk.store.messages(cid) if m.sender is not Sender.SYSTEM]
    assert said_so_far == ["Hi!", "mine"]
    assert pushed_changes(desk, cid) == []


async def test_a_removed_message_leaves_the_page_and_its_text_the_transcript(desk):
    cid, room = await chatting(desk)
    kept = await said(desk, room, "$kept", "Your order ships today")
    wrong = await said(desk, room, "$wrong", "Card 4242 4242 4242 4242")
    desk.clock.advance(5)

    removed = await desk.core.rooms.message_removed(room, EventId("$wrong"), desk.clock.now())

    assert removed is not None
    stored = await desk.store.get_message(wrong.id)
    assert (stored.body, stored.removed_at, stored.seq) == ("", desk.clock.now(), wrong.seq)
    assert pushed_changes(desk, cid) == [(wrong.seq, "", True)]
    assert await desk.store.get_message(kept.id) == kept
    # twice (a replay), or an edit after it: nothing more
    assert await desk.core.rooms.message_removed(room, EventId("$wrong"), 9e9) is None
    assert await edit(desk, room, "$wrong", "Card 4242 again", at=9e9) is None
    assert (await desk.store.get_message(wrong.id)).body == ""
    assert len(pushed_changes(desk, cid)) == 1


async def test_a_removal_in_another_room_or_of_an_unknown_event_changes_nothing(desk):
    cid, room = await chatting(desk)
    await said(desk, room, "$m", "hello")
    assert await desk.core.rooms.message_removed(RoomId("!elsewhere:hs"), EventId("$m"), 1) is None
    assert await desk.core.rooms.message_removed(room, EventId("$bot-notice"), 1) is None
    assert (await desk.store.message_by_event(EventId("$m"))).body == "hello"


async def test_after_the_end_an_edit_changes_nothing_but_a_removal_still_erases(desk):
    cid, room = await chatting(desk)
    await said(desk, room, "$a", "typo")
    await said(desk, room, "$b", "a secret")
    await desk.conversations.visitor_end("s1")

    assert await edit(desk, room, "$a", "fixed") is None
    assert await desk.core.rooms.message_removed(room, EventId("$b"), desk.clock.now())
    bodies = {m.event_id: m.body for m in await desk.store.messages(cid)}
    assert (bodies[EventId("$a")], bodies[EventId("$b")]) == ("typo", "")


async def test_a_reply_quotes_the_message_it_answers_and_a_reply_to_anything_else_does_not(
    desk,
):
    cid, room = await chatting(desk)
    question = (await desk.store.messages(cid))[0]  # the visitor's "Hi!", relayed
    answer = await said(desk, room, "$r1", "Hello!", reply_to=question.event_id)
    other = await said(desk, room, "$r2", "See above", reply_to=EventId("$the-bots-notice"))

    assert answer.reply_to == question.seq and answer.body == "Hello!"
    assert other.reply_to is None
    pushed = [e.message for e in desk.channel.of(cid, MessageEvent)]
    assert [(m.body, m.reply_to) for m in pushed][-2:] == [("Hello!", 1), ("See above", None)]


async def test_an_edit_commits_with_the_mark_of_the_matrix_event_that_caused_it(desk):
    cid, room = await chatting(desk)
    await said(desk, room, "$m", "first")
    cause = Cause("$edit-event")
    token = CAUSE.set(cause)
    try:
        await edit(desk, room, "$m", "second")
    finally:
        CAUSE.reset(token)
    assert cause.recorded and "$edit-event" in desk.store.handled_events


REMOTE = AdvisorMxid("@rita:elsewhere")


async def test_an_advisor_from_another_server_gets_the_forms_answers_again_once_joined(desk):
    # their server gets the room's state with the join, not its timeline: the form's answers
    # and the visitor's first words would be out of sight until they scroll back
    await desk.advisor(REMOTE)
    conversation, _ = await desk.conversations.start("s1", FORM)
    room = conversation.room_id
    notices = len(desk.gateway.of("notice"))

    await desk.conversations.advisor_joined(room, REMOTE)

    (brief,) = desk.gateway.of("notice")[notices:]
    assert brief[1] == room
    for line in ("New visitor: Vera", "Email: vera@example.org", "Topic: Billing", "Message: Hi!"):
        assert line in brief[2]
    # a local advisor's client shows the room's recent history with the join: nothing again
    await desk.conversations.visitor_end("s1")
    await desk.advisor(A)
    again, _ = await desk.conversations.start("s1", FORM)
    notices = len(desk.gateway.of("notice"))
    await desk.conversations.advisor_joined(again.room_id, A)
    assert desk.gateway.of("notice")[notices:] == []


async def test_the_answers_are_posted_again_when_the_advisor_takes_the_chat_again(desk):
    await desk.advisor(REMOTE)
    conversation, _ = await desk.conversations.start("s1", FORM)
    room = conversation.room_id
    await desk.conversations.advisor_joined(room, REMOTE)
    await desk.conversations.advisor_left(room, REMOTE)  # handed back...
    await desk.conversations.advisor_joined(room, REMOTE)  # ...and taken again
    briefs = [n for n in desk.gateway.of("notice") if "Message: Hi!" in n[2]]
    assert len(briefs) == 2
