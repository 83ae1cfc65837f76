"""The routing core alone: 10,000 queued visitors across 500 advisors, in memory.

No I/O: the store, gateway, visitor channel and clock are the unit tests' in-memory fakes
(``tests/fakes.py``). Every advisor is available and online with capacity 3, so one pass makes
1,500 offers and leaves 8,500 visitors waiting, each told their new place in the queue.

Rows, each the median of ``--repeat`` runs on fresh state:

- ``minimum``: the least any first-come-first-served round-robin must do: sort the queue once
  and hand out the 1,500 free seats in turn (the "direct path" the others are compared with).
- ``RoundRobin pass``: ``advisor_load`` + ``RoundRobin`` + ``queue_order`` and one ``next()``
  per visitor until nobody has room: the pure rules of ``bridge/routing.py``.
- ``QueueService.dispatch()``: the real use case: load, decide, save each offer, send each
  invite, publish every waiting visitor's new position.
- ``dispatch(), nobody has room``: the same queue when every advisor is full, which is what
  each housekeeping tick and each accepted chat pays.

Target: ``dispatch()`` < 1 s.

    .venv/bin/python -m bench.routing_core [--visitors 10000] [--advisors 500] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import statistics
import sys
import time
from typing import Any, Awaitable, Callable

from bridge.model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    Presence,
    PuppetMxid,
    RoomId,
    RoutingSettings,
    Visitor,
    VisitorId,
)
from bridge.routing import RoundRobin, advisor_load, queue_order
from bridge.services.presenter import Presenter
from bridge.services.queue import QueueService
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel, MemoryStore

from .common import load_line, machine_line, ratio, table, verdict

TARGET_SECONDS = 1.0
TOPICS = {"general": "General question"}


def advisors(count: int) -> list[Advisor]:
    return [
        Advisor(
            mxid=AdvisorMxid(f"@advisor{i:05d}:bench"),
            available=True,
            presence=Presence.ONLINE,
            display_name=f"Advisor {i}",
        )
        for i in range(count)
    ]


def waiting(count: int, start: float) -> list[Conversation]:
    return [
        Conversation(
            id=ConversationId(f"c{i:07d}"),
            visitor_id=VisitorId(f"v{i:07d}"),
            topic="general",
            status=ConversationStatus.WAITING,
            created_at=start + i,
            queued_at=start + i,
            puppet=PuppetMxid(f"@sb_visitor_v{i:07d}:bench"),
            room_id=RoomId(f"!room{i:07d}:bench"),
        )
        for i in range(count)
    ]


@dataclasses.dataclass
class Desk:
    store: MemoryStore
    gateway: FakeMatrixGateway
    channel: FakeVisitorChannel
    queue: QueueService


async def desk(conversations: list[Conversation], team: list[Advisor], capacity: int) -> Desk:
    store, gateway, channel, clock = (
        MemoryStore(),
        FakeMatrixGateway(),
        FakeVisitorChannel(),
        FakeClock(),
    )
    for advisor in team:
        await store.save_advisor(advisor)
    for conversation in conversations:
        await store.add_visitor(
            Visitor(conversation.visitor_id, f"Visitor {conversation.visitor_id}", None, 0.0),
            f"session-{conversation.visitor_id}",
        )
        # save_conversation: add_conversation's one-open-per-visitor scan is O(n) per insert
        await store.save_conversation(conversation)
    presenter = Presenter(store, channel, TOPICS)
    queue = QueueService(store, gateway, presenter, clock, RoutingSettings(capacity, 60.0))
    return Desk(store, gateway, channel, queue)


def minimum_pass(
    conversations: list[Conversation], team: list[Advisor], capacity: int
) -> list[tuple[str, str]]:
    order = sorted(
        (c for c in conversations if c.status is ConversationStatus.WAITING),
        key=lambda c: (c.queued_at, c.created_at, c.id),
    )
    seats = len(team) * capacity
    return [
        (c.id, a.mxid)
        for c, a in zip(order[:seats], itertools.cycle(sorted(team, key=lambda a: a.mxid)))
    ]


def round_robin_pass(
    conversations: list[Conversation], team: list[Advisor], capacity: int
) -> list[tuple[str, str]]:
    ring = RoundRobin(team, advisor_load(conversations), None, default_capacity=capacity)
    offers: list[tuple[str, str]] = []
    for conversation in queue_order(conversations):
        if ring.exhausted:
            break
        advisor = ring.next(conversation.skipped)
        if advisor is not None:
            offers.append((conversation.id, advisor))
    return offers


async def timed(make: Callable[[], Awaitable[Any]], run: Callable[[Any], Awaitable[Any]]) -> float:
    state = await make()
    gc.collect()  # the garbage of building the state is not the pass's
    began = time.perf_counter()
    await run(state)
    return time.perf_counter() - began


async def bench(args: argparse.Namespace) -> None:
    team = advisors(args.advisors)
    queue = waiting(args.visitors, 1_700_000_000.0)
    capacity = args.capacity
    seats = min(len(team) * capacity, len(queue))

    # correctness first: the same offers, and as many as there are seats
    assert len(minimum_pass(queue, team, capacity)) == seats
    offers = round_robin_pass(queue, team, capacity)
    assert len(offers) == seats, len(offers)
    probe = await desk(queue, team, capacity)
    await probe.queue.dispatch()
    invited = probe.gateway.of("invite")
    assert len(invited) == seats, len(invited)
    published = len(probe.channel.events)
    del probe

    async def plain(fn: Callable[..., Any]) -> float:
        gc.collect()
        began = time.perf_counter()
        fn(queue, team, capacity)
        return time.perf_counter() - began

    async def fresh() -> Desk:
        return await desk(queue, team, capacity)

    async def dispatch(d: Desk) -> None:
        await d.queue.dispatch()

    async def full() -> Desk:
        # every seat taken by earlier visitors, the rest of the queue the same
        d = await desk(queue, team, capacity)
        await d.queue.dispatch()
        d.channel.events.clear()
        return d

    rows: dict[str, list[float]] = {
        "minimum (sort + deal seats)": [],
        "RoundRobin pass": [],
        "QueueService.dispatch()": [],
        "dispatch(), nobody has room": [],
    }
    for _ in range(args.repeat):
        rows["minimum (sort + deal seats)"].append(await plain(minimum_pass))
        rows["RoundRobin pass"].append(await plain(round_robin_pass))
        rows["QueueService.dispatch()"].append(await timed(fresh, dispatch))
        rows["dispatch(), nobody has room"].append(await timed(full, dispatch))

    base = statistics.median(rows["minimum (sort + deal seats)"])
    print(
        f"\n{len(queue):,} waiting visitors, {len(team)} advisors × capacity {capacity} = "
        f"{seats:,} offers per pass; {published:,} events published to visitors by one "
        f"dispatch. Median of {args.repeat} runs, in ms.\n"
    )
    print(
        table(
            ["step", "median", "min", "max", "× minimum"],
            [
                [
                    name,
                    statistics.median(values) * 1000,
                    min(values) * 1000,
                    max(values) * 1000,
                    f"{ratio(statistics.median(values), base):.1f}",
                ]
                for name, values in rows.items()
            ],
        )
    )
    took = statistics.median(rows["QueueService.dispatch()"])
    print(
        f"\ndispatch() of {len(queue):,} visitors: {took:.3f} s "
        f"(target < {TARGET_SECONDS:.0f} s) {verdict(took < TARGET_SECONDS)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_core", description=__doc__)
    parser.add_argument("--visitors", type=int, default=10_000)
    parser.add_argument("--advisors", type=int, default=500)
    parser.add_argument("--capacity", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(machine_line())
    print(load_line("start"))
    try:
        asyncio.run(bench(args))
    except KeyboardInterrupt:
        return 130
    print(load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
