"""What 10,000 open conversations cost a Switchboard process that has nothing to do.

Switchboard runs in its own process (``bench/runner.py``, started with ``--count-sql``: every
SQL statement it runs is counted, ``bench/sqlcount.py``), next to a real Synapse, as in
production. Then:

1. **Reference**: ``--reference`` seconds (20) with no conversation at all: CPU and SQL of the
   process's own timers (the homeserver ping every 5 s, the outbox's safety poll).
2. **Seed**: ``--conversations`` (10,000) open conversations are inserted straight through its
   store in one transaction (``seed_open``): waiting, inviting and active in the proportions of
   ``--mix`` (1:1:1), each with its visitor and a made-up room, and just enough advisors
   (available, online, capacity 3) to hold the inviting and active ones at full capacity, so
   nobody is free and routing can offer nobody. No socket is open. Outbox rows: each inviting
   conversation gets its ``OfferExpires`` timer, due at its deadline (the runner's invite
   timeout, 600 s: after the run), which is what a real installation holds for an offer;
   nothing else is pending (the conversations were not made through the core, so none of
   their other rows exist, as in an installation whose work is all done).
3. **Idle**: ``--seconds`` (60) without any request: the process's CPU (user + system, from
   ``/proc/<pid>/stat``) and the SQL statements it ran, of which how many name the
   ``conversations`` table.

Targets: ≤ 1 core-second of CPU per minute, and no statement about conversations.

    .venv/bin/python -m bench.idle_conversations [--conversations 10000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from . import sqlcount
from .common import Lab, RemoteSwitchboard, cpu_seconds, rss_kib, run, table, verdict

TARGET_CPU_PER_MINUTE = 1.0
TARGET_CONVERSATION_QUERIES = 0


@dataclass
class Window:
    name: str
    conversations: int
    seconds: float = 0.0
    cpu: float = 0.0
    rss_kib: int = 0
    statements: Counter[str] = field(default_factory=Counter)

    @property
    def cpu_per_minute(self) -> float:
        return self.cpu / self.seconds * 60

    @property
    def total(self) -> int:
        return sum(self.statements.values())

    @property
    def about_conversations(self) -> int:
        return sum(n for q, n in self.statements.items() if sqlcount.touches_conversations(q))


async def measure(desk: RemoteSwitchboard, window: Window, seconds: float) -> None:
    gc.collect()
    before = (await desk.call("sql"))["statements"]
    cpu, began = cpu_seconds(desk.pid), time.perf_counter()
    await asyncio.sleep(seconds)
    window.cpu = cpu_seconds(desk.pid) - cpu
    window.seconds = time.perf_counter() - began
    after = (await desk.call("sql"))["statements"]  # the sql op itself runs no SQL
    window.statements = sqlcount.difference(after, before)
    window.rss_kib = rss_kib(desk.pid)


async def bench(args: argparse.Namespace, lab: Lab) -> None:
    mix = [int(part) for part in args.mix.split(":")]
    if len(mix) != 3 or min(mix) < 0 or not sum(mix):
        raise SystemExit("--mix is waiting:inviting:active, e.g. 1:1:1")
    desk = await lab.remote_switchboard(count_sql=True)
    await asyncio.sleep(args.settle)  # start-up is over (the bot's registration, first ping)

    reference = Window("no conversation", 0)
    await measure(desk, reference, args.reference)

    seeded = await desk.call(
        "seed_open", count=args.conversations, mix=mix, timeout=max(600, args.conversations / 10)
    )
    stored = seeded["conversations"]
    print(
        f"  seeded in {seeded['seconds']:.1f} s: conversations {stored}, "
        f"{seeded['advisors']:,} advisors, all full"
    )
    print("  outbox after seeding: " + describe_outbox(seeded.get("outbox", {})))
    await asyncio.sleep(args.settle)  # anything the insert set off runs now, not in the window

    idle = Window(f"{args.conversations:,} open conversations", args.conversations)
    await measure(desk, idle, args.seconds)
    after = await desk.call("state")
    print("  outbox after the idle window: " + describe_outbox(after.get("outbox", {})))
    if after["conversations"] != stored:
        print(f"  conversations changed during the run: {stored} → {after['conversations']}")

    print(
        f"\nOne Switchboard process with no socket and no request; CPU in core-seconds per "
        f"minute (60 = one core busy), from /proc; SQL counted inside the process. Mix "
        f"waiting:inviting:active = {args.mix}.\n"
    )
    rows = []
    for w in (reference, idle):
        rows.append(
            [
                w.name,
                f"{w.seconds:.0f}",
                f"{w.cpu:.2f}",
                f"{w.cpu_per_minute:.2f}",
                f"{w.rss_kib / 1024:.0f}",
                w.total,
                f"{w.total / w.seconds * 60:.0f}",
                w.about_conversations,
            ]
        )
    print(
        table(
            [
                "phase",
                "seconds",
                "CPU s",
                "CPU s/min",
                "RSS MiB",
                "SQL statements",
                "per min",
                "naming conversations",
            ],
            rows,
        )
    )
    print(f"\nStatements during the {idle.seconds:.0f} s idle window, most frequent first:\n")
    top = sorted(idle.statements.items(), key=lambda kv: -kv[1])[: args.top]
    print(
        table(
            ["count", "conversations?", "statement"],
            [
                [n, "yes" if sqlcount.touches_conversations(q) else "", shorten(q, 110)]
                for q, n in top
            ],
        )
        if top
        else "(none)"
    )
    print(
        f"\nidle CPU with {args.conversations:,} open conversations: "
        f"{idle.cpu_per_minute:.2f} core-s/min (target ≤ {TARGET_CPU_PER_MINUTE:.0f}) "
        f"{verdict(idle.cpu_per_minute <= TARGET_CPU_PER_MINUTE)}; "
        f"{idle.about_conversations} statements naming conversations in "
        f"{idle.seconds:.0f} s (target {TARGET_CONVERSATION_QUERIES}) "
        f"{verdict(idle.about_conversations <= TARGET_CONVERSATION_QUERIES)}; "
        f"{idle.total} SQL statements in all (reference without conversations: "
        f"{reference.cpu_per_minute:.2f} core-s/min, {reference.total} statements in "
        f"{reference.seconds:.0f} s)"
    )


def describe_outbox(outbox: dict[str, dict[str, float]]) -> str:
    if not outbox:
        return "no rows"
    return ", ".join(
        f"{kind}: {v['rows']:,} (first due in {v['first due in']:.0f} s)"
        for kind, v in sorted(outbox.items())
    )


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.idle_conversations", description=__doc__
    )
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument(
        "--mix", default="1:1:1", help="waiting:inviting:active proportions (default 1:1:1)"
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="the idle window")
    parser.add_argument(
        "--reference", type=float, default=20.0, help="idle seconds before any conversation"
    )
    parser.add_argument(
        "--settle", type=float, default=5.0, help="seconds left out after start and seeding"
    )
    parser.add_argument("--top", type=int, default=12, help="statements listed")
    return run(bench, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
