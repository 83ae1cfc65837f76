"""Sustained message throughput: N concurrent conversations vs N pairs of plain clients.

Every conversation carries two closed-loop streams at once (each sends its next message as soon
as the previous send call returned): visitor→advisor (POST /api/conversation/messages, seen by
the advisor's /sync) and advisor→visitor (the advisor's send, seen on the visitor's websocket).
The direct path is N rooms, each with two plain matrix-nio clients streaming both ways. A run
ends when every stream's last message has arrived; throughput = messages delivered / wall time
from the first send to the last arrival. Runs go direct, Switchboard, Switchboard, direct
(ABBA), so a homeserver that slows down as its database grows hurts both sides alike.

Target: Switchboard ≥ 90 % of the direct throughput.

    .venv/bin/python -m bench.throughput [--conversations 10] [--messages 30]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import operator
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Awaitable, Callable

from harness.advisor import AdvisorClient
from harness.visitor import Visitor

from .common import CpuMeter, Lab, ratio, run, table, tag, verdict

TARGET = 0.90


@dataclass
class Conversation:
    visitor: Visitor
    advisor: AdvisorClient
    room: str
    puppet: str


@dataclass
class Pair:
    alice: AdvisorClient
    bob: AdvisorClient
    room: str


@dataclass
class Result:
    messages: int
    delivered: int
    seconds: float
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds else math.nan


async def _stream(count: int, prefix: str, send: Callable[[str], Awaitable[Any]]) -> str:
    body = ""
    for j in range(count):
        body = f"{prefix} {j:04d}"
        await send(body)
    return body


async def switchboard_run(conversations: list[Conversation], count: int, timeout: float) -> Result:
    run_tag = tag()
    began = time.perf_counter()

    async def visitor_stream(i: int, c: Conversation) -> None:
        prefix = f"v2a {run_tag} {i}"
        last = await _stream(count, prefix, c.visitor.say)
        await c.advisor.wait_for_message(c.room, last, timeout=timeout)

    async def advisor_stream(i: int, c: Conversation) -> None:
        prefix = f"a2v {run_tag} {i}"

        async def send(body: str) -> str:
            return await c.advisor.send_text(c.room, body)

        last = await _stream(count, prefix, send)
        await c.visitor.wait_for(
            lambda f: f.get("type") == "message" and f["message"]["body"] == last,
            timeout=timeout,
            what=f"message {last!r}",
        )

    await asyncio.gather(
        *(visitor_stream(i, c) for i, c in enumerate(conversations)),
        *(advisor_stream(i, c) for i, c in enumerate(conversations)),
    )
    seconds = time.perf_counter() - began
    delivered = 0
    for i, c in enumerate(conversations):
        delivered += len(
            {
                body
                for sender, body, _ in c.advisor.messages(c.room)
                if sender == c.puppet and body.startswith(f"v2a {run_tag} {i} ")
            }
        )
        delivered += len(
            {
                m["body"]
                for m in c.visitor.messages()
                if m["sender"] == "advisor" and m["body"].startswith(f"a2v {run_tag} {i} ")
            }
        )
    return Result(2 * count * len(conversations), delivered, seconds)


async def direct_run(pairs: list[Pair], count: int, timeout: float) -> Result:
    run_tag = tag()
    began = time.perf_counter()

    async def stream(prefix: str, sender: AdvisorClient, receiver: AdvisorClient, room: str):
        async def send(body: str) -> str:
            return await sender.send_text(room, body)

        last = await _stream(count, prefix, send)
        await receiver.wait_for_message(room, last, timeout=timeout)

    await asyncio.gather(
        *(stream(f"ab {run_tag} {i}", p.alice, p.bob, p.room) for i, p in enumerate(pairs)),
        *(stream(f"ba {run_tag} {i}", p.bob, p.alice, p.room) for i, p in enumerate(pairs)),
    )
    seconds = time.perf_counter() - began
    delivered = 0
    for i, p in enumerate(pairs):
        for receiver, sender, prefix in ((p.bob, p.alice, "ab"), (p.alice, p.bob, "ba")):
            delivered += len(
                {
                    body
                    for who, body, _ in receiver.messages(p.room)
                    if who == sender.user_id and body.startswith(f"{prefix} {run_tag} {i} ")
                }
            )
    return Result(2 * count * len(pairs), delivered, seconds)


async def bench(args: argparse.Namespace, lab: Lab) -> None:
    n = args.conversations
    switchboard = await lab.remote_switchboard(capacity=args.capacity)
    advisors = [
        await lab.advisor(switchboard, f"adv{k}") for k in range(math.ceil(n / args.capacity))
    ]
    conversations: list[Conversation] = []
    for i in range(n):
        visitor = await lab.visitor(switchboard)
        started = await visitor.start(name=f"Visitor {i}", message=f"hello from {i}")
        await visitor.connect()
        stored = await lab.offered(switchboard, started["conversation"]["id"])
        assert stored["puppet"], stored
        advisor = next(a for a in advisors if a.user_id == stored["advisor"])
        room_id: str = stored["room_id"]
        await advisor.wait_for_invite(partial(operator.eq, room_id))
        await advisor.join(room_id)
        await visitor.wait_status("active")
        conversations.append(Conversation(visitor, advisor, room_id, stored["puppet"]))

    pairs: list[Pair] = []
    for i in range(n):
        alice, bob = await lab.client(f"alice{i}"), await lab.client(f"bob{i}")
        room = await alice.create_room(invite=[bob.user_id])
        await bob.wait_for_invite(partial(operator.eq, room))
        await bob.join(room)
        await alice.wait_for_member(room, bob.user_id, "join")
        pairs.append(Pair(alice, bob, room))

    # warm-up: a few messages per stream on both paths, not measured
    await direct_run(pairs, 3, args.timeout)
    await switchboard_run(conversations, 3, args.timeout)

    meter = CpuMeter({"Synapse": lab.synapse_pid, "Switchboard": switchboard.pid, "clients": None})
    results: dict[str, list[Result]] = {"direct": [], "switchboard": []}
    for kind in ("direct", "switchboard", "switchboard", "direct"):
        meter.start()
        if kind == "direct":
            result = await direct_run(pairs, args.messages, args.timeout)
        else:
            result = await switchboard_run(conversations, args.messages, args.timeout)
        result.cpu = meter.stop()
        results[kind].append(result)
        busy = ", ".join(f"{k} {v / result.seconds:.0%}" for k, v in result.cpu.items())
        print(
            f"  {kind:<11} {result.delivered}/{result.messages} messages in "
            f"{result.seconds:.1f} s = {result.rate:.1f} msg/s (CPU of a core: {busy})"
        )

    def pooled(kind: str) -> Result:
        rs = results[kind]
        return Result(
            sum(r.messages for r in rs),
            sum(r.delivered for r in rs),
            sum(r.seconds for r in rs),
            {k: sum(r.cpu[k] for r in rs) for k in rs[0].cpu},
        )

    direct, through = pooled("direct"), pooled("switchboard")
    share = ratio(through.rate, direct.rate)
    print(
        f"\n{n} concurrent conversations (both directions streaming, {args.messages} messages "
        f"per stream per run, {len(advisors)} advisors) vs {n} direct client pairs; "
        "2 runs each, ABBA order.\n"
    )
    print(
        table(
            ["path", "messages", "delivered", "seconds", "msg/s", "vs direct"],
            [
                [
                    "direct (nio ↔ nio)",
                    direct.messages,
                    direct.delivered,
                    direct.seconds,
                    direct.rate,
                    "1.00",
                ],
                [
                    "Switchboard",
                    through.messages,
                    through.delivered,
                    through.seconds,
                    through.rate,
                    f"{share:.2f}",
                ],
            ],
        )
    )
    print("\nCPU milliseconds per delivered message, by process:\n")
    print(
        table(
            ["path", *direct.cpu],
            [
                [label, *(1000 * v / r.delivered for v in r.cpu.values())]
                for label, r in (("direct (nio ↔ nio)", direct), ("Switchboard", through))
            ],
        )
    )
    lost = through.messages - through.delivered + direct.messages - direct.delivered
    print(
        f"\nthroughput {share:.0%} of direct (target ≥ {TARGET:.0%}) {verdict(share >= TARGET)}"
        + (f"; {lost} messages not delivered" if lost else "; nothing lost")
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.throughput", description=__doc__)
    parser.add_argument("--conversations", type=int, default=10, help="N")
    parser.add_argument(
        "--messages", type=int, default=30, help="messages per stream per run (2 streams each)"
    )
    parser.add_argument("--capacity", type=int, default=3, help="visitors per advisor")
    parser.add_argument("--timeout", type=float, default=120.0)
    return run(bench, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
