"""Time from a visitor's form submit to the advisor's client seeing the invite.

Switchboard path: ``POST /api/conversation`` (the pre-chat form) → Switchboard registers the
visitor's puppet, creates the room, posts the form, routes the visitor and invites an advisor
→ the advisor's matrix-nio /sync shows the invite. Several advisors with room for every visitor
of the run (5 advisors × capacity 21 by default), so nobody waits in the queue.

Direct path: a plain client's ``createRoom`` with the advisor in ``invite`` → the same
advisors' /sync shows the invite.

Two phases per path: ``one at a time`` (the next visitor submits once the previous invite was
seen, or ``--gap`` seconds later) and ``burst`` (all visitors submit at once). The invite is
timed when the advisor's sync response carrying it arrives (an nio response callback),
whoever is waiting; a visitor's invite is told from the others by the room's name in the
invite's stripped state ("<visitor's name> (visitor)"), so the benchmark asks Switchboard
nothing while it works.
Also printed: when the POST (or ``createRoom``) was answered, p50/p95/max: the time the
visitor's form spins.

Target: Switchboard p95 < 2 s.

    .venv/bin/python -m bench.time_to_invite [--visitors 50] [--advisors 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import time
from typing import Awaitable, Callable

from nio import InviteNameEvent, SyncResponse

from harness.advisor import AdvisorClient

from .common import (
    CpuMeter,
    Lab,
    RemoteSwitchboard,
    percentile,
    ratio,
    run,
    table,
    tag,
    verdict,
)

TARGET_P95 = 2.0


class InviteClock:
    """When each room's invite first reached any of the watched advisors' clients, by room id
    and by the room's name as the invite shows it."""

    def __init__(self) -> None:
        self.seen: dict[str, float] = {}
        self.named: dict[str, str] = {}  # room name → room id
        self._changed = asyncio.Condition()

    def watch(self, advisor: AdvisorClient) -> None:
        async def on_sync(response: SyncResponse) -> None:
            now = time.perf_counter()
            new = [room for room in response.rooms.invite if room not in self.seen]
            if new:
                for room in new:
                    self.seen[room] = now
                    for event in response.rooms.invite[room].invite_state:
                        if isinstance(event, InviteNameEvent):
                            self.named.setdefault(event.name, room)
                async with self._changed:
                    self._changed.notify_all()

        advisor.client.add_response_callback(on_sync, SyncResponse)  # type: ignore[arg-type]

    async def wait(self, room: str, timeout: float) -> float:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: room in self.seen), timeout)
        return self.seen[room]

    async def wait_named(self, name: str, timeout: float) -> str:
        """The id of the room called ``name`` once an invite to it was seen."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: name in self.named), timeout)
        return self.named[name]


Timing = tuple[float, float]  # (invite seen, request answered), seconds after the submit


async def switchboard_invite(
    lab: Lab, desk: RemoteSwitchboard, clock: InviteClock, i: int, timeout: float
) -> Timing:
    visitor = await lab.visitor(desk)  # the page is already open: not timed
    name = f"Visitor {i} {tag()}"
    began = time.perf_counter()
    started = await visitor.start(name=name, message=f"Hello, I am visitor {i}.")
    answered = time.perf_counter() - began
    try:
        room = await clock.wait_named(
            f"{name} (visitor)", max(0.1, began + timeout - time.perf_counter())
        )
    except TimeoutError:
        now = await desk.conversation(started["conversation"]["id"])
        raise TimeoutError(
            f"visitor {i}: no advisor saw an invite within {timeout} s; conversation {now}"
        ) from None
    return clock.seen[room] - began, answered


async def direct_invite(
    creator: AdvisorClient, invitee: AdvisorClient, clock: InviteClock, timeout: float
) -> Timing:
    began = time.perf_counter()
    room = await creator.create_room(invite=[invitee.user_id], name="direct")
    answered = time.perf_counter() - began
    seen = await clock.wait(room, max(0.1, began + timeout - time.perf_counter()))
    return seen - began, answered


async def bench(args: argparse.Namespace, lab: Lab) -> None:
    # room for everyone, warm-up included: nobody may wait in the queue
    capacity = args.capacity or math.ceil((2 * args.visitors + 1) / args.advisors)
    if capacity > 50:
        raise SystemExit("more than 50 visitors per advisor: add --advisors")
    desk = await lab.remote_switchboard(capacity=capacity)
    advisors = [
        await lab.advisor(desk, f"adv{k}", capacity=capacity) for k in range(args.advisors)
    ]
    creator = await lab.client("creator")
    clock = InviteClock()
    for advisor in advisors:
        clock.watch(advisor)
    n, timeout = args.visitors, args.timeout

    # warm-up: one of each, not measured
    await direct_invite(creator, advisors[0], clock, timeout)
    await switchboard_invite(lab, desk, clock, -1, timeout)

    def direct(i: int) -> Awaitable[Timing]:
        return direct_invite(creator, advisors[i % len(advisors)], clock, timeout)

    def through(i: int) -> Awaitable[Timing]:
        return switchboard_invite(lab, desk, clock, i, timeout)

    async def one_at_a_time(make: Callable[[int], Awaitable[Timing]]) -> list[Timing]:
        timings = []
        for i in range(n):
            timings.append(await make(i))
            await asyncio.sleep(args.gap)
        return timings

    async def burst(make: Callable[[int], Awaitable[Timing]]) -> list[Timing]:
        return list(await asyncio.gather(*(make(n + i) for i in range(n))))

    meter = CpuMeter({"Synapse": lab.synapse_pid, "Switchboard": desk.pid})
    rows = []
    verdicts = []
    for phase, drive in (("one at a time", one_at_a_time), ("burst", burst)):
        reference: list[float] = []
        for path, make in (("direct", direct), ("Switchboard", through)):
            meter.start()
            began = time.perf_counter()
            timings = await drive(make)
            wall = time.perf_counter() - began
            cpu = meter.stop()
            values = [seen for seen, _ in timings]
            answers = [answered for _, answered in timings]
            reference = reference or values
            p50, p95 = percentile(values, 50), percentile(values, 95)
            rows.append(
                [
                    f"{path} ({phase})",
                    len(values),
                    f"{p50:.3f}",
                    f"{p95:.3f}",
                    f"{max(values):.3f}",
                    f"{percentile(answers, 50):.3f}",
                    f"{percentile(answers, 95):.3f}",
                    f"{max(answers):.3f}",
                    f"{wall:.1f}",
                    f"{cpu['Synapse']:.1f}",
                    f"{cpu['Switchboard']:.1f}",
                    f"{ratio(p50, percentile(reference, 50)):.2f}",
                    f"{ratio(p95, percentile(reference, 95)):.2f}",
                ]
            )
            if path == "Switchboard":
                verdicts.append(
                    f"Switchboard {phase}: p95 {p95:.3f} s (target < {TARGET_P95:.0f} s) "
                    f"{verdict(p95 < TARGET_P95)}; × direct p50 "
                    f"{ratio(p50, percentile(reference, 50)):.2f}, p95 "
                    f"{ratio(p95, percentile(reference, 95)):.2f}; POST answered p50 "
                    f"{percentile(answers, 50):.3f} s, p95 {percentile(answers, 95):.3f} s, "
                    f"max {max(answers):.3f} s"
                )

    print(
        f"\n{n} visitors per phase, {len(advisors)} advisors × capacity {capacity}. Times in "
        "seconds from the submit; 'answered' is when the POST (or createRoom) returned; CPU in "
        "seconds used during the phase; ratios of the invite times against the direct path of "
        "the same phase.\n"
    )
    print(
        table(
            [
                "path (phase)",
                "n",
                "p50",
                "p95",
                "max",
                "answered p50",
                "p95",
                "max",
                "wall",
                "Synapse CPU",
                "Switchboard CPU",
                "p50 ×",
                "p95 ×",
            ],
            rows,
        )
    )
    print()
    for line in verdicts:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.time_to_invite", description=__doc__)
    parser.add_argument("--visitors", type=int, default=50, help="visitors per phase")
    parser.add_argument("--advisors", type=int, default=5)
    parser.add_argument(
        "--capacity", type=int, help="visitors per advisor (≤ 50); default: room for all"
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="give up on one visitor")
    parser.add_argument(
        "--gap",
        type=float,
        default=0.0,
        help="one at a time: seconds between an invite seen and the next submit (default 0)",
    )
    return run(bench, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
