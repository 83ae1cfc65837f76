"""What the core measures for the operators (the DeskMetrics port): the time from a visitor's
start to each invite, and how long a visitor waited until an advisor took the chat."""

from __future__ import annotations

from bridge.model import AdvisorMxid

from .conftest import make_desk

A = AdvisorMxid("@ana:hs")
B = AdvisorMxid("@bob:hs")
FORM = {"name": "Vera", "email": "", "topic": "billing", "message": "Hi!"}


class RecordingMetrics:
    def __init__(self) -> None:
        self.invites: list[float] = []
        self.waits: list[float] = []

    def invite_sent(self, since_start: float) -> None:
        self.invites.append(since_start)

    def visitor_accepted(self, waited: float) -> None:
        self.waits.append(waited)


async def test_time_to_invite_counts_from_the_start_and_the_wait_until_an_advisor_takes_it():
    metrics = RecordingMetrics()
    desk = make_desk(metrics)
    conversation, _ = await desk.conversations.start("s1", FORM)
    assert metrics.invites == []  # nobody to invite yet: nothing measured
    desk.clock.advance(30)
    await desk.advisor(A)  # Ana says !available: the waiting visitor is offered to her
    assert metrics.invites == [30.0] and metrics.waits == []
    desk.clock.advance(12)
    await desk.conversations.advisor_joined(conversation.room_id, A)
    assert metrics.waits == [42.0]
    # joining again (another device) takes nothing new
    await desk.conversations.advisor_joined(conversation.room_id, A)
    assert metrics.waits == [42.0] and metrics.invites == [30.0]


async def test_each_invite_counts_when_an_offer_runs_out_and_goes_to_the_next_advisor():
    metrics = RecordingMetrics()
    desk = make_desk(metrics)
    await desk.advisor(A)
    await desk.advisor(B)
    conversation, _ = await desk.conversations.start("s1", FORM)
    assert metrics.invites == [0.0]
    desk.clock.advance(61)  # the offer runs out (60 s): the next advisor is invited
    await desk.settle()
    assert metrics.invites == [0.0, 61.0]
    offered = (await desk.conv(conversation.id)).advisor
    assert offered is not None
    await desk.conversations.advisor_joined(conversation.room_id, offered)
    assert metrics.waits == [61.0]


async def test_an_invite_the_homeserver_refused_is_not_counted():
    metrics = RecordingMetrics()
    desk = make_desk(metrics)
    await desk.conversations.start("s1", FORM)
    desk.clock.advance(5)
    desk.gateway.fail_next = ValueError("M_FORBIDDEN")  # the first invite is refused
    await desk.advisor(A)
    # the refused invite hands the visitor on; Ana, the only advisor, is rung again
    assert [s[0] for s in desk.gateway.sent].count("invite") == 1
    assert metrics.invites == [5.0]
