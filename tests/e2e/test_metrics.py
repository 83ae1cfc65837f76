"""/metrics on a real desk: what it counts matches what visitors and advisors did."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Callable

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from appservice.bootstrap import Switchboard
from harness.visitor import FORM

Labels = tuple[tuple[str, str], ...]


class Scrape:
    """One scrape of /metrics: each sample by its name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples[(name, tuple(sorted(labels.items())))]

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self.samples}


async def scrape(desk: Switchboard) -> Scrape:
    metrics = desk.config.metrics
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://{metrics.hostname}:{metrics.port}/metrics") as r:
            assert r.status == 200, await r.text()
            assert r.headers["Content-Type"].startswith("text/plain")
            return Scrape(await r.text())


async def scrape_until(
    desk: Switchboard, done: Callable[[Scrape], bool], what: str, timeout: float = 10
) -> Scrape:
    """Scrape until ``done``: for what the desk finishes after the client has its answer (a
    socket's close, the handler after an invite)."""
    deadline = time.monotonic() + timeout
    while True:
        found = await scrape(desk)
        if done(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s:\n{found.text}")
        await asyncio.sleep(0.05)


async def test_metrics_count_a_conversation_its_refusals_and_its_sockets(desks, people):
    desk = await desks.start(
        portal={
            "starts_per_minute": 1,
            "message_burst": 1,
            "messages_per_minute": 1,
            "typing_burst": 1,
            "typing_per_minute": 1,
        }
    )
    before = await scrape(desk)
    assert before("switchboard_ready") == 1
    assert before("switchboard_visitors_waiting") == 0
    assert before("switchboard_visitor_sockets") == 0
    assert before("switchboard_time_to_invite_seconds_count") == 0
    assert before("switchboard_advisors_available") == 0

    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    started = await vera.start()
    await vera.connect()
    await vera.wait_for(lambda f: f.get("type") == "status")  # subscribed: the backlog came
    room = await ana.wait_for_invite()
    inviting = await scrape(desk)
    assert inviting("switchboard_visitors_waiting") == 1
    assert inviting("switchboard_conversations", status="inviting") == 1
    assert inviting("switchboard_visitor_sockets") == 1
    assert inviting("switchboard_advisors_available") == 1
    assert inviting("switchboard_conversations_started_total") == 1

    await ana.join(room)
    await vera.wait_status("active", advisor_name="Ana")
    await scrape_until(
        desk,
        lambda s: s("switchboard_wait_seconds_count") == 1
        and s("switchboard_time_to_invite_seconds_count") == 1,
        "invite and wait observed",
    )
    # pushes (presence, receipts) may come at any time: the scrape lies between two readings
    handled_before = desk.endpoint.transactions_handled
    active = await scrape(desk)
    handled_after = desk.endpoint.transactions_handled
    assert active("switchboard_time_to_invite_seconds_count") == 1
    assert active("switchboard_visitors_waiting") == 0
    assert active("switchboard_oldest_waiting_seconds") == 0
    assert active("switchboard_conversations", status="active") == 1
    assert active("switchboard_conversations", status="waiting") == 0
    assert active("switchboard_wait_seconds_count") == 1
    # every transaction the homeserver pushed is counted, and timed, as handled
    ok = active("switchboard_appservice_transactions_total", outcome="ok")
    assert 1 <= handled_before <= ok <= handled_after
    assert active("switchboard_appservice_transactions_total", outcome="failed") == 0
    assert active("switchboard_appservice_transaction_seconds_count") == ok

    # each rate limit refuses once, and each refusal is counted by its kind
    other = await people.visitor(desk)
    status, _ = await other.post("/api/conversation", FORM)
    assert status == 429
    await vera.say("One message is allowed.")
    status, _ = await vera.post(
        "/api/conversation/messages", {"client_id": uuid.uuid4().hex, "body": "A second."}
    )
    assert status == 429
    for _ in range(2):
        status, _ = await vera.post("/api/conversation/typing", {"typing": True})
        assert status == 204  # a typing notification over the limit is dropped silently
    refused = await scrape(desk)
    for kind in ("start", "message", "typing"):
        assert refused("switchboard_rate_limited_total", kind=kind) == 1, kind
    assert refused("switchboard_conversations_started_total") == 1

    await vera.disconnect()
    await scrape_until(desk, lambda s: s("switchboard_visitor_sockets") == 0, "socket closed")
    status, _ = await vera.post("/api/conversation/end", {})
    assert status == 200
    await ana.wait_for_message(room, "The visitor ended the chat.")
    ended = await scrape_until(
        desk, lambda s: s("switchboard_outbox_pending_rows") == 0, "outbox drained"
    )
    assert ended("switchboard_conversations", status="active") == 0
    assert ended("switchboard_outbox_parked_rows") == 0
    assert ended("switchboard_time_to_invite_seconds_count") == 1
    assert started["conversation"]["id"]


async def test_metrics_say_not_ready_until_the_desk_serves_and_leave_out_the_database(
    sqlite_desks,
):
    desk = await sqlite_desks.start(ready=False)
    starting = await scrape(desk)
    assert starting("switchboard_ready") == 0
    # the database is not open yet: its numbers are missing, not shown as 0
    assert "switchboard_visitors_waiting" not in starting.names
    assert "switchboard_outbox_parked_rows" not in starting.names
    await desk.become_ready()
    ready = await scrape(desk)
    assert ready("switchboard_ready") == 1
    assert ready("switchboard_visitors_waiting") == 0
    assert ready("switchboard_outbox_parked_rows") == 0
