"""Switchboard in its own process for the benchmarks, driven over stdin/stdout (JSON lines).

    python -m bench.runner --config <lab>/config.yaml --settings '{"database": ..., ...}'

Builds the config the way :func:`bench.common.configure` does, starts :class:`Switchboard`,
prints ``{"ready": true, "pid": …}`` and then answers one JSON line per request line:

- ``{"op": "add_advisor", "mxid", "name", "capacity"}``: add, set capacity, make available.
- ``{"op": "conversation", "id"}``: the stored conversation's status, room, advisor, puppet.
- ``{"op": "seed_idle", "count", "state"}``: insert ``count`` visitors, each with a portal
  session (answered: the cookie values) and a conversation, straight through the store in one
  transaction: no Matrix traffic. ``state`` is ``active`` (an advisor is "in" a made-up room,
  so housekeeping leaves it alone) or ``ended``.
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
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from appservice.bootstrap import Switchboard
from appservice.config import load
from bridge.model import (
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    PuppetMxid,
    RoomId,
    Sender,
    Visitor,
    VisitorId,
)
from web_portal.security import Sessions

from .settings import configure, raise_open_files_limit
from .stdio import serve_requests

log = logging.getLogger("bench.runner")


async def seed_idle(switchboard: Switchboard, count: int, state: str) -> dict[str, Any]:
    began = time.perf_counter()
    # sessions issued the portal's way, with its secret, so its cookie check accepts them
    portal = switchboard.config.portal
    sessions = Sessions(portal.secret.encode(), portal.public_url.startswith("https:"))
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


async def handle(switchboard: Switchboard, request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "add_advisor":
        mxid = request["mxid"]
        await switchboard.advisors.add(mxid, request.get("name"))
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
    if op == "ping":
        return {"ok": True}
    return {"error": f"unknown op {op!r}"}


async def serve(args: argparse.Namespace) -> None:
    raise_open_files_limit()
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
