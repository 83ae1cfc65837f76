"""Switchboard's Prometheus metrics, served on a listener of their own (``metrics`` config).

One :class:`Metrics` per Switchboard, on a registry of its own (never prometheus_client's
global one), so several desks in one process (the tests) do not count into each other.

Three kinds of numbers:

- counted as things happen, in this process: the core's measurements (the
  :class:`~bridge.ports.DeskMetrics` port: time to invite, wait), the appservice's transactions
  and their latency, the portal's rate-limit refusals and started chats;
- read at each scrape from this process: readiness and the visitors' open sockets;
- read at each scrape from the database (:mod:`appservice.db.gauges`): the queue, the outbox,
  the advisors. Every process of a desk that shares PostgreSQL reports the same values: take
  their ``max``, not their ``sum``. Nothing sweeps in between scrapes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from bridge.model import Advisor

from .db.gauges import DeskCounts

log = logging.getLogger(__name__)

# a `_created` series beside every counter and histogram doubles what Prometheus stores, for
# a start time no alert or panel here uses (prometheus_client keeps this switch process-wide)
disable_created_metrics()

#: the outcomes of a transaction the homeserver pushed (label ``outcome``)
TRANSACTION_OUTCOMES = ("ok", "failed", "not_ready", "forbidden", "bad_request")
#: what the portal's per-session and per-address limits refuse (label ``kind``)
REFUSAL_KINDS = ("start", "message", "typing", "search")

#: an invite follows a start within a second when an advisor is free; minutes when none is
INVITE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
WAIT_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
TRANSACTION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

ReadCounts = Callable[[], Awaitable[DeskCounts]]
ReadAdvisors = Callable[[], Awaitable[list[Advisor]]]


class Metrics:
    """The desk's metrics; implements the core's :class:`~bridge.ports.DeskMetrics` port, the
    portal's refusal and start reports and the appservice endpoint's transaction report.

    Args:
        version: Switchboard's version (``switchboard_build_info``).
        not_ready: Why Switchboard is not ready yet, or None (``switchboard_ready``).
        sockets: How many visitors' pages are connected to this process.
        now: Wall-clock seconds (the desk's clock: a test's fake one moves the ages).
    """

    def __init__(
        self,
        version: str,
        not_ready: Callable[[], str | None],
        sockets: Callable[[], int],
        now: Callable[[], float] = time.time,
    ) -> None:
        self.registry = CollectorRegistry()
        self._not_ready = not_ready
        self._sockets = sockets
        self._now = now
        self._read_counts: ReadCounts | None = None
        self._read_advisors: ReadAdvisors | None = None
        r = self.registry
        ProcessCollector(registry=r)
        Info("switchboard_build", "Switchboard's version.", registry=r).info({"version": version})
        self._time_to_invite = Histogram(
            "switchboard_time_to_invite_seconds",
            "Seconds from a visitor's start to each invite sent to an advisor.",
            buckets=INVITE_BUCKETS,
            registry=r,
        )
        self._wait = Histogram(
            "switchboard_wait_seconds",
            "Seconds a visitor waited in the queue until an advisor took the chat.",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self._started = Counter(
            "switchboard_conversations_started",
            "Chats visitors started through this process's portal.",
            registry=r,
        )
        self._transactions = Counter(
            "switchboard_appservice_transactions",
            "Transactions the homeserver pushed, by outcome (failed: answered 500, retried by "
            "the homeserver; not_ready: answered 503 while starting).",
            ["outcome"],
            registry=r,
        )
        self._transaction_seconds = Histogram(
            "switchboard_appservice_transaction_seconds",
            "Seconds from a transaction's arrival to its answer (handled or failed).",
            buckets=TRANSACTION_BUCKETS,
            registry=r,
        )
        self._refused = Counter(
            "switchboard_rate_limited",
            "Requests the portal's rate limits refused, by kind (start and search: per "
            "address; message and typing: per session).",
            ["kind"],
            registry=r,
        )
        for outcome in TRANSACTION_OUTCOMES:
            self._transactions.labels(outcome)
        for kind in REFUSAL_KINDS:
            self._refused.labels(kind)
        self._scraped = _ScrapeTime(self)
        r.register(self._scraped)

    def read_from(self, counts: ReadCounts, advisors: ReadAdvisors) -> None:
        """Where a scrape reads the database's side from (once the database is open)."""
        self._read_counts, self._read_advisors = counts, advisors

    # -- the core's port (bridge.ports.DeskMetrics) ----------------------------------------

    def invite_sent(self, since_start: float) -> None:
        self._time_to_invite.observe(since_start)

    def visitor_accepted(self, waited: float) -> None:
        self._wait.observe(waited)

    # -- the portal's and the appservice endpoint's reports --------------------------------

    def refused(self, kind: str) -> None:
        self._refused.labels(kind).inc()

    def started(self) -> None:
        self._started.inc()

    def transaction(self, outcome: str, seconds: float | None = None) -> None:
        self._transactions.labels(outcome).inc()
        if seconds is not None:
            self._transaction_seconds.observe(seconds)

    # -- the endpoint ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the database's side for the scrape that follows (skipped until ready: the
        database may not be open yet; its metrics are then left out, not shown as 0)."""
        self._scraped.counts = self._scraped.advisors = None
        if self._not_ready() is not None or self._read_counts is None:
            return
        assert self._read_advisors is not None
        try:
            counts = await self._read_counts()
            advisors = await self._read_advisors()
        except Exception as e:
            # the scrape still answers (readiness, sockets, counters); the database's metrics
            # are missing from it, which an absent() alert can tell
            log.warning("metrics: could not read the database (%s: %s)", type(e).__name__, e)
            return
        self._scraped.counts, self._scraped.advisors = counts, advisors

    async def scrape(self, request: web.Request) -> web.Response:
        await self.refresh()
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/metrics", self.scrape)])
        return app

    def now(self) -> float:
        return self._now()

    def is_ready(self) -> bool:
        return self._not_ready() is None

    def sockets(self) -> int:
        return self._sockets()


class _ScrapeTime(Collector):
    """The gauges read at scrape time: from this process, and what :meth:`Metrics.refresh`
    read from the database just before."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self.counts: DeskCounts | None = None
        self.advisors: list[Advisor] | None = None

    def describe(self) -> list[Metric]:
        return []  # the families depend on what was read; registering needs no names

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        yield _gauge(
            "switchboard_ready",
            "1 once Switchboard serves (database migrated, homeserver answering, bot "
            "registered): what /ready says.",
            1 if m.is_ready() else 0,
        )
        yield _gauge(
            "switchboard_visitor_sockets",
            "Visitors' pages connected to this process by websocket.",
            m.sockets(),
        )
        counts, advisors = self.counts, self.advisors
        if counts is not None:
            yield from _desk(counts, m.now())
        if advisors is not None:
            yield _gauge("switchboard_advisors", "Advisors of the desk.", len(advisors))
            yield _gauge(
                "switchboard_advisors_available",
                "Advisors who said !available and whose Matrix presence lets the desk invite "
                "them (busy or not).",
                sum(1 for a in advisors if a.available and a.reachable),
            )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _desk(counts: DeskCounts, now: float) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        "switchboard_conversations",
        "Open chats by status (waiting: no advisor offered yet; inviting: an advisor is "
        "invited; active: an advisor took it).",
        labels=["status"],
    )
    for status, n in counts.conversations.items():
        by_status.add_metric([status], n)
    yield by_status
    yield _gauge(
        "switchboard_visitors_waiting",
        "Visitors waiting for an advisor to take their chat (waiting and inviting).",
        counts.conversations.get("waiting", 0) + counts.conversations.get("inviting", 0),
    )
    yield _gauge(
        "switchboard_oldest_waiting_seconds",
        "How long the visitor who has waited longest has been waiting (0: nobody waits).",
        _age(counts.oldest_queued_at, now),
    )
    yield _gauge(
        "switchboard_outbox_pending_rows",
        "Outbox rows that should have run by now and are not done (parked ones not counted): "
        "side effects waiting, retried, or held back by a parked row of their key.",
        counts.outbox_pending,
    )
    yield _gauge(
        "switchboard_outbox_scheduled_rows",
        "Outbox timers not due yet (invites that run out, visitors who may have left).",
        counts.outbox_scheduled,
    )
    yield _gauge(
        "switchboard_outbox_parked_rows",
        "Outbox rows parked after repeated failures: they, and the later rows of their key, "
        "wait for an admin (!outbox parked).",
        counts.outbox_parked,
    )
    yield _gauge(
        "switchboard_outbox_oldest_pending_seconds",
        "How long the oldest pending outbox row has waited since it should have run (0: "
        "none): a visitor's text not yet in the room, an invite not yet sent.",
        _age(counts.oldest_pending_at, now),
    )


def _age(since: float | None, now: float) -> float:
    return 0.0 if since is None else max(0.0, now - since)
