"""Message latency through Switchboard vs two plain Matrix clients on the same homeserver.

Paths, measured in the same run, one message at a time, interleaved so drift hits all alike:

- ``direct``: a plain matrix-nio client sends to a room; another plain client's /sync sees it
  (both directions pooled).
- ``visitor→advisor``: the visitor POSTs /api/conversation/messages; the advisor's /sync sees
  the puppet's message.
- ``advisor→visitor``: the advisor sends in the room; the visitor's websocket gets the frame.

Switchboard runs in its own process (``bench/runner.py``), as in production; the clients of
both paths run in this one.

Targets (ratio to direct): ≤ 1.1 at p50 and ≤ 1.2 at p95, for each Switchboard direction.

    .venv/bin/python -m bench.latency [--samples 300] [--warmup 10]
"""

from __future__ import annotations

import argparse
import sys
import time

from .common import Desk, Lab, percentile, ratio, run, table, tag, verdict

P50_TARGET = 1.1
P95_TARGET = 1.2


async def bench(args: argparse.Namespace, lab: Lab) -> None:
    if args.in_process:
        switchboard: Desk = await lab.switchboard()
    else:
        switchboard = await lab.remote_switchboard()
    ana = await lab.advisor(switchboard, "ana")
    vera = await lab.visitor(switchboard)
    started = await vera.start()
    await vera.connect()
    stored = await lab.offered(switchboard, started["conversation"]["id"])
    room = await ana.wait_for_invite(lambda r: r == stored["room_id"])
    await ana.join(room)
    await vera.wait_status("active")

    alice, bob = await lab.client("alice"), await lab.client("bob")
    direct_room = await alice.create_room(invite=[bob.user_id])
    await bob.wait_for_invite(lambda r: r == direct_room)
    await bob.join(direct_room)
    await alice.wait_for_member(direct_room, bob.user_id, "join")

    timeout = args.timeout
    samples: dict[str, list[float]] = {"direct": [], "v2a": [], "a2v": []}

    async def direct(i: int) -> float:
        sender, receiver = (alice, bob) if i % 2 == 0 else (bob, alice)
        body = f"direct {i} {tag()}"
        began = time.perf_counter()
        await sender.send_text(direct_room, body)
        await receiver.wait_for_message(direct_room, body, timeout=timeout)
        return time.perf_counter() - began

    async def visitor_to_advisor(i: int) -> float:
        body = f"v2a {i} {tag()}"
        began = time.perf_counter()
        await vera.say(body)
        await ana.wait_for_message(room, body, timeout=timeout)
        return time.perf_counter() - began

    async def advisor_to_visitor(i: int) -> float:
        body = f"a2v {i} {tag()}"
        began = time.perf_counter()
        await ana.send_text(room, body)
        await vera.wait_for(
            lambda f: f.get("type") == "message" and f["message"]["body"] == body,
            timeout=timeout,
            what=f"message {body!r}",
        )
        return time.perf_counter() - began

    paths = [("direct", direct), ("v2a", visitor_to_advisor), ("a2v", advisor_to_visitor)]
    total = args.warmup + args.samples
    began = time.perf_counter()
    for i in range(total):
        # rotate the order each round so no path always follows the same one
        for name, measure in paths[i % 3 :] + paths[: i % 3]:
            elapsed = await measure(i)
            if i >= args.warmup:
                samples[name].append(elapsed)
    wall = time.perf_counter() - began

    print(
        f"\n{args.samples} samples per path after {args.warmup} warm-up rounds, "
        f"one message in flight at a time ({wall:.1f} s). Times in ms.\n"
    )
    direct_p = {p: percentile(samples["direct"], p) for p in (50, 95, 99)}
    rows = []
    verdicts = []
    for name, label in (
        ("direct", "direct (nio → nio)"),
        ("v2a", "visitor → advisor"),
        ("a2v", "advisor → visitor"),
    ):
        values = samples[name]
        p = {q: percentile(values, q) for q in (50, 95, 99)}
        r50, r95, r99 = (ratio(p[q], direct_p[q]) for q in (50, 95, 99))
        rows.append(
            [
                label,
                len(values),
                p[50] * 1000,
                p[95] * 1000,
                p[99] * 1000,
                max(values) * 1000,
                f"{r50:.2f}",
                f"{r95:.2f}",
                f"{r99:.2f}",
            ]
        )
        if name != "direct":
            verdicts.append(
                f"{label}: p50 ratio {r50:.2f} (target ≤ {P50_TARGET}) "
                f"{verdict(r50 <= P50_TARGET)}; "
                f"p95 ratio {r95:.2f} (target ≤ {P95_TARGET}) {verdict(r95 <= P95_TARGET)}"
            )
    print(
        table(
            ["path", "n", "p50", "p95", "p99", "max", "p50 ×", "p95 ×", "p99 ×"],
            rows,
        )
    )
    print()
    for line in verdicts:
        print(line)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument("--samples", type=int, default=300, help="measured messages per path")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured rounds first")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up on one message")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run Switchboard inside the benchmark's event loop instead of its own process",
    )
    return run(bench, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
