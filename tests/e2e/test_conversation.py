"""The whole story on a real Synapse: a visitor on the portal, an advisor in a Matrix client."""

from __future__ import annotations

from bridge.model import ConversationStatus, Sender
from harness.visitor import Visitor


async def test_visitor_and_advisor_chat_both_ways_until_the_advisor_closes(desks, people):
    desk = await desks.start()
    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    started = await vera.start()
    assert started["messages"][0]["body"] == "Hello, I was charged twice."
    await vera.connect()

    room = await ana.wait_for_invite()
    await ana.join(room)
    intro = await ana.wait_for_message(room, "New visitor: Vera Visitor")
    assert "vera@example.org" in intro.body and "Billing" in intro.body
    first = await ana.wait_for_message(room, "Hello, I was charged twice.")
    puppet = first.sender
    assert puppet.startswith("@sb_visitor_")
    assert ana.client.rooms[room].user_name(puppet) == "Vera Visitor (visitor)"
    await vera.wait_status("active", advisor_name="Ana")

    # advisor → visitor, with typing first: pushed once (saying it again while typing sends
    # nothing new), which is why the desk fixture waits until the homeserver pushes to the
    # desk (while it counts the desk as down, it drops typing notices)
    await ana.set_typing(room, True)
    typing = await vera.wait_for(
        lambda f: f.get("type") == "typing" and f["typing"], what="Ana typing"
    )
    assert typing["name"] == "Ana"
    await ana.send_text(room, "Hi Vera, let me check.")
    reply = await vera.wait_message("Hi Vera, let me check.")
    assert reply["sender"] == "advisor" and reply["author"] == "Ana"
    # the visitor has seen it: Ana's client shows the puppet's read receipt
    status, _ = await vera.post("/api/conversation/read", {"up_to": reply["seq"]})
    assert status == 204
    await ana.wait_for_receipt(room, puppet)

    # visitor → advisor, with typing first
    status, _ = await vera.post("/api/conversation/typing", {"typing": True})
    assert status == 204
    await ana.wait_for_typing(room, puppet, True)
    sent = await vera.say("Thanks! Order 1234.")
    event = await ana.wait_for_message(room, "Thanks! Order 1234.")
    assert event.sender == puppet

    # the advisor reads it: the visitor sees "read"
    await ana.send_read_receipt(room, event.event_id)
    read = await vera.wait_for(lambda f: f.get("type") == "read" and f["up_to"] >= sent["seq"])
    assert read["up_to"] == sent["seq"]

    # !close in the room ends it: the visitor is told and the puppet leaves
    await ana.send_text(room, "!close")
    await vera.wait_status("ended")
    await ana.wait_for_member(room, puppet, "leave")
    assert all(m["body"] != "!close" for m in vera.messages())

    conversation = await desk.store.get_conversation(started["conversation"]["id"])
    assert conversation.status is ConversationStatus.ENDED
    assert conversation.ended_by is Sender.ADVISOR
    transcript = await desk.rooms.transcript(conversation.id)
    assert [(m.sender, m.body) for m in transcript] == [
        (Sender.VISITOR, "Hello, I was charged twice."),
        (Sender.SYSTEM, "Ana joined the chat."),
        (Sender.ADVISOR, "Hi Vera, let me check."),
        (Sender.VISITOR, "Thanks! Order 1234."),
        (Sender.SYSTEM, "Ana ended the chat."),
    ]
    assert [m.seq for m in transcript] == [1, 2, 3, 4, 5]
    assert all(a.ts <= b.ts for a, b in zip(transcript, transcript[1:], strict=False))


