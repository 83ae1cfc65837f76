"""The routing queue's rules, through the services, with a fake clock and no I/O."""

from __future__ import annotations

from collections import Counter

import pytest

from bridge.desk import DeskSettings, build_desk
from bridge.model import Advisor, AdvisorMxid, ConversationStatus, Presence
from bridge.ports import StatusEvent
from bridge.routing import pick_advisor

from .conftest import TOPICS

A, B, C = AdvisorMxid("@ana:hs"), AdvisorMxid("@bob:hs"), AdvisorMxid("@cid:hs")


def adv(mxid, **kw):
    return Advisor(mxid=mxid, available=kw.pop("available", True), **kw)


def test_round_robin_continues_after_the_last_assigned_advisor():
    ring = [adv(A), adv(B), adv(C)]
    load: Counter = Counter()
    assert pick_advisor(ring, load, None, default_capacity=3) == A
    assert pick_advisor(ring, load, A, default_capacity=3) == B
    assert pick_advisor(ring, load, C, default_capacity=3) == A
    # the cursor survives its advisor leaving the ring
    assert pick_advisor([adv(A), adv(C)], load, B, default_capacity=3) == C


def test_pick_passes_over_full_away_offline_and_skipped_advisors():
    load = Counter({A: 3})
    ring = [adv(A), adv(B, presence=Presence.OFFLINE), adv(C, available=False)]
    assert pick_advisor(ring, load, None, default_capacity=3) is None
    ring = [adv(A, capacity=4), adv(B, presence=Presence.UNAVAILABLE), adv(C)]
    assert pick_advisor(ring, load, None, default_capacity=3) == A
    assert pick_advisor(ring, load, None, default_capacity=3, skipped=[A]) == C
    # only skipped advisors left: they are asked again rather than nobody
    assert pick_advisor([adv(A)], Counter(), None, default_capacity=3, skipped=[A]) == A


