"""What the metrics endpoint reads from the database at each scrape: a few counts.

Two grouped counts, each over an index (``ix_conversations_status``; the outbox's partial
indexes over rows not done), so a scrape costs the same whether the desk has served a hundred
chats or a million. Ended conversations are not counted: that count only grows, and a scan
of it at every scrape would too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mautrix.util.async_db import Database

from bridge.model import ConversationStatus

OPEN_STATUSES = tuple(s.value for s in ConversationStatus if s.is_open)
QUEUED = (ConversationStatus.WAITING.value, ConversationStatus.INVITING.value)
SHOULD_RUN_BY = "CASE WHEN delay > 0 THEN due_at ELSE created_at END"


@dataclass(frozen=True)
class DeskCounts:
    """The database's side of a scrape. Shared by every process of one desk."""

    #: open conversations by status (every open status, 0 included)
    conversations: dict[str, int] = field(default_factory=dict)
    #: when the visitor who has waited longest without an advisor took their place
    oldest_queued_at: float | None = None
    #: outbox rows still to do (not parked): those that should have run by now (every row that
    #: is not a timer, each timer once it came due), the timers not due yet, and parked rows
    outbox_pending: int = 0
    outbox_scheduled: int = 0
    outbox_parked: int = 0
    #: since when the oldest pending row should have run (its creation; a timer's due time)
    oldest_pending_at: float | None = None


async def read_counts(db: Database, now: float) -> DeskCounts:
    """The counts as of ``now`` (wall-clock seconds, the outbox's due times are on it)."""
    statuses = ", ".join(f"'{s}'" for s in OPEN_STATUSES)  # constants, not input
    conversations = dict.fromkeys(OPEN_STATUSES, 0)
    oldest: float | None = None
    for row in await db.fetch(
        "SELECT status, COUNT(*) AS n, MIN(queued_at) AS oldest FROM conversations "
        f"WHERE status IN ({statuses}) GROUP BY status"
    ):
        conversations[row["status"]] = int(row["n"])
        if row["status"] in QUEUED and row["oldest"] is not None:
            queued_at = float(row["oldest"])
            oldest = queued_at if oldest is None else min(oldest, queued_at)
    pending = scheduled = parked = 0
    oldest_pending: float | None = None
    # A row should have run by its creation, a timer (delay > 0) by its due time. Not by its
    # due time alone: a row retried while the homeserver is down is due again every second,
    # and would never look late.
    for row in await db.fetch(
        f"SELECT state, COUNT(*) AS n, SUM(CASE WHEN {SHOULD_RUN_BY} <= $1 THEN 1 ELSE 0 END) "
        f"AS late, MIN({SHOULD_RUN_BY}) AS oldest FROM outbox WHERE state <> 'done' "
        "GROUP BY state",
        now,
    ):
        if row["state"] == "parked":
            parked = int(row["n"])
        else:
            pending = int(row["late"] or 0)
            scheduled = int(row["n"]) - pending
            if pending:
                oldest_pending = float(row["oldest"])
    return DeskCounts(conversations, oldest, pending, scheduled, parked, oldest_pending)
