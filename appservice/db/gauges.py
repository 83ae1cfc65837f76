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


@dataclass(frozen=True)
class DeskCounts:
    """The database's side of a scrape. Shared by every process of one desk."""

    #: open conversations by status (every open status, 0 included)
    conversations: dict[str, int] = field(default_factory=dict)
    #: when the visitor who has waited longest without an advisor took their place
    oldest_queued_at: float | None = None
    #: outbox rows due now (and not parked), due later (timers), parked
    outbox_due: int = 0
    outbox_scheduled: int = 0
    outbox_parked: int = 0
    #: the earliest due time of a row due now: how far the dispatcher is behind
    oldest_due_at: float | None = None


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
    due = scheduled = parked = 0
    oldest_due: float | None = None
    for row in await db.fetch(
        "SELECT state, COUNT(*) AS n, "
        "SUM(CASE WHEN due_at <= $1 THEN 1 ELSE 0 END) AS due, "
        "MIN(CASE WHEN due_at <= $1 THEN due_at END) AS oldest_due "
        "FROM outbox WHERE state <> 'done' GROUP BY state",
        now,
    ):
        if row["state"] == "parked":
            parked = int(row["n"])
        else:
            due, scheduled = int(row["due"] or 0), int(row["n"]) - int(row["due"] or 0)
            oldest_due = None if row["oldest_due"] is None else float(row["oldest_due"])
    return DeskCounts(conversations, oldest, due, scheduled, parked, oldest_due)
