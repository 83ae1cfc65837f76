"""The outbox's rules on the in-memory fakes: retries, parking, order within a key, timers."""

from __future__ import annotations

import pytest

from bridge.errors import TemporarilyUnavailable
from bridge.events import (
    EVENT_TYPES,
    ConversationEnded,
    DomainEvent,
    QueueChanged,
    VisitorSaid,
    decode,
)
from bridge.model import ConversationStatus, Sender
from bridge.outbox import MAX_FAILURES, Attempt, Handlers

from .conftest import Desk

FORM = {"name": "Vera", "topic": "general", "message": "Hello"}


class Flaky:
    """A gateway call that fails ``times`` times with ``error``, then works."""

    def __init__(self, desk: Desk, method: str, times: int, error: Exception) -> None:
        self.real = getattr(desk.gateway, method)
        self.left = times
        self.error = error
        self.calls = 0
        setattr(desk.gateway, method, self)

    async def __call__(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.error
        return await self.real(*args, **kwargs)


async def test_a_handler_failing_a_few_times_then_working_is_done_once_and_not_parked(desk):
    conversation, _ = await desk.conversations.start("s1", FORM)
    flaky = Flaky(desk, "send_visitor_text", 3, RuntimeError("M_UNKNOWN: try later"))
    await desk.conversations.visitor_message("s1", "c1", "third time lucky")
    assert flaky.calls == 1
    for wait in (1, 5, 30):  # the backoff after each failure
        desk.clock.advance(wait)
        await desk.settle()
    assert flaky.left == 0
    assert [s[2] for s in desk.gateway.of("text")].count("third time lucky") == 1
    assert desk.store.outbox.kinds("parked") == []
    assert desk.store.outbox.kinds() == []  # nothing pending


async def test_after_too_many_failures_a_row_is_parked_and_holds_back_the_close_of_its_room(
    desk,
):
    await desk.advisor("@ana:hs")
    conversation, _ = await desk.conversations.start("s1", FORM)
    Flaky(desk, "send_visitor_text", MAX_FAILURES, RuntimeError("M_FORBIDDEN"))
    await desk.conversations.visitor_message("s1", "c1", "my last words")
    await desk.conversations.visitor_end("s1")
    for _ in range(MAX_FAILURES):
        desk.clock.advance(200)
        await desk.settle()
    assert desk.store.outbox.kinds("parked") == ["VisitorSaid"]
    # the room is not closed before the message is in it: the close waits behind it
    assert not desk.gateway.of("leave")
    assert "ConversationEnded" in desk.store.outbox.kinds()
    (parked,) = await desk.store.outbox.parked()
    assert await desk.store.outbox.unpark(parked.id, desk.clock.now())
    await desk.settle()
    sent = [s for s in desk.gateway.sent if s[0] in ("text", "leave")]
    assert [s[0] for s in sent][-2:] == ["text", "leave"]
    assert sent[-2][2] == "my last words"
    ended = await desk.conv(conversation.id)
    assert ended.status is ConversationStatus.ENDED and ended.ended_by is Sender.VISITOR


async def test_a_homeserver_outage_is_retried_without_counting_and_parks_nothing(desk):
    await desk.conversations.start("s1", FORM)
    outage = Flaky(desk, "send_visitor_text", 50, TemporarilyUnavailable("502"))
    await desk.conversations.visitor_message("s1", "c1", "hello?")
    for _ in range(50):
        desk.clock.advance(1)  # the retry after an outage is never more than a second away
        await desk.settle()
    assert outage.left == 0 and desk.store.outbox.kinds("parked") == []
    assert [s[2] for s in desk.gateway.of("text")][-1] == "hello?"


async def test_a_message_sent_before_a_crash_is_looked_for_before_it_is_sent_again(desk):
    await desk.conversations.start("s1", FORM)
    await desk.core.visitors.visitor_message("s1", "c1", "did it land?")
    # the dispatcher claims the row and dies while sending: the send landed, nothing else
    (row,) = await desk.store.outbox.claim("dead", desk.clock.now(), desk.clock.now() + 15, 10)
    said = decode(row.kind, row.payload)
    assert isinstance(said, VisitorSaid)
    conversation = await desk.conv(said.conversation_id)
    message = await desk.store.get_message(said.message_id)
    assert conversation.room_id and conversation.puppet and message and message.txn_id
    await desk.gateway.send_visitor_text(
        conversation.room_id, conversation.puppet, message.body, message.txn_id
    )
    desk.clock.advance(16)  # its lease runs out; another dispatcher takes the row
    await desk.settle()
    assert [s[2] for s in desk.gateway.of("text")].count("did it land?") == 1
    assert desk.gateway.of("find")  # it looked first


async def test_a_second_handler_for_an_event_type_or_a_missing_one_fails_at_start_up():
    async def handler(event: QueueChanged, attempt: Attempt) -> None:
        pass

    handlers = Handlers()
    handlers.register(QueueChanged, handler)
    with pytest.raises(ValueError, match="a second handler for QueueChanged"):
        handlers.register(QueueChanged, handler)
    with pytest.raises(ValueError, match="no handler for .*ConversationEnded"):
        handlers.check_complete()


async def test_a_clock_stepped_back_never_makes_a_timer_wait_longer_than_its_delay(desk):
    await desk.advisor("@ana:hs")
    await desk.advisor("@bob:hs")
    cid = await desk.visitor("s1")
    first = (await desk.conv(cid)).advisor
    desk.clock.jump(-3600)  # NTP steps the clock back an hour right after the offer
    await desk.settle()  # the dispatcher notices the step: the timer is due one timeout ahead
    desk.clock.advance(60)
    await desk.settle()
    moved = await desk.conv(cid)
    assert moved.status is ConversationStatus.INVITING and moved.advisor != first


async def test_ending_raises_the_close_after_everything_the_visitor_said(desk):
    await desk.conversations.start("s1", FORM)
    await desk.core.visitors.visitor_message("s1", "c1", "one")
    await desk.core.visitors.visitor_end("s1")
    kinds = desk.store.outbox.kinds()
    assert kinds.index("VisitorSaid") < kinds.index(ConversationEnded.__name__)


def test_every_event_says_only_what_the_outbox_reads():
    # a class attribute the outbox does not read (say, one renamed since) silently does nothing:
    # the event would be added again and again instead of kept once
    read = {"if_pending", "priority"}
    for name, cls in EVENT_TYPES.items():
        own = {
            attr
            for klass in cls.__mro__
            if klass not in (DomainEvent, object)
            for attr, hint in vars(klass).get("__annotations__", {}).items()
            if "ClassVar" in str(hint)
        }
        assert own <= read, f"{name} sets {own - read}, which the outbox does not read"
        assert cls.if_pending in ("add", "keep", "replace"), name
