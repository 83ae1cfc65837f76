"""Switchboard in its own process for the benchmarks, driven over stdin/stdout (JSON lines).

    python -m bench.runner --config <lab>/config.yaml --settings '{"database": ..., ...}'

Builds the config the way :func:`bench.common.configure` does, starts :class:`Switchboard`,
prints ``{"ready": true, "pid": …}`` and then answers one JSON line per request line:

- ``{"op": "add_advisor", "mxid", "name", "capacity"}``: add (without the bot's welcome chat),
  set capacity, make available.
- ``{"op": "conversation", "id"}``: the stored conversation's status, room, advisor, puppet.
- ``{"op": "seed_idle", "count", "state"}``: insert ``count`` visitors, each with a portal
  session (answered: the cookie values) and a conversation, straight through the store in one
  transaction: no Matrix traffic. ``state`` is ``active`` (an advisor is "in" a made-up room,
  so housekeeping leaves it alone) or ``ended``.
- ``{"op": "seed_open", "count", "mix"}``: insert ``count`` open conversations (waiting,
  inviting and active in the proportions ``mix``, e.g. ``[1, 1, 1]``) straight through the store
  in one transaction, with just enough advisors (available, online) to hold the inviting and
  active ones at full capacity: nobody is free, so routing can offer nobody. Each inviting
  conversation gets the one outbox row a real installation holds for it, its ``OfferExpires``
  timer (due at its deadline, after the run); nothing else is pending. Answered: how long it
  took, the advisors made, and the conversations and outbox rows stored, by state.
- ``{"op": "sql"}``: the SQL statements run so far, by text (only with ``--count-sql``, which
  wraps mautrix's connection methods: ``bench/sqlcount.py``).
- ``{"op": "stop"}`` (or end of input): ``Switchboard.stop()`` and exit.

Logs go to stderr; stdout carries only the answers.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import logging
import math
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from appservice.bootstrap import Switchboard
from appservice.config import load
from bridge.events import OfferExpires
from bridge.model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    Presence,
    PuppetMxid,
    RoomId,
    Sender,
    Visitor,
    VisitorId,
)
from web_portal.security import Sessions

from . import sqlcount
from .settings import configure, raise_open_files_limit
from .stdio import serve_requests

log = logging.getLogger("bench.runner")


async def seed_idle(switchboard: Switchboard, count: int, state: str) -> dict[str, Any]:
    began = time.perf_counter()
    # sessions issued the portal's way, with its secret, so its cookie check accepts them
    portal = switchboard.config.portal
    sessions = Sessions.of(portal.secret, portal.public_url.startswith("https:"))
    tokens = [sessions.issue(web.Response()) for _ in range(count)]
    domain = switchboard.config.homeserver.domain
    now = time.time()
    status = ConversationStatus.ACTIVE if state == "active" else ConversationStatus.ENDED
    async with switchboard.store.transaction():
        for i in range(count):
            visitor = Visitor(VisitorId(f"idle{i:08d}"), f"Idle visitor {i}", None, now)
            await switchboard.store.add_visitor(visitor, sessions.session_hash(tokens[i]))
            conversation = Conversation(
                id=ConversationId(uuid.uuid4().hex),
                visitor_id=visitor.id,
                topic="general",
                status=status,
                created_at=now,
                queued_at=now,
                puppet=PuppetMxid(switchboard.config.puppet_mxid(visitor.id)),
                room_id=RoomId(f"!idle{i:08d}:{domain}"),
                advisor=AdvisorMxid(f"@idle-advisor-{i // 3}:{domain}"),
                ended_at=now if status is ConversationStatus.ENDED else None,
                ended_by=Sender.VISITOR if status is ConversationStatus.ENDED else None,
            )
            if not await switchboard.store.add_conversation(conversation):
                # the "ended" check refuses an ended newcomer; save it outright
                await switchboard.store.save_conversation(conversation)
    gc.collect()
    return {"tokens": tokens, "seconds": time.perf_counter() - began}


async def seed_open(switchboard: Switchboard, count: int, mix: list[int]) -> dict[str, Any]:
    began = time.perf_counter()
    config = switchboard.config
    store = switchboard.store
    domain = config.homeserver.domain
    capacity = config.routing.capacity
    now = time.time()
    deadline = now + config.routing.invite_timeout
    shares = [count * m // sum(mix) for m in mix]
    shares[0] += count - sum(shares)  # the rounding goes to the waiting
    statuses = (
        [ConversationStatus.WAITING] * shares[0]
        + [ConversationStatus.INVITING] * shares[1]
        + [ConversationStatus.ACTIVE] * shares[2]
    )
    held = shares[1] + shares[2]
    team = [
        AdvisorMxid(f"@busy-advisor-{k:05d}:{domain}") for k in range(math.ceil(held / capacity))
    ]
    timers: list[OfferExpires] = []
    async with store.transaction():
        for k, mxid in enumerate(team):
            load = min(capacity, held - k * capacity)  # the last one is full at what it holds
            await store.save_advisor(
                Advisor(
                    mxid=mxid,
                    available=True,
                    presence=Presence.ONLINE,
                    capacity=None if load == capacity else load,
                    display_name=f"Busy advisor {k}",
                )
            )
        for i, status in enumerate(statuses):
            visitor = Visitor(VisitorId(f"open{i:08d}"), f"Open visitor {i}", None, now)
            await store.add_visitor(visitor, f"open-session-{i:08d}")
            advisor = (
                team[(i - shares[0]) // capacity]
                if status is not ConversationStatus.WAITING
                else None
            )
            conversation = Conversation(
                id=ConversationId(uuid.uuid4().hex),
                visitor_id=visitor.id,
                topic="general",
                status=status,
                created_at=now + i * 1e-3,
                queued_at=now + i * 1e-3,
                puppet=PuppetMxid(config.puppet_mxid(visitor.id)),
                room_id=RoomId(f"!open{i:08d}:{domain}"),
                advisor=advisor,
                invite_deadline=deadline if status is ConversationStatus.INVITING else None,
                version={"waiting": 1, "inviting": 2, "active": 3}[status.value],
            )
            await store.save_conversation(conversation)
            if status is ConversationStatus.INVITING:
                assert advisor is not None
                timers.append(
                    OfferExpires(conversation.id, advisor, conversation.version, deadline)
                )
        await store.outbox.add(timers, now)
    seconds = time.perf_counter() - began
    gc.collect()
    return {"seconds": seconds, "advisors": len(team), **await stored_state(switchboard)}


async def stored_state(switchboard: Switchboard) -> dict[str, Any]:
    """The conversations by status and the outbox rows by kind and state."""
    db = switchboard.store.db
    rows = await db.fetch("SELECT status, COUNT(*) AS n FROM conversations GROUP BY status")
    outbox = await db.fetch(
        "SELECT kind, state, COUNT(*) AS n, MIN(due_at) AS due FROM outbox GROUP BY kind, state"
    )
    now = time.time()
    return {
        "conversations": {row["status"]: row["n"] for row in rows},
        "outbox": {
            f"{row['kind']} {row['state']}": {"rows": row["n"], "first due in": row["due"] - now}
            for row in outbox
        },
    }


async def handle(switchboard: Switchboard, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "add_advisor":
        mxid = request["mxid"]
        # no welcome chat: a one-time setup, not what a benchmark measures
        await switchboard.advisors.add(mxid, request.get("name"), welcome=False)
        if request.get("capacity") is not None:
            await switchboard.advisors.set_capacity(mxid, int(request["capacity"]))
        await switchboard.advisors.set_available(mxid, True)
        return {"ok": True}
    if op == "conversation":
        conversation = await switchboard.store.get_conversation(ConversationId(request["id"]))
        if conversation is None:
            return {"status": None}
        return {
            "status": conversation.status.value,
            "room_id": conversation.room_id,
            "advisor": conversation.advisor,
            "puppet": conversation.puppet,
        }
    if op == "seed_idle":
        return await seed_idle(switchboard, int(request["count"]), request.get("state", "active"))
    if op == "seed_open":
        return await seed_open(switchboard, int(request["count"]), list(request["mix"]))
    if op == "state":
        return await stored_state(switchboard)
    if op == "sql":
        return {"statements": sqlcount.snapshot()}
    if op == "ping":
        return {"ok": True}
    return {"error": f"unknown op {op!r}"}


async def serve(args: argparse.Namespace) -> None:
    raise_open_files_limit()
    if args.count_sql:
        sqlcount.install()
    config = configure(load(Path(args.config)), **json.loads(args.settings))
    switchboard = Switchboard(config)
    await switchboard.start()
    try:
        await serve_requests(functools.partial(handle, switchboard))
    finally:
        await switchboard.stop()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.runner", description=__doc__)
    parser.add_argument("--config", required=True)
    parser.add_argument("--settings", default="{}", help="JSON: keyword arguments of configure()")
    parser.add_argument(
        "--count-sql", action="store_true", help="count every SQL statement (the sql op)"
    )
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("mau", "aiohttp", "alembic", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
