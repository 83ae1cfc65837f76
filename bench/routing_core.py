"""The routing core: 10,000 queued visitors across 500 advisors, on the real store.

The core is built as the product builds it (``bridge.desk.build_desk``) on the real
``SqlStore`` over a temporary SQLite file (``appservice.db.open_database``: migrated, WAL, as
in production); only the homeserver and the visitors' pages are left out
(``bench/recording.py``: a gateway and a channel that record calls and answer at once). Every
advisor is available and online with capacity 3, so one pass makes 1,500 offers and leaves
8,500 visitors waiting, each told their place in the queue. The queue is stored once, and
every timed run starts from a fresh copy of that file.

Rows, each the median of ``--repeat`` runs:

- ``minimum``: the least any first-come-first-served round-robin must do: sort the queue once
  and hand out the 1,500 free seats in turn (the "direct path" the others are compared with).
- ``RoundRobin pass``: ``advisor_load`` + ``RoundRobin`` + ``queue_order`` and one ``next()``
  per visitor until nobody has room: the pure rules of ``bridge/routing.py``.
- ``routing pass``: ``QueueService.route()``: read the open conversations and the advisors,
  decide, save the 1,500 offers with their events (``Offered``, ``OfferExpires``) in one
  transaction, publish every visitor's new status or place.
- ``routing pass + invites sent``: the same, then the outbox's dispatcher
  (``Dispatcher.run_forever``, as in production) until the gateway got all 1,500 invites.
- ``routing pass, nobody has room``: a second pass on the same desk, every seat taken: what
  each ``QueueChanged`` (an accepted, released or ended chat) costs with that queue.

Also printed: the SQL statements one pass runs (counted with ``bench/sqlcount.py``).

Target: the routing pass < 1 s.

    .venv/bin/python -m bench.routing_core [--visitors 10000] [--advisors 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

from appservice.clock import WallClock
from appservice.db import SqlStore, close_database, open_database
from bridge.desk import DeskSettings, build_desk
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

from . import sqlcount
from .common import load_line, machine_line, ratio, table, verdict
from .recording import RecordingChannel, RecordingGateway

TARGET_SECONDS = 1.0
TOPICS = {"general": "General question"}
INVITE_TIMEOUT = 600.0  # no offer runs out during a run


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


# -- the core on the real store -------------------------------------------------------------


@dataclass
class Routing:
    """One desk's routing pass, and the pass followed by its invites reaching the gateway."""

    route: Callable[[], Awaitable[None]]
    route_and_invite: Callable[[int], Awaitable[None]]


def build(
    store: SqlStore, gateway: RecordingGateway, channel: RecordingChannel, capacity: int
) -> Routing:
    """The product's core (``build_desk``) on ``store``; the adapter to the core's API."""
    desk = build_desk(
        store,
        gateway,
        channel,
        WallClock(),
        DeskSettings(topics=TOPICS, routing=RoutingSettings(capacity, INVITE_TIMEOUT)),
    )

    async def route_and_invite(seats: int) -> None:
        await desk.queue.route()
        dispatcher = asyncio.create_task(desk.outbox.run_forever())
        try:
            await gateway.until("invite", seats)
        finally:
            dispatcher.cancel()
            await asyncio.gather(dispatcher, return_exceptions=True)
            await desk.outbox.stop()

    return Routing(route=desk.queue.route, route_and_invite=route_and_invite)


@dataclass
class Desk:
    routing: Routing
    gateway: RecordingGateway
    channel: RecordingChannel


async def store_queue(path: Path, conversations: list[Conversation], team: list[Advisor]) -> None:
    """The queue and the advisors, stored once through the store (not timed)."""
    db = await open_database(f"sqlite:///{path}")
    try:
        store = SqlStore(db)
        async with store.transaction():
            for advisor in team:
                await store.save_advisor(advisor)
            for conversation in conversations:
                await store.add_visitor(
                    Visitor(
                        conversation.visitor_id, f"Visitor {conversation.visitor_id}", None, 0
                    ),
                    f"session-{conversation.visitor_id}",
                )
                await store.save_conversation(conversation)
    finally:
        await close_database(db)


class Copies:
    """Fresh copies of the stored queue, one SQLite file per desk."""

    def __init__(self, template: Path, capacity: int) -> None:
        self.template = template
        self.capacity = capacity
        self._count = itertools.count()

    @asynccontextmanager
    async def desk(self) -> AsyncIterator[Desk]:
        path = self.template.with_name(f"copy-{next(self._count)}.db")
        shutil.copyfile(self.template, path)
        db = await open_database(f"sqlite:///{path}")
        try:
            gateway, channel = RecordingGateway(), RecordingChannel()
            routing = build(SqlStore(db), gateway, channel, self.capacity)
            yield Desk(routing, gateway, channel)
        finally:
            await close_database(db)
            for leftover in path.parent.glob(f"{path.name}*"):
                leftover.unlink()


