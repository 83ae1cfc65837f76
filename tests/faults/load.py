"""A bounded chat load for fault tests: visitors and advisors talking both ways while something
breaks, then an account of every message: sent, delivered, lost, doubled.

Senders behave like real clients: a visitor's page retries a message with the same client id
until the portal stores it; an advisor's client retries with the same transaction id until the
homeserver accepts it. Receivers are read after the dust settles: the advisor's room timeline,
and the visitor's history from the portal (what a reload shows) plus every websocket frame.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from harness.advisor import AdvisorClient
from harness.visitor import Visitor

RETRY_PAUSE = 0.2


@dataclass
class Account:
    direction: str
    sent: int = 0
    delivered: int = 0
    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    out_of_order: int = 0

    def row(self) -> str:
        return (
            f"{self.direction:<18} sent {self.sent:>4}  delivered {self.delivered:>4}  "
            f"lost {len(self.lost):>3}  doubled {len(self.doubled):>3}  "
            f"out of order {self.out_of_order:>3}"
        )


@dataclass
class Chat:
    visitor: Visitor
    advisor: AdvisorClient
    room: str
    tag: str
    visitor_sent: list[str] = field(default_factory=list)
    advisor_sent: list[str] = field(default_factory=list)


class ChatLoad:
    def __init__(self, portal_url: str, deadline: float = 60.0) -> None:
        self.portal_url = portal_url
        self.chats: list[Chat] = []
        self.deadline = time.monotonic() + deadline
        self.retries = 0  # sends that failed and were tried again: proof the fault hit the load

    async def open(self, people: Any, advisors: list[AdvisorClient], visitors: int) -> None:
        """Start ``visitors`` conversations one by one; whichever advisor is invited accepts."""
        seen: set[str] = set()
        for i in range(visitors):
            visitor = await Visitor(self.portal_url).open()
            people.visitors.append(visitor)
            await visitor.start(name=f"Load {i}", message=f"load-{i} opens")
            waits = {
                asyncio.create_task(a.wait_for_invite(lambda r: r not in seen, timeout=15)): a
                for a in advisors
            }
            done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            task = done.pop()
            advisor, room = waits[task], task.result()
            seen.add(room)
            await advisor.join(room)
            await visitor.connect()
            await visitor.wait_status("active")
            self.chats.append(Chat(visitor, advisor, room, f"load-{i}"))

    async def _visitor_send(self, chat: Chat, body: str) -> None:
        client_id = uuid.uuid4().hex
        chat.visitor_sent.append(body)
        while time.monotonic() < self.deadline:
            try:
                status, _ = await chat.visitor.post(
                    "/api/conversation/messages", {"client_id": client_id, "body": body}
                )
                if status == 201:
                    return
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE)

    async def _advisor_send(self, chat: Chat, body: str) -> None:
        txn = uuid.uuid4().hex
        chat.advisor_sent.append(body)
        content = {"msgtype": "m.text", "body": body}
        while time.monotonic() < self.deadline:
            try:
                response = await chat.advisor.client.room_send(
                    chat.room, "m.room.message", content, tx_id=txn
                )
                if getattr(response, "event_id", None):
                    return
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass
            self.retries += 1
            await asyncio.sleep(RETRY_PAUSE)

    async def exchange(self, messages: int, pause: float = 0.05) -> None:
        """Every chat sends ``messages`` each way, interleaved."""

        async def one(chat: Chat) -> None:
            for i in range(messages):
                await self._visitor_send(chat, f"{chat.tag} v{i}")
                await self._advisor_send(chat, f"{chat.tag} a{i}")
                await asyncio.sleep(pause)

        await asyncio.gather(*(one(chat) for chat in self.chats))

    async def settle(self, timeout: float = 30) -> None:
        """Wait until every sent message has arrived (or the timeout passes)."""
        end = time.monotonic() + timeout
        for chat in self.chats:
            for body in chat.visitor_sent:
                await chat.advisor.wait_for_message(
                    chat.room,
                    lambda e, b=body: e.body == b,
                    timeout=max(0.1, end - time.monotonic()),
                )
            await chat.visitor.wait_for(
                lambda f, b=chat.advisor_sent[-1]: f.get("type") == "message"
                and f["message"]["body"] == b,
                timeout=max(0.1, end - time.monotonic()),
                what=f"the last advisor message of {chat.tag}",
            )

    async def account(self) -> list[Account]:
        to_advisor, to_visitor = Account("visitor → advisor"), Account("advisor → visitor")
        for chat in self.chats:
            in_room = [b for _, b, _ in chat.advisor.messages(chat.room)]
            _count(to_advisor, chat.visitor_sent, in_room)
            history = await chat.visitor.history()
            stored = [m["body"] for m in history["messages"] if m["sender"] == "advisor"]
            _count(to_visitor, chat.advisor_sent, stored)
            seqs = [m["seq"] for m in history["messages"]]
            assert seqs == list(range(1, len(seqs) + 1)), f"gaps in {chat.tag}: {seqs}"
        return [to_advisor, to_visitor]


def _count(account: Account, sent: list[str], received: list[str]) -> None:
    account.sent += len(sent)
    mine = [b for b in received if b in set(sent)]
    for body in sent:
        n = mine.count(body)
        if n == 0:
            account.lost.append(body)
        elif n > 1:
            account.doubled.append(body)
        account.delivered += min(n, 1)
    order = [b for b in mine if b in sent]
    account.out_of_order += sum(
        1 for x, y in zip(order, order[1:], strict=False) if sent.index(x) > sent.index(y)
    )


def report(title: str, accounts: list[Account]) -> None:
    print(f"\n{title}")
    for account in accounts:
        print("  " + account.row())


def assert_nothing_lost_or_doubled(accounts: list[Account]) -> None:
    for account in accounts:
        assert account.sent > 0
        assert not account.lost, f"{account.direction}: lost {account.lost}"
        assert not account.doubled, f"{account.direction}: doubled {account.doubled}"
        assert account.out_of_order == 0, f"{account.direction}: out of order"


def report_unsent(synapse_db: Path) -> None:
    """Print the transactions Synapse still holds for the appservice (its SQLite database).

    One held while the appservice is marked up is never sent until the next failed push: Synapse
    stores a transaction without sending it when it sees the service down, and its recoverer can
    declare the service up just after its last look for stored ones (seen after a SIGKILL)."""
    with sqlite3.connect(f"file:{synapse_db}?mode=ro", uri=True) as db:
        states = db.execute("SELECT as_id, state FROM application_services_state").fetchall()
        held = db.execute(
            "SELECT txn_id, event_ids FROM application_services_txns ORDER BY txn_id"
        ).fetchall()
        bodies = []
        for txn_id, event_ids in held:
            for event_id in json.loads(event_ids):
                row = db.execute(
                    "SELECT json FROM event_json WHERE event_id = ?", (event_id,)
                ).fetchone()
                content = json.loads(row[0]).get("content", {}) if row else {}
                bodies.append((txn_id, event_id, content.get("body") or content.get("membership")))
    print(f"appservice state {states}; transactions Synapse holds: {bodies or 'none'}")
