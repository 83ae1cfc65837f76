"""What an advisor does in a real Matrix client reaches the visitor right: an edit updates the
message (marked edited), a reply arrives without its quoted fallback and quotes the message it
answers, a notice arrives like text, a removed message leaves the page and its text the store;
live, after a reconnect and on a fresh page."""

from __future__ import annotations

from typing import Any

from bridge.model import Sender


def advisor_lines(shown: dict[int, dict[str, Any]]) -> list[tuple[str, Any, bool, bool]]:
    """What the page shows of the advisor: (text, quoted seq, edited, removed) in order."""
    return [
        (m["body"], m["reply_to"], bool(m["edited_at"]), bool(m["removed_at"]))
        for _, m in sorted(shown.items())
        if m["sender"] == "advisor"
    ]


async def test_edits_replies_notices_and_removals_reach_the_visitors_page(desks, people):
    desk = await desks.start()
    chat = await people.chatting(desk)
    ana, vera, room = chat.advisor, chat.visitor, chat.room
    question = await ana.wait_for_message(room, "Hello, I was charged twice.")
    asked = chat.started["messages"][0]["seq"]

    typo = await ana.send_text(room, "Let me chekc that.")
    await vera.wait_message("Let me chekc that.")
    await ana.edit(room, typo, "Let me check that.")
    await ana.reply(room, question, "Yes: I see two charges of 12 €.")
    await ana.send_notice(room, "Refund issued (ticket 4711).")
    oops = await ana.send_text(room, "Card on file: 4242 4242 4242 4242")
    await vera.wait_message("Card on file: 4242 4242 4242 4242")
    await ana.redact(room, oops, "wrong customer")

    expected = [
        ("Let me check that.", None, True, False),
        ("Yes: I see two charges of 12 €.", asked, False, False),
        ("Refund issued (ticket 4711).", None, False, False),
        ("", None, False, True),
    ]
    live = await vera.wait_shown(
        lambda shown: advisor_lines(shown) == expected, "the edit, reply, notice and removal"
    )
    assert live[asked]["body"] == "Hello, I was charged twice."  # what the reply quotes

    # a fresh page (a reload) shows the same
    fresh = (await vera.history(since=0))["messages"]
    assert advisor_lines({m["seq"]: m for m in fresh}) == expected
    # a page that had every message before the changes, and reconnects, gets the changes
    since = max(live)
    await vera.disconnect()
    vera.frames.clear()
    await vera.connect(since=since)
    await vera.wait_status("active")
    updates = [f["message"] for f in vera.frames if f["type"] == "update"]
    assert advisor_lines({m["seq"]: m for m in updates}) == [expected[0], expected[3]]
    assert not [f for f in vera.frames if f["type"] == "message"]  # nothing after `since`

    # the transcript keeps the latest text, and that a message was removed (and when), not it
    transcript = await desk.rooms.transcript(chat.conversation_id)
    advisor_said = [
        (m.body, m.removed_at is not None) for m in transcript if m.sender is Sender.ADVISOR
    ]
    assert advisor_said == [(body, removed) for body, _, _, removed in expected]
    assert all("4242" not in m.body for m in transcript)
    # the desk's own notices (the form's answers) never reached the visitor
    assert all("New visitor" not in m["body"] for m in fresh)