# -- the pure rules ---------------------------------------------------------------------------


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


# -- the runs ---------------------------------------------------------------------------------


async def timed(run: Callable[[], Awaitable[Any]]) -> float:
    gc.collect()  # the garbage of building the state is not the pass's
    began = time.perf_counter()
    await run()
    return time.perf_counter() - began


async def bench(args: argparse.Namespace, root: Path) -> None:
    team = advisors(args.advisors)
    queue = waiting(args.visitors, 1_700_000_000.0)
    capacity = args.capacity
    seats = min(len(team) * capacity, len(queue))

    began = time.perf_counter()
    template = root / "queue.db"
    await store_queue(template, queue, team)
    print(
        f"{len(queue):,} waiting conversations and {len(team)} advisors stored in "
        f"{time.perf_counter() - began:.1f} s ({template.stat().st_size / 2**20:.1f} MiB)"
    )
    copies = Copies(template, capacity)
    sqlcount.install()

    # correctness first: the same number of offers
    assert len(minimum_pass(queue, team, capacity)) == seats
    offers = round_robin_pass(queue, team, capacity)
    assert len(offers) == seats, len(offers)

    async def plain(fn: Callable[..., Any]) -> float:
        gc.collect()
        began = time.perf_counter()
        fn(queue, team, capacity)
        return time.perf_counter() - began

    rows: dict[str, list[float]] = {
        "minimum (sort + deal seats)": [],
        "RoundRobin pass": [],
        "routing pass": [],
        "routing pass + invites sent": [],
        "routing pass, nobody has room": [],
    }
    pass_statements: Counter[str] = Counter()
    full_statements: Counter[str] = Counter()
    published = 0
    for i in range(args.repeat):
        rows["minimum (sort + deal seats)"].append(await plain(minimum_pass))
        rows["RoundRobin pass"].append(await plain(round_robin_pass))
        async with copies.desk() as d:
            before = sqlcount.snapshot()
            rows["routing pass"].append(await timed(d.routing.route))
            if i == 0:
                pass_statements = sqlcount.difference(sqlcount.snapshot(), before)
                published = d.channel.published
        async with copies.desk() as d:
            rows["routing pass + invites sent"].append(
                await timed(lambda: d.routing.route_and_invite(seats))
            )
            assert d.gateway.calls["invite"] == seats, d.gateway.calls
        async with copies.desk() as d:
            await d.routing.route()
            before = sqlcount.snapshot()
            rows["routing pass, nobody has room"].append(await timed(d.routing.route))
            if i == 0:
                full_statements = sqlcount.difference(sqlcount.snapshot(), before)

    base = statistics.median(rows["minimum (sort + deal seats)"])
    print(
        f"\n{len(queue):,} waiting visitors, {len(team)} advisors × capacity {capacity} = "
        f"{seats:,} offers per pass; {published:,} statuses published to visitors by one "
        f"pass. Real SqlStore on SQLite, recording gateway. Median of {args.repeat} runs, "
        "in ms.\n"
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

    def summary(statements: Counter[str]) -> str:
        total = sum(statements.values())
        top = sorted(statements.items(), key=lambda kv: -kv[1])[:4]
        return f"{total:,} statements (" + "; ".join(f"{n:,} × {q[:60]}" for q, n in top) + ")"

    print(f"\nSQL of one routing pass: {summary(pass_statements)}")
    print(f"SQL of a pass with nobody free: {summary(full_statements)}")
    took = statistics.median(rows["routing pass"])
    print(
        f"\nrouting pass over {len(queue):,} visitors: {took:.3f} s "
        f"(target < {TARGET_SECONDS:.0f} s) {verdict(took < TARGET_SECONDS)}; with the "
        f"{seats:,} invites sent: {statistics.median(rows['routing pass + invites sent']):.3f} s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.routing_core", description=__doc__)
    parser.add_argument("--visitors", type=int, default=10_000)
    parser.add_argument("--advisors", type=int, default=500)
    parser.add_argument("--capacity", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(machine_line())
    print(load_line("start"))
    try:
        with tempfile.TemporaryDirectory(prefix="sb-routing-") as tmp:
            asyncio.run(bench(args, Path(tmp)))
    except KeyboardInterrupt:
        return 130
    print(load_line("end"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
