"""Homeserver requests and room events per conversation: Switchboard vs the protocol minimum.

One conversation, the way the portal page and an advisor's client drive it:

1. the visitor submits the pre-chat form (with a first message) and opens the websocket;
2. the advisor accepts the invite;
3. 10 times: the visitor types (typing on), sends (the page turns typing off as it sends), the
   advisor reads it (receipt), types and answers; the visitor's page reports it read the answer;
4. the visitor presses "End chat".

Counted: every HTTP request Switchboard makes to the homeserver (an ``aiohttp.TraceConfig`` on
the ``ClientSession`` mautrix uses, ``Switchboard._http``; retries count), the transactions the
homeserver pushes to Switchboard, and the room's events as the advisor sees them afterwards
(``GET /rooms/{room}/messages`` from the start). The minimum is worked out by hand below
(``MINIMUM_REQUESTS``, ``MINIMUM_EVENTS``), one line per request or event with the reason it is
needed. The requests up to the advisor's invite are also listed in the order they were made,
against the fewest that must come first (``MINIMUM_BEFORE_INVITE``): in a burst of visitors
the homeserver is the bottleneck, and each of them delays the invite. The homeserver ping
Switchboard makes on a timer is left out (it is not per conversation). Switchboard runs in
this process here (the counter needs its session); no timing is measured.

    .venv/bin/python -m bench.requests_per_conversation [--messages 10]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import traceback
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import aiohttp

from appservice.bootstrap import Switchboard

from .common import REPO, Lab, ratio, run, table, tag

# The fewest requests Switchboard itself must make to the homeserver for this scenario, with
# N = --messages. Keys are the labels RequestCounter gives (method, path template, who).
# The advisor's messages, receipts and typing reach Switchboard pushed by the homeserver
# (transactions), so relaying them to the visitor costs no request at all.
MINIMUM_REQUESTS: list[tuple[str, str, str]] = [
    # (label, count as an expression of N, why)
    (
        "POST /register (puppet)",
        "1",
        "the visitor must exist as a Matrix user (appservice " "registration)",
    ),
    (
        "PUT /profile/{user}/displayname (puppet)",
        "1",
        "'<name> (visitor)' in the advisor's " "client; registration cannot set it",
    ),
    (
        "POST /createRoom (bot)",
        "1",
        "one call: private preset, name, topic, history and guest "
        "state, power levels, the puppet invited; the bot owns the room (a v12 creator cannot be "
        "demoted, so the puppet must not be it)",
    ),
    ("POST /rooms/{room}/join (puppet)", "1", "an invite has to be accepted"),
    (
        "PUT /rooms/{room}/send/m.room.message/{txn} (bot)",
        "1",
        "the form's answers (name, " "email, topic) for the advisor",
    ),
    (
        "PUT /rooms/{room}/send/m.room.message/{txn} (puppet)",
        "1 + N",
        "the form's first " "message, then each visitor message",
    ),
    ("POST /rooms/{room}/invite (bot)", "1", "offering the visitor to the routed advisor"),
    (
        "PUT /rooms/{room}/typing/{user} (puppet)",
        "2 * N",
        "the page sends typing on, then off " "as it sends each message",
    ),
    (
        "POST /rooms/{room}/read_markers (puppet)",
        "N",
        "the page reports each advisor reply "
        "read: one receipt each (POST /receipt would do as well)",
    ),
    (
        "POST /rooms/{room}/leave (puppet)",
        "1",
        "'End chat': the advisor's client shows the " "visitor left",
    ),
]

# The fewest events the room needs, as the advisor sees it: what createRoom writes for a
# private room in any case, the memberships, the messages. Typing and receipts are not room
# events (EDUs).
MINIMUM_EVENTS: list[tuple[str, str, str]] = [
    ("m.room.create", "1", "createRoom"),
    ("m.room.member join (bot)", "1", "createRoom: the creator joins"),
    ("m.room.power_levels", "1", "createRoom"),
    ("m.room.join_rules", "1", "createRoom, private preset (invite only)"),
    (
        "m.room.history_visibility",
        "1",
        "createRoom, private preset ('shared': the advisor "
        "sees what was said before they joined)",
    ),
    ("m.room.guest_access", "1", "createRoom, private preset"),
    ("m.room.member invite (puppet)", "1", "the bot invites the puppet"),
    ("m.room.member join (puppet)", "1", "the puppet joins"),
    ("m.room.message (bot)", "1", "the form's answers"),
    ("m.room.message (puppet)", "1 + N", "first message, then the visitor's messages"),
    ("m.room.member invite (advisor)", "1", "the offer"),
    ("m.room.member join (advisor)", "1", "the advisor accepts"),
    ("m.room.message (advisor)", "N", "the advisor's answers"),
    ("m.room.member leave (puppet)", "1", "'End chat'"),
]


# The fewest of those requests that must come before the advisor's client can see the invite,
# in order. The advisor is chosen once the room exists (a routing pass offers visitors who
# have one), so the invite is a request of its own after createRoom.
MINIMUM_BEFORE_INVITE: list[tuple[str, str]] = [
    ("POST /register (puppet)", "the puppet is invited to the room, so it must exist"),
    (
        "PUT /profile/{user}/displayname (puppet)",
        "before createRoom: the puppet's invite event shows its name",
    ),
    ("POST /createRoom (bot)", "the room, the puppet invited"),
    ("POST /rooms/{room}/invite (bot)", "the offer"),
]
INVITE = MINIMUM_BEFORE_INVITE[-1][0]

# Requests Switchboard makes on a timer whatever the conversations do; left out of the counts.
HOUSEKEEPING = {"ping": "the homeserver ping every 5 s (resets its push back-off)"}

# What the extras are, where it is not obvious from the label.
EXTRA_NOTES = {
    "m.room.name": "not needed: createRoom's name ('<name> (visitor)'); clients would name the "
    "room after the puppet's display name anyway. No extra request.",
    "m.room.topic": "not needed: createRoom's topic (the visitor's topic). No extra request.",
}


class RequestCounter:
    """Counts the requests made through one aiohttp session, by method, path and actor."""

    def __init__(self, bot_mxid: str) -> None:
        self.bot_mxid = bot_mxid
        self.counts: Counter[str] = Counter()
        self.order: list[str] = []  # every counted request's label, as made
        self.housekeeping = 0
        # label -> which line of Switchboard's own code made those requests, how often
        self.origins: dict[str, Counter[str]] = {}
        self.enabled = False

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def on_request_start(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestStartParams,
        ) -> None:
            if self.enabled:
                label = self.label(params.method, params.url)
                if label.startswith("POST /appservice/") and "/ping " in label:
                    self.housekeeping += 1
                    return
                self.counts[label] += 1
                self.order.append(label)
                self.origins.setdefault(label, Counter())[caller()] += 1

        config.on_request_start.append(on_request_start)
        config.freeze()
        return config

    def label(self, method: str, url: Any) -> str:
        path = url.raw_path
        for prefix in ("/_matrix/client/v3", "/_matrix/client/r0", "/_matrix/client/v1"):
            if path.startswith(prefix):
                path = path[len(prefix) :]
                break
        parts = [unquote(p) for p in path.split("/")]
        out = []
        for i, part in enumerate(parts):
            if part.startswith("!"):
                part = "{room}"
            elif part.startswith("@"):
                part = "{user}"
            elif part.startswith("$"):
                part = "{event}"
            elif i >= 2 and parts[i - 2] == "send":
                part = "{txn}"
            out.append(part)
        actor = url.query.get("user_id", self.bot_mxid)
        who = "bot" if actor == self.bot_mxid else "puppet"
        return f"{method} {'/'.join(out)} ({who})"


def caller() -> str:
    """Where in Switchboard's own code (not mautrix's) the current request comes from: the
    innermost core frame (the use case) and the innermost adapter frame (the gateway)."""
    stack = traceback.extract_stack()

    def innermost(folder: str) -> str | None:
        for frame in reversed(stack):
            if frame.filename.startswith(str(REPO / folder)):
                return f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno} {frame.name}"
        return None

    return " → ".join(f for f in (innermost("bridge"), innermost("appservice")) if f) or "?"


def minimum(expression: str, n: int) -> int:
    return int(eval(expression, {"N": n}))  # the expressions are the constants above


async def room_events(homeserver: str, token: str, room: str) -> list[dict[str, Any]]:
    """Every event of the room from its creation, as this user may see it."""
    events: list[dict[str, Any]] = []
    params = {"dir": "f", "limit": "1000"}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            async with http.get(
                f"{homeserver}/_matrix/client/v3/rooms/{room}/messages", params=params
            ) as response:
                response.raise_for_status()
                page = await response.json()
            events.extend(page.get("chunk", []))
            if not page.get("chunk") or "end" not in page:
                return events
            params["from"] = page["end"]


def event_label(event: dict[str, Any], bot: str, advisor: str) -> str:
    kind = event["type"]

    def who(user: str) -> str:
        return "bot" if user == bot else "advisor" if user == advisor else "puppet"

    if kind == "m.room.member":
        membership = event.get("content", {}).get("membership")
        return f"m.room.member {membership} ({who(event['state_key'])})"
    if kind == "m.room.message":
        return f"m.room.message ({who(event['sender'])})"
    return kind


async def settle(counter: RequestCounter, switchboard: Switchboard, quiet: float = 2.0) -> None:
    """Wait until neither Switchboard's requests nor the homeserver's pushes change for a while
    (echoes of the last events are still on their way when the scenario ends)."""
    last = (-1, -1)
    stable_since = time.perf_counter()
    while time.perf_counter() - stable_since < quiet:
        now = (len(counter.order), switchboard.endpoint.transactions_handled)
        if now != last:
            last, stable_since = now, time.perf_counter()
        await asyncio.sleep(0.1)


async def bench(args: argparse.Namespace, lab: Lab) -> None:
    n = args.messages
    switchboard = await lab.switchboard()
    assert switchboard._http is not None
    counter = RequestCounter(switchboard.config.bot_mxid)
    # Switchboard builds its session in start(); a trace config added afterwards still sees
    # every request (aiohttp reads the list per request)
    switchboard._http.trace_configs.append(counter.trace_config())
    ana = await lab.advisor(switchboard, "ana")
    vera = await lab.visitor(switchboard)
    await settle(counter, switchboard, 1.0)

    counter.enabled = True
    transactions_before = switchboard.endpoint.transactions_handled
    started = await vera.start(message=f"first {tag()}")
    await vera.connect()
    stored = await lab.offered(switchboard, started["conversation"]["id"])
    room = await ana.wait_for_invite(lambda r: r == stored["room_id"])
    await ana.join(room)
    await vera.wait_status("active")
    for i in range(n):
        status, _ = await vera.post("/api/conversation/typing", {"typing": True})
        assert status == 204
        status, _ = await vera.post("/api/conversation/typing", {"typing": False})
        assert status == 204
        said = f"visitor {i} {tag()}"
        await vera.say(said)
        event = await ana.wait_for_message(room, said)
        await ana.send_read_receipt(room, event.event_id)
        await ana.set_typing(room, True)
        answer = f"advisor {i} {tag()}"
        await ana.send_text(room, answer)
        message = await vera.wait_message(answer)
        status, _ = await vera.post("/api/conversation/read", {"up_to": message["seq"]})
        assert status == 204
    status, _ = await vera.post("/api/conversation/end", {})
    assert status == 200
    await ana.wait_for_member(room, stored["puppet"], "leave")
    await settle(counter, switchboard)
    counter.enabled = False
    transactions = switchboard.endpoint.transactions_handled - transactions_before

    events = await room_events(lab.server.url, ana.client.access_token, room)
    seen = Counter(event_label(e, switchboard.config.bot_mxid, ana.user_id) for e in events)

    def breakdown(
        observed: Counter[str],
        wanted: list[tuple[str, str, str]],
        origins: dict[str, Counter[str]],
    ) -> tuple[list[list[Any]], int, int]:
        def where(label: str) -> str:
            made_by = origins.get(label)
            if not made_by:
                return ""
            return " [made by " + "; ".join(f"{k} ×{v}" for k, v in made_by.items()) + "]"

        rows: list[list[Any]] = []
        total_min = 0
        for label, expression, why in wanted:
            least = minimum(expression, n)
            total_min += least
            got = observed.get(label, 0)
            extra = "" if got == least else f"{got - least:+d}"
            rows.append([label, got, least, extra, why + (where(label) if extra else "")])
        for label, got in sorted(observed.items()):
            if label not in {w[0] for w in wanted}:
                note = EXTRA_NOTES.get(label, "not needed")
                rows.append([label, got, 0, f"+{got}", note + where(label)])
        return rows, sum(observed.values()), total_min

    print(
        f"\nOne conversation: open, {n} messages each way (with typing and read receipts), "
        "the visitor ends it.\n"
    )
    request_rows, requests, requests_min = breakdown(
        counter.counts, MINIMUM_REQUESTS, counter.origins
    )
    print("Requests Switchboard made to the homeserver:\n")
    print(table(["request (as)", "Switchboard", "minimum", "extra", "why"], request_rows))
    if counter.housekeeping:
        print(
            f"(and {counter.housekeeping} × POST /appservice/{{id}}/ping, not counted: "
            f"{HOUSEKEEPING['ping']})"
        )
    before_invite = counter.order[: counter.order.index(INVITE) + 1]
    print("\nRequests up to the advisor's invite, in order:\n")
    print(
        table(
            ["#", "Switchboard", "minimum", "why"],
            [
                [
                    i + 1,
                    before_invite[i] if i < len(before_invite) else "",
                    *(MINIMUM_BEFORE_INVITE[i] if i < len(MINIMUM_BEFORE_INVITE) else ("", "")),
                ]
                for i in range(max(len(before_invite), len(MINIMUM_BEFORE_INVITE)))
            ],
        )
    )
    event_rows, event_count, events_min = breakdown(seen, MINIMUM_EVENTS, {})
    print("\nEvents in the room, as the advisor's client sees them:\n")
    print(table(["event (sender/target)", "Switchboard", "minimum", "extra", "why"], event_rows))
    print()
    print(
        table(
            ["per conversation", "Switchboard", "minimum", "ratio"],
            [
                [
                    "homeserver requests",
                    requests,
                    requests_min,
                    f"{ratio(requests, requests_min):.2f}",
                ],
                [
                    "requests before the invite",
                    len(before_invite),
                    len(MINIMUM_BEFORE_INVITE),
                    f"{ratio(len(before_invite), len(MINIMUM_BEFORE_INVITE)):.2f}",
                ],
                ["room events", event_count, events_min, f"{ratio(event_count, events_min):.2f}"],
                ["transactions pushed to Switchboard", transactions, "n/a", ""],
            ],
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.requests_per_conversation", description=__doc__
    )
    parser.add_argument("--messages", type=int, default=10, help="messages each way (N)")
    return run(bench, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
