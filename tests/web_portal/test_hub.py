"""The hub's subscribers on their own: replay, dedupe and what an idle page costs.

A subscriber writes to a fake socket that records the frames, so what a page would receive is a
list to compare; the end-to-end paths are in test_portal_api.py and test_portal_security.py.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any

from bridge.model import ConversationId
from web_portal.hub import SEQS_REMEMBERED, Subscriber, VisitorHub

from .test_portal_security import FakeSocket


def message(seq: int) -> dict[str, Any]:
    return {"type": "message", "message": {"seq": seq, "body": f"line {seq}"}}


STATUS = {"type": "status", "conversation": {"status": "active"}}


def seqs(ws: FakeSocket) -> list[int | str]:
    return [f["message"]["seq"] if f["type"] == "message" else f["type"] for f in ws.sent]


async def settled() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_message_both_in_the_backlog_and_live_reaches_the_page_once() -> None:
    ws = FakeSocket()
    subscriber = Subscriber(ws)  # type: ignore[arg-type]
    # published while the backlog was being read: held, then sent after it
    subscriber.offer(message(3))
    subscriber.offer(message(4))
    subscriber.replay([message(1), message(2), message(3), STATUS])
    subscriber.offer(message(4))  # and once more live, as a retried publish would
    subscriber.offer({"type": "pong"})
    await settled()
    assert seqs(ws) == [1, 2, 3, "status", 4, "pong"]


async def test_live_messages_out_of_order_all_arrive_and_repeats_do_not() -> None:
    ws = FakeSocket()
    subscriber = Subscriber(ws)  # type: ignore[arg-type]
    subscriber.replay([message(4), STATUS])
    # two requests stored 6 and 5; the second published first
    for seq in (6, 5, 6, 5, 4, 7):
        subscriber.offer(message(seq))
    await settled()
    assert seqs(ws) == [4, "status", 6, 5, 7]


async def test_a_long_chat_still_recognises_its_recent_messages() -> None:
    ws = FakeSocket()
    subscriber = Subscriber(ws)  # type: ignore[arg-type]
    subscriber.replay([])
    for seq in range(1, 2001):
        subscriber.offer(message(seq))
        if seq % 200 == 0:
            await settled()  # a page that reads along, as browsers do
    await settled()
    for seq in range(2001 - SEQS_REMEMBERED, 2001):
        subscriber.offer(message(seq))
    subscriber.offer(message(2001))
    await settled()
    assert seqs(ws) == list(range(1, 2002))


async def test_an_idle_page_keeps_no_queue_no_task_and_little_memory() -> None:
    """Thousands of pages wait at once: once its backlog is written, an idle page is its
    socket, a small subscriber and its place in the hub; no queue, no writer task."""
    hub = VisitorHub()
    sockets = [FakeSocket() for _ in range(200)]
    backlog = [message(1), message(2), STATUS]
    tasks_before = len(asyncio.all_tasks())
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, ws in enumerate(sockets):
            subscriber = Subscriber(ws)  # type: ignore[arg-type]
            hub.subscribe(ConversationId(f"c{i:04d}"), subscriber)
            subscriber.replay(backlog)
        await settled()
        gc.collect()
        per_page = (tracemalloc.get_traced_memory()[0] - before) / len(sockets)
    finally:
        tracemalloc.stop()
    assert all(seqs(ws) == [1, 2, "status"] for ws in sockets)
    assert len(asyncio.all_tasks()) == tasks_before
    # the list of frames each fake socket keeps is counted too (~0.1 KB)
    assert per_page < 600, per_page
    for i in range(len(sockets)):
        for subscriber in hub._subscribers[ConversationId(f"c{i:04d}")]:
            hub.unsubscribe(ConversationId(f"c{i:04d}"), subscriber)
    assert len(hub) == 0 and hub.watched() == []


async def test_two_pages_of_one_conversation_both_get_its_events_until_one_leaves() -> None:
    hub = VisitorHub()
    conversation = ConversationId("c")
    first_ws, second_ws = FakeSocket(), FakeSocket()
    first, second = Subscriber(first_ws), Subscriber(second_ws)  # type: ignore[arg-type]
    for subscriber in (first, second):
        hub.subscribe(conversation, subscriber)
        subscriber.replay([])
    hub.publish_frame(conversation, message(1))
    hub.unsubscribe(conversation, first)
    hub.publish_frame(conversation, message(2))
    await settled()
    assert seqs(first_ws) == [1] and seqs(second_ws) == [1, 2]
    assert len(hub) == 1 and hub.is_watching(conversation)
    hub.unsubscribe(conversation, second)
    assert not hub.is_watching(conversation) and hub.watched() == []
