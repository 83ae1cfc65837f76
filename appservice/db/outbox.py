"""The :class:`bridge.ports.OutboxStore` port on SQLite or PostgreSQL (table ``outbox``).

A claim is a short committed lease (``claimed_by``, ``lease_until``), never a row lock held
while a handler runs. Only the oldest row of a key that is not done may be claimed; on
PostgreSQL ``FOR UPDATE SKIP LOCKED`` lets several processes claim at once without taking the
same row. ``add`` on PostgreSQL also sends a NOTIFY, delivered when the transaction commits, so
the other processes' dispatchers wake at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mautrix.util.async_db import Database

from bridge.events import DomainEvent
from bridge.ports import OutboxRow

OUTBOX_COLUMNS = (
    "id, key, kind, payload, due_at, created_at, tries, failures, state, last_error, priority"
)
#: sent with NOTIFY on the fanout's channel: "the outbox has new rows"
OUTBOX_NOTE = '{"o":1}'
PRIORITY_ANY = 1_000_000


def _row(row: Any) -> OutboxRow:
    return OutboxRow(
        id=row["id"],
        key=row["key"],
        kind=row["kind"],
        payload=row["payload"],
        due_at=float(row["due_at"]),
        created_at=float(row["created_at"]),
        tries=row["tries"],
        failures=row["failures"],
        parked=row["state"] == "parked",
        last_error=row["last_error"],
        priority=row["priority"],
    )


class SqlOutbox:
    def __init__(self, db: Database, postgres: bool, notify_channel: str | None) -> None:
        self.db = db
        self._postgres = postgres
        self._channel = notify_channel if postgres else None
        self._skip_locked = " FOR UPDATE SKIP LOCKED" if postgres else ""
        self._greatest = "GREATEST" if postgres else "MAX"
        self._least = "LEAST" if postgres else "MIN"

    async def add(self, events: Sequence[DomainEvent], now: float) -> None:
        plain: list[tuple[Any, ...]] = []  # rows simply added: written together, in order
        for event in events:
            due = event.due_at
            params = (
                event.key,
                type(event).__name__,
                event.payload(),
                now if due is None else due,
                0.0 if due is None else max(0.0, due - now),
                now,
                event.priority,
            )
            rule = event.when_pending()
            if rule == "add":
                plain.append(params)
                continue
            await self._insert(plain)
            if rule == "replace":
                moved = await self.db.fetch(
                    "UPDATE outbox SET payload = $3, due_at = $4, delay = $5 "
                    "WHERE key = $1 AND kind = $2 AND state = 'pending' AND claimed_by IS NULL "
                    "RETURNING id",
                    *params[:5],
                )
                if not moved:
                    await self._insert([params])
            else:  # keep
                await self.db.execute(
                    "INSERT INTO outbox (key, kind, payload, due_at, delay, created_at, priority) "
                    "SELECT $1, $2, $3, $4, $5, $6, $7 WHERE NOT EXISTS (SELECT 1 FROM outbox "
                    "WHERE key = $1 AND state = 'pending' AND claimed_by IS NULL)",
                    *params,
                )
        await self._insert(plain)
        if self._channel is not None and events:
            await self.db.execute("SELECT pg_notify($1, $2)", self._channel, OUTBOX_NOTE)

    async def _insert(self, rows: list[tuple[Any, ...]]) -> None:
        """Insert ``rows`` (then forget them): one statement sent many times, ids in order."""
        if rows:
            await self.db.executemany(
                "INSERT INTO outbox (key, kind, payload, due_at, delay, created_at, priority) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                rows,
            )
            rows.clear()

    async def claim(
        self,
        worker: str,
        now: float,
        lease_until: float,
        limit: int,
        max_priority: int | None = None,
    ) -> list[OutboxRow]:
        rows = await self.db.fetch(
            "UPDATE outbox SET claimed_by = $1, lease_until = $2, tries = tries + 1 "
            "WHERE id IN (SELECT o.id FROM outbox o WHERE o.state = 'pending' "
            "  AND o.priority <= $5 AND o.due_at <= $3 "
            "  AND (o.lease_until IS NULL OR o.lease_until < $3) "
            "  AND NOT EXISTS (SELECT 1 FROM outbox e "
            "                  WHERE e.key = o.key AND e.state <> 'done' AND e.id < o.id) "
            f"  ORDER BY o.priority, o.due_at, o.id LIMIT $4{self._skip_locked}) "
            f"RETURNING {OUTBOX_COLUMNS}",
            worker,
            lease_until,
            now,
            limit,
            PRIORITY_ANY if max_priority is None else max_priority,
        )
        return sorted((_row(r) for r in rows), key=lambda r: (r.priority, r.due_at, r.id))

    async def renew(self, worker: str, lease_until: float) -> None:
        await self.db.execute(
            "UPDATE outbox SET lease_until = $2 WHERE claimed_by = $1 AND state = 'pending'",
            worker,
            lease_until,
        )

    async def done(self, row_id: int, now: float) -> None:
        await self.db.execute(
            "UPDATE outbox SET state = 'done', done_at = $2, claimed_by = NULL, "
            "lease_until = NULL WHERE id = $1",
            row_id,
            now,
        )

    async def retry(self, row_id: int, due_at: float, failures: int, error: str | None) -> None:
        await self.db.execute(
            "UPDATE outbox SET due_at = $2, failures = $3, last_error = $4, claimed_by = NULL, "
            "lease_until = NULL WHERE id = $1 AND state = 'pending'",
            row_id,
            due_at,
            failures,
            error,
        )

    async def park(self, row_id: int, failures: int, error: str) -> None:
        await self.db.execute(
            "UPDATE outbox SET state = 'parked', failures = $2, last_error = $3, "
            "claimed_by = NULL, lease_until = NULL WHERE id = $1 AND state = 'pending'",
            row_id,
            failures,
            error,
        )

    async def pending(self, key: str, kind: str) -> bool:
        found = await self.db.fetchval(
            "SELECT EXISTS(SELECT 1 FROM outbox WHERE key = $1 AND kind = $2 AND state <> 'done')",
            key,
            kind,
        )
        return bool(found)

    async def parked(self) -> list[OutboxRow]:
        rows = await self.db.fetch(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE state = 'parked' ORDER BY id"
        )
        return [_row(r) for r in rows]

    async def unpark(self, row_id: int, now: float) -> bool:
        found = await self.db.fetchval(
            "UPDATE outbox SET state = 'pending', failures = 0, due_at = $2 "
            "WHERE id = $1 AND state = 'parked' RETURNING id",
            row_id,
            now,
        )
        if found is not None and self._channel is not None:
            await self.db.execute("SELECT pg_notify($1, $2)", self._channel, OUTBOX_NOTE)
        return found is not None

    async def discard(self, row_id: int, now: float) -> bool:
        found = await self.db.fetchval(
            "UPDATE outbox SET state = 'done', done_at = $2, last_error = 'discarded: ' || "
            "COALESCE(last_error, '') WHERE id = $1 AND state = 'parked' RETURNING id",
            row_id,
            now,
        )
        return found is not None

    async def next_due(self) -> float | None:
        """When the next claimable row is due: the head of its key, after any lease on it
        (rows behind a parked, leased or retried head are not claimable before it)."""
        due = await self.db.fetchval(
            f"SELECT MIN({self._greatest}(o.due_at, COALESCE(o.lease_until, o.due_at))) "
            "FROM outbox o WHERE o.state = 'pending' AND NOT EXISTS (SELECT 1 FROM outbox e "
            "WHERE e.key = o.key AND e.state <> 'done' AND e.id < o.id)"
        )
        return None if due is None else float(due)

    async def rebase(self, now: float, lease: float | None = None, step: float = 0.0) -> int:
        moved = await self.db.fetch(
            "UPDATE outbox SET due_at = $1 + delay "
            "WHERE state = 'pending' AND due_at > $1 + delay RETURNING id",
            now,
        )
        if lease is not None:
            # a lease beyond one from now was given before the step: what was left of it is
            # left (at most a lease; a claim of a dead process runs out when it would have)
            await self.db.execute(
                f"UPDATE outbox SET lease_until = {self._least}($1, lease_until - $2) "
                "WHERE state = 'pending' AND lease_until > $1",
                now + lease,
                step,
            )
        return len(moved)

    async def release_claims(self) -> None:
        await self.db.execute(
            "UPDATE outbox SET claimed_by = NULL, lease_until = NULL "
            "WHERE state = 'pending' AND claimed_by IS NOT NULL"
        )

    async def prune(self, older_than: float) -> None:
        await self.db.execute(
            "DELETE FROM outbox WHERE state = 'done' AND done_at < $1", older_than
        )
