"""The appservice's idempotency log: which homeserver transactions and events were handled.

The homeserver retries a transaction until we answer 200, and an event may arrive twice (in a
retried transaction, or through a sync and a transaction). Recording the ids with a unique key
lets a restarted or second process tell what it has already done.
"""

from __future__ import annotations

from mautrix.util.async_db import Database

from bridge.ports import Clock

from ..clock import WallClock
from .store import transaction_connection


class AppserviceLog:
    """Completed appservice transactions and handled events, in ``as_transactions``/``as_events``.

    Args:
        db: The started database (see ``open_database``).
        clock: Timestamps the marks, for :meth:`prune`; the system clock by default.
    """

    def __init__(self, db: Database, clock: Clock | None = None) -> None:
        self.db = db
        self.clock: Clock = clock or WallClock()

    async def transaction_done(self, txn_id: str) -> bool:
        """Whether the homeserver transaction ``txn_id`` was already completed."""
        found = await self.db.fetchval(
            "SELECT EXISTS(SELECT 1 FROM as_transactions WHERE txn_id = $1)", txn_id
        )
        return bool(found)

    async def mark_transaction(self, txn_id: str) -> None:
        """Record ``txn_id`` as completed; marking it again changes nothing."""
        await self.db.execute(
            "INSERT INTO as_transactions (txn_id, completed_at) VALUES ($1, $2) "
            "ON CONFLICT (txn_id) DO NOTHING",
            txn_id,
            float(self.clock.now()),
        )

    async def last_transaction_at(self) -> float | None:
        """When the latest recorded transaction was completed (seconds since epoch), if any."""
        found = await self.db.fetchval("SELECT MAX(completed_at) FROM as_transactions")
        return None if found is None else float(found)

    async def event_handled(self, event_id: str) -> bool:
        """Whether the event ``event_id`` was already handled."""
        found = await self.db.fetchval(
            "SELECT EXISTS(SELECT 1 FROM as_events WHERE event_id = $1)", event_id
        )
        return bool(found)

    async def mark_event(self, event_id: str) -> None:
        """Record ``event_id`` as handled; marking it again changes nothing."""
        await self.db.execute(
            "INSERT INTO as_events (event_id, handled_at) VALUES ($1, $2) "
            "ON CONFLICT (event_id) DO NOTHING",
            event_id,
            float(self.clock.now()),
        )

    async def prune(self, older_than: float) -> None:
        """Forget transactions and events marked before ``older_than`` (seconds since epoch).

        Choose it well beyond how long the homeserver keeps retrying a transaction.
        """
        async with transaction_connection(self.db) as conn:
            await conn.execute(
                "DELETE FROM as_transactions WHERE completed_at < $1", float(older_than)
            )
            await conn.execute("DELETE FROM as_events WHERE handled_at < $1", float(older_than))