async def test_visitor_pressing_end_tells_the_advisor_and_the_puppet_leaves(desks, people):
    desk = await desks.start()
    chat = await people.chatting(desk)
    ana, vera, room = chat.advisor, chat.visitor, chat.room
    first = await ana.wait_for_message(room, "Hello, I was charged twice.")
    status, body = await vera.post("/api/conversation/end", {})
    assert status == 200 and body["conversation"]["status"] == "ended"
    await ana.wait_for_message(room, "The visitor ended the chat.")
    await ana.wait_for_member(room, first.sender, "leave")
    # ending twice is harmless; the history is still there after the end
    status, _ = await vera.post("/api/conversation/end", {})
    assert status == 200
    history = await vera.history()
    assert history["conversation"]["status"] == "ended"
    assert history["messages"][-1]["body"] == "The visitor ended the chat."


async def test_second_visitor_waits_and_sees_position_until_an_advisor_is_free(desks, people):
    desk = await desks.start(capacity=1)
    ana = await people.advisor(desk, "ana")
    first, second, third = [await people.visitor(desk) for _ in range(3)]
    await first.start(name="First")
    await second.start(name="Second")
    await third.start(name="Third")
    await second.connect()
    await third.connect()
    await second.wait_status("waiting", queue_position=1)
    await third.wait_status("waiting", queue_position=2)

    room = await ana.wait_for_invite()
    await ana.join(room)
    await ana.send_text(room, "!close")
    # the first visitor's chat ended: the second is offered to Ana, the third moves up
    await third.wait_status("waiting", queue_position=1)
    await second.wait_status("inviting")
    second_room = await ana.wait_for_invite(lambda r: r != room)
    await ana.join(second_room)
    await second.wait_status("active", advisor_name="Ana")


async def test_an_advisor_who_does_not_accept_in_time_is_skipped(desks, people):
    desk = await desks.start(invite_timeout=1.5)
    ana = await people.advisor(desk, "ana")
    bob = await people.advisor(desk, "bob")
    vera = await people.visitor(desk)
    started = await vera.start()
    conversation = await desk.store.get_conversation(started["conversation"]["id"])
    first_choice = ana if conversation.advisor == ana.user_id else bob
    second_choice = bob if first_choice is ana else ana
    room = await first_choice.wait_for_invite()
    # nobody answers: after the timeout the invite is withdrawn and the other advisor asked
    await first_choice.wait_for_member(room, first_choice.user_id, "leave")
    assert await second_choice.wait_for_invite() == room
    await second_choice.join(room)
    await vera.connect()
    await vera.wait_status("active")
    latest = await desk.store.get_conversation(conversation.id)
    assert latest.advisor == second_choice.user_id


async def test_reconnecting_visitor_gets_everything_once_in_order(desks, people):
    desk = await desks.start()
    chat = await people.chatting(desk)
    ana, vera, room = chat.advisor, chat.visitor, chat.room
    await ana.send_text(room, "before the cut")
    seen = await vera.wait_message("before the cut")
    await vera.disconnect()

    # another tab of the same visitor stays connected: it tells us when things are stored
    other_tab = Visitor(vera.url, vera.http)
    await other_tab.connect(since=seen["seq"])

    # while the first page is away: the advisor writes, and the visitor's retried POST repeats
    for i in range(3):
        await ana.send_text(room, f"while away {i}")
    await other_tab.wait_message("while away 2")
    again = await vera.say("are you there?", client_id="retry-1")
    same = await vera.say("are you there?", client_id="retry-1")
    assert again["seq"] == same["seq"]
    await other_tab.disconnect()

    # a reload: a new page (same cookie) reconnects from the last seq it had
    vera.frames.clear()
    await vera.connect(since=seen["seq"])
    await vera.wait_message("are you there?")
    bodies = [m["body"] for m in vera.messages()]
    assert bodies == ["while away 0", "while away 1", "while away 2", "are you there?"]
    seqs = [m["seq"] for m in vera.messages()]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)

    full = await vera.history()
    all_bodies = [m["body"] for m in full["messages"]]
    assert all_bodies.count("are you there?") == 1 and all_bodies.count("while away 0") == 1
    # the room got it once too: a later message proves nothing else was still on its way
    await vera.say("marker")
    await ana.wait_for_message(room, "marker")
    assert [b for _, b, _ in ana.messages(room)].count("are you there?") == 1