async def test_visitors_are_shared_round_robin_among_available_advisors(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    firsts = [await desk.visitor(f"s{i}") for i in range(4)]
    owners = [(await desk.conv(c)).advisor for c in firsts]
    assert owners == [A, B, A, B]
    assert [x[2] for x in desk.gateway.of("invite")] == [A, B, A, B]


async def test_capacity_bounds_each_advisor_and_the_rest_wait_in_order(desk):
    await desk.advisor(A, capacity=2)
    ids = [await desk.visitor(f"s{i}") for i in range(4)]
    states = [(await desk.conv(c)).status for c in ids]
    assert states == [ConversationStatus.INVITING] * 2 + [ConversationStatus.WAITING] * 2
    views = [desk.channel.of(ids[3], StatusEvent)[-1].conversation for _ in [0]]
    assert views[0].queue_position == 2
    assert desk.channel.of(ids[2], StatusEvent)[-1].conversation.queue_position == 1


async def test_default_capacity_is_three(desk):
    await desk.advisor(A)
    ids = [await desk.visitor(f"s{i}") for i in range(4)]
    assert [(await desk.conv(c)).advisor for c in ids] == [A, A, A, None]


async def test_queue_positions_move_up_live_when_someone_is_served(desk):
    await desk.advisor(A, available=False, capacity=1)
    first, second = await desk.visitor("s1"), await desk.visitor("s2")
    assert desk.channel.of(second, StatusEvent)[-1].conversation.queue_position == 2
    await desk.advisors.set_available(A, True)
    assert (await desk.conv(first)).status is ConversationStatus.INVITING
    assert desk.channel.of(second, StatusEvent)[-1].conversation.queue_position == 1
    room = (await desk.conv(first)).room_id
    await desk.conversations.advisor_joined(room, A)
    await desk.conversations.advisor_close(room, A, "Ana")
    # capacity freed: the second visitor is offered at once
    assert (await desk.conv(second)).status is ConversationStatus.INVITING


async def test_an_unanswered_invite_is_skipped_after_the_timeout(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    assert (await desk.conv(cid)).advisor == A
    desk.clock.advance(59)
    await desk.settle()
    assert (await desk.conv(cid)).advisor == A
    desk.clock.advance(1.5)
    await desk.settle()
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.INVITING and conv.advisor == B
    assert ("revoke", conv.room_id, A) in desk.gateway.sent
    # A accepting late does not take the visitor from B
    await desk.conversations.advisor_joined(conv.room_id, A)
    assert (await desk.conv(cid)).advisor == B
    await desk.conversations.advisor_joined(conv.room_id, B)
    assert (await desk.conv(cid)).status is ConversationStatus.ACTIVE


async def test_a_declined_invite_goes_to_the_next_advisor_at_once(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    await desk.conversations.advisor_left((await desk.conv(cid)).room_id, A)
    assert (await desk.conv(cid)).advisor == B


async def test_an_advisor_going_offline_loses_pending_offers_and_gets_no_new_ones(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    assert (await desk.conv(cid)).advisor == A
    await desk.advisors.presence_changed(A, Presence.OFFLINE)
    assert (await desk.conv(cid)).advisor == B
    other = await desk.visitor("s2")
    assert (await desk.conv(other)).advisor == B
    await desk.advisors.presence_changed(B, Presence.UNAVAILABLE)
    third = await desk.visitor("s3")
    conv = await desk.conv(third)
    assert conv.status is ConversationStatus.WAITING
    await desk.advisors.presence_changed(A, Presence.ONLINE)
    assert (await desk.conv(third)).advisor == A


async def test_removing_an_advisor_requeues_their_offers(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    await desk.advisors.remove(A)
    assert (await desk.conv(cid)).advisor == B


async def test_an_advisor_leaving_an_active_chat_hands_the_visitor_back(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    await desk.conversations.advisor_joined(room, A)
    await desk.conversations.advisor_left(room, A)
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.INVITING and conv.advisor == B


async def test_a_queued_visitor_who_closed_the_page_is_dropped_after_a_grace_time(desk):
    await desk.advisor(A, available=False)
    gone, staying = [await desk.visitor(s) for s in ("s1", "s2")]
    desk.channel.watching.add(staying)
    desk.clock.advance(1)
    await desk.conversations.page_closed(gone)  # the clock starts when the last page closes
    desk.clock.advance(299)
    await desk.settle()
    assert (await desk.conv(gone)).status is ConversationStatus.WAITING  # a reload is in time
    desk.clock.advance(1)
    await desk.settle()
    ended = await desk.conv(gone)
    assert ended.status is ConversationStatus.ENDED
    assert (await desk.store.messages(gone))[-1].body == (
        "The visitor left before an advisor was free."
    )
    assert (await desk.conv(staying)).status is ConversationStatus.WAITING
    assert desk.channel.of(staying, StatusEvent)[-1].conversation.queue_position == 1
    # a visitor already with an advisor is the advisor's to close, page or no page
    await desk.advisors.set_available(A, True)
    room = (await desk.conv(staying)).room_id
    await desk.conversations.advisor_joined(room, A)
    desk.channel.watching.discard(staying)
    await desk.conversations.page_closed(staying)
    desk.clock.advance(1000)
    await desk.settle()
    assert (await desk.conv(staying)).status is ConversationStatus.ACTIVE


async def test_a_visitor_who_comes_back_in_time_is_not_dropped_and_a_restart_drops_nobody_early(
    desk,
):
    await desk.advisor(A, available=False)
    cid = await desk.visitor("s1")
    await desk.conversations.page_closed(cid)
    desk.clock.advance(200)
    desk.channel.watching.add(cid)  # reloaded
    desk.clock.advance(200)
    await desk.settle()
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    desk.channel.watching.discard(cid)  # gone again: a full grace time from now
    await desk.conversations.page_closed(cid)
    desk.clock.advance(299)
    await desk.settle()
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    # a restart: at start-up every queued visitor's count starts again, from then
    restarted = build_desk(
        desk.store, desk.gateway, desk.channel, desk.clock, DeskSettings(topics=TOPICS)
    )
    await restarted.visitors.watch_queued()
    desk.clock.advance(1)
    await restarted.outbox.drain()
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    desk.clock.advance(298)
    await restarted.outbox.drain()
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    desk.clock.advance(1)
    await restarted.outbox.drain()
    assert (await desk.conv(cid)).status is ConversationStatus.ENDED


async def test_an_advisor_going_offline_mid_chat_hands_the_visitor_to_someone_else(desk):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    await desk.conversations.advisor_joined(room, A)
    await desk.advisors.presence_changed(A, Presence.UNAVAILABLE)  # idle: keeps the chat
    assert (await desk.conv(cid)).advisor == A
    await desk.advisors.presence_changed(A, Presence.OFFLINE)  # gone: not stranded
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.INVITING and conv.advisor == B
    notes = [m.body for m in await desk.store.messages(cid)]
    assert "Your advisor was disconnected. We are finding you another one." in notes


@pytest.mark.parametrize(
    "step, then",
    [
        # NTP steps the clock back an hour: skipped after one timeout, not after an hour
        pytest.param(-3600, 61, id="back-an-hour"),
        # a day ahead: the offer is overdue and moves on at once, and nothing else breaks
        pytest.param(86_400, 0, id="forward-a-day"),
    ],
)
async def test_a_wall_clock_step_moves_an_offer_on_after_one_timeout_at_most(desk, step, then):
    await desk.advisor(A)
    await desk.advisor(B)
    cid = await desk.visitor("s1")
    assert (await desk.conv(cid)).advisor == A
    desk.clock.jump(step)
    await desk.settle()
    desk.clock.advance(then)
    await desk.settle()
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.INVITING and conv.advisor == B
    await desk.conversations.advisor_joined(conv.room_id, B)
    assert (await desk.conv(cid)).status is ConversationStatus.ACTIVE


async def test_a_visitor_offered_back_to_an_advisor_still_in_the_room_is_theirs_at_once(desk):
    await desk.advisor(A, capacity=1)
    cid = await desk.visitor("s1")
    room = (await desk.conv(cid)).room_id
    await desk.conversations.advisor_joined(room, A)
    desk.gateway.joined(room, A)
    await desk.advisors.presence_changed(A, Presence.OFFLINE)  # handed back...
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    await desk.advisors.presence_changed(A, Presence.ONLINE)  # ...and offered to A again
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.ACTIVE and conv.advisor == A


async def test_a_wall_clock_step_never_drops_a_queued_visitor(desk):
    await desk.advisor(A, available=False)
    cid = await desk.visitor("s1")
    await desk.conversations.page_closed(cid)
    desk.clock.advance(10)
    desk.clock.jump(86_400)
    await desk.settle()
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    desk.clock.advance(289)
    await desk.settle()
    assert (await desk.conv(cid)).status is ConversationStatus.WAITING
    desk.clock.advance(1)
    await desk.settle()
    assert (await desk.conv(cid)).status is ConversationStatus.ENDED


async def test_a_guest_who_joins_a_waiting_visitors_room_does_not_take_the_visitor(desk):
    guest = AdvisorMxid("@zed:hs")  # invited by someone in the room, never made an advisor
    await desk.advisor(A, available=False)
    cid = await desk.visitor("s1")
    await desk.conversations.advisor_joined((await desk.conv(cid)).room_id, guest)
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.WAITING and conv.advisor is None
    shown = desk.channel.of(cid, StatusEvent)[-1].conversation
    assert (shown.status, shown.queue_position) == ("waiting", 1)
    await desk.advisors.set_available(A, True)  # the visitor still goes to a real advisor
    assert (await desk.conv(cid)).advisor == A


async def test_an_advisor_who_joins_a_waiting_visitors_room_takes_them_even_when_away(desk):
    # availability and capacity decide whom the desk offers visitors to; an advisor who
    # walks into a waiting visitor's room on purpose is not sent away while the visitor waits
    await desk.advisor(A, available=False)
    cid = await desk.visitor("s1")
    await desk.conversations.advisor_joined((await desk.conv(cid)).room_id, A)
    conv = await desk.conv(cid)
    assert conv.status is ConversationStatus.ACTIVE and conv.advisor == A
