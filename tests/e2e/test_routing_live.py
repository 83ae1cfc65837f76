"""Routing decisions that depend on live Matrix state and on racing visitors."""

from __future__ import annotations

import asyncio

from harness.visitor import Visitor


async def _until_status_says(advisor, control, bot, words: str, tries: int = 25) -> None:
    """Presence reaches us as a hint beside the timeline, maybe a transaction later than the
    message that asks: ask again until the bot's answer shows it."""
    for _ in range(tries):
        answers = len([1 for s, _, _ in advisor.messages(control) if s == bot])
        await advisor.send_text(control, "!status")
        await advisor.wait_for_message(
            control,
            lambda e, n=answers: e.sender == bot
            and len([1 for s, _, _ in advisor.messages(control) if s == bot]) > n,
        )
        if words in [b for s, b, _ in advisor.messages(control) if s == bot][-1]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the bot never said {words!r}")


async def _with_control_room(desk, advisor):
    """The bot's direct chat: sharing a room is what lets the homeserver push presence to us."""
    await desk.advisors.welcome(advisor.user_id)
    control = await advisor.wait_for_invite()
    await advisor.join(control)
    return control


async def test_an_advisor_whose_presence_is_unavailable_gets_no_new_visitors(desks, people):
    desk = await desks.start()
    ana = await people.advisor(desk, "ana")
    bob = await people.advisor(desk, "bob")
    ana_control = await _with_control_room(desk, ana)
    bob_control = await _with_control_room(desk, bob)

    await ana.set_presence("unavailable")
    await _until_status_says(ana, ana_control, desk.config.bot_mxid, "presence unavailable")
    for _ in range(2):
        visitor = await people.visitor(desk)
        await visitor.start()
    first = await bob.wait_for_invite(lambda r: r != bob_control)
    await bob.wait_for_invite(lambda r: r not in (bob_control, first))
    assert len([r for r in ana.invites if r != ana_control]) == 0

    # back online: the next visitor may go to Ana again
    await ana.set_presence("online")
    await _until_status_says(ana, ana_control, desk.config.bot_mxid, "presence online")
    visitor = await people.visitor(desk)
    await visitor.start()
    await ana.wait_for_invite(lambda r: r != ana_control)


async def test_one_visitor_starting_many_times_at_once_gets_one_room(desks, people):
    desk = await desks.start()
    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    other_tab = Visitor(vera.url, vera.http)
    other_tab.csrf = vera.csrf
    results = await asyncio.gather(
        *(
            tab.post("/api/conversation", {"name": "Vera", "topic": "general", "message": "hi"})
            for tab in [vera, other_tab] * 4
        )
    )
    assert sorted(status for status, _ in results) == [200] * 7 + [201]
    assert len({body["conversation"]["id"] for _, body in results}) == 1
    room = await ana.wait_for_invite()
    await ana.join(room)
    await ana.wait_for_message(room, "hi")
    assert [b for _, b, _ in ana.messages(room)].count("hi") == 1
    assert len([c for c in await desk.store.open_conversations()]) == 1
