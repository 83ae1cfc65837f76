"""The :class:`bridge.ports.Store` port on SQLite or PostgreSQL, through mautrix's async_db.

SQL is written by hand in mautrix-telegram's style: a ``columns`` constant per table, ``$1``
parameters (mautrix rewrites them for SQLite), and a ``_from_row`` per type that returns the
plain dataclasses of :mod:`bridge.model`. The schema belongs to alembic (``alembic/versions``).

Grouping: mautrix's ``Database.acquire`` keeps the acquired connection in a context variable, so
every call made inside ``async with store.transaction():`` runs on the transaction's connection
and commits (or rolls back) with it. A nested ``transaction()`` is a savepoint on PostgreSQL and
joins the outer transaction on SQLite.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

from mautrix.util.async_db import Database, Scheme

from bridge.model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    Presence,
    RoomId,
    Sender,
    Visitor,
    VisitorId,
)

from .callsigns import SqlCallSigns
from .groups import SqlGroups
from .messages import SqlMessages, transaction_connection
from .outbox import SqlOutbox

Row = Any  # sqlite3.Row or asyncpg.Record: both are read by column name

VISITOR_COLUMNS = "id, name, email, created_at"
CONVERSATION_COLUMNS = (
    "id, visitor_id, topic, status, created_at, queued_at, puppet, room_id, advisor, "
    "invite_deadline, skipped, read_up_to, ended_at, ended_by, version, call_sign, asker"
)
VISITORS_PER_QUERY = 500  # within every SQLite's limit of bound parameters
#: what save_advisor writes; last_seen_at is written alone (advisor_seen), so that a save of
#: what was read before never takes a newer proof of life back
ADVISOR_COLUMNS = "mxid, available, presence, capacity, display_name, control_room"


def _visitor_from_row(row: Row) -> Visitor:
    return Visitor(
        id=VisitorId(row["id"]),
        name=row["name"],
        email=row["email"],
        created_at=row["created_at"],
    )


def _conversation_from_row(row: Row) -> Conversation:
    return Conversation(
        id=ConversationId(row["id"]),
        visitor_id=VisitorId(row["visitor_id"]),
        topic=row["topic"],
        status=ConversationStatus(row["status"]),
        created_at=row["created_at"],
        queued_at=row["queued_at"],
        puppet=row["puppet"],
        room_id=row["room_id"],
        advisor=row["advisor"],
        invite_deadline=row["invite_deadline"],
        skipped=tuple(AdvisorMxid(m) for m in json.loads(row["skipped"])),
        read_up_to=row["read_up_to"],
        ended_at=row["ended_at"],
        ended_by=Sender(row["ended_by"]) if row["ended_by"] is not None else None,
        version=row["version"],
        call_sign=row["call_sign"],
        asker=row["asker"],
    )


def _conversation_params(c: Conversation) -> tuple[Any, ...]:
    return (
        c.id,
        c.visitor_id,
        c.topic,
        c.status.value,
        float(c.created_at),
        float(c.queued_at),
        c.puppet,
        c.room_id,
        c.advisor,
        None if c.invite_deadline is None else float(c.invite_deadline),
        json.dumps(list(c.skipped)),
        c.read_up_to,
        None if c.ended_at is None else float(c.ended_at),
        c.ended_by.value if c.ended_by is not None else None,
        c.version,
        c.call_sign,
        c.asker,
    )


def _advisor_from_row(row: Row) -> Advisor:
    return Advisor(
        mxid=AdvisorMxid(row["mxid"]),
        available=bool(row["available"]),
        presence=Presence(row["presence"]),
        capacity=row["capacity"],
        display_name=row["display_name"],
        control_room=row["control_room"],
        last_seen_at=row["last_seen_at"],
    )


class SqlStore(SqlMessages, SqlGroups, SqlCallSigns):
    """:class:`bridge.ports.Store` on a started mautrix ``Database`` (see ``open_database``).

    Args:
        db: The started database; the caller owns its lifetime.
    """

    def __init__(self, db: Database, notify_channel: str | None = None) -> None:
        self.db = db
        self._postgres = db.scheme in (Scheme.POSTGRES, Scheme.COCKROACH)
        self.outbox = SqlOutbox(db, self._postgres, notify_channel)
        # Python sorts str by code point; so does SQLite's BINARY collation, and PostgreSQL's
        # only with "C" (the database default may be a locale that ignores case and punctuation).
        self._by_code_point = ' COLLATE "C"' if self._postgres else ""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Group the store calls made inside into one commit; roll all back if the body raises.

        Holds one connection until the block ends, so run the calls inside one after another
        (no ``gather``: a connection does one query at a time). On SQLite it is the only
        connection: work inside must not wait for a task that uses the store on its own.
        """
        async with transaction_connection(self.db):
            yield

    @asynccontextmanager
    async def exclusive(self, name: str) -> AsyncIterator[None]:
        """One process at a time across every process sharing this PostgreSQL schema.

        SQLite is one process's file: the caller's in-process lock is enough there.
        """
        if not self._postgres:
            yield
            return
        async with self.transaction():
            await self.db.execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema() || ':' || $1))", name
            )
            yield

    @asynccontextmanager
    async def claim(self, name: str) -> AsyncIterator[bool]:
        """Like :meth:`exclusive`, but another process holding it yields False instead of
        waiting. Held for the block's transaction: a process that dies lets go at once."""
        if not self._postgres:
            yield True
            return
        async with self.transaction():
            mine = await self.db.fetchval(
                "SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ':' || $1))", name
            )
            yield bool(mine)

    # visitors

    async def add_visitor(self, visitor: Visitor, session_hash: str) -> Visitor:
        """Insert (or update) the visitor and bind the session to them, unless the session is
        bound already (another process won the race for it): the bound visitor is returned,
        and nobody else's row is touched."""
        async with self.transaction():
            await self.db.execute(
                f"INSERT INTO visitors ({VISITOR_COLUMNS}) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (id) DO NOTHING",
                visitor.id,
                visitor.name,
                visitor.email,
                float(visitor.created_at),
            )
            await self.db.execute(
                "INSERT INTO visitor_sessions (session_hash, visitor_id) VALUES ($1, $2) "
                "ON CONFLICT (session_hash) DO NOTHING",
                session_hash,
                visitor.id,
            )
            bound = await self.visitor_by_session(session_hash)
            assert bound is not None
            if bound.id == visitor.id:
                # the name and email given this time are the ones the advisor should see
                await self.db.execute(
                    "UPDATE visitors SET name = $2, email = $3 WHERE id = $1",
                    visitor.id,
                    visitor.name,
                    visitor.email,
                )
                return dataclasses.replace(bound, name=visitor.name, email=visitor.email)
            # lost the race: the row made for it above, if it has no session, goes again
            await self.db.execute(
                "DELETE FROM visitors WHERE id = $1 AND NOT EXISTS "
                "(SELECT 1 FROM visitor_sessions WHERE visitor_id = $1)",
                visitor.id,
            )
            return bound

    async def visitor_by_session(self, session_hash: str) -> Visitor | None:
        row = await self.db.fetchrow(
            "SELECT v.id, v.name, v.email, v.created_at FROM visitor_sessions s "
            "JOIN visitors v ON v.id = s.visitor_id WHERE s.session_hash = $1",
            session_hash,
        )
        return _visitor_from_row(row) if row else None

    async def get_visitor(self, visitor_id: VisitorId) -> Visitor | None:
        row = await self.db.fetchrow(
            f"SELECT {VISITOR_COLUMNS} FROM visitors WHERE id = $1", visitor_id
        )
        return _visitor_from_row(row) if row else None

    async def get_visitors(self, visitor_ids: Collection[VisitorId]) -> dict[VisitorId, Visitor]:
        ids = list(dict.fromkeys(visitor_ids))
        found: dict[VisitorId, Visitor] = {}
        for start in range(0, len(ids), VISITORS_PER_QUERY):
            chunk = ids[start : start + VISITORS_PER_QUERY]
            marks = ", ".join(f"${n}" for n in range(1, len(chunk) + 1))
            rows = await self.db.fetch(
                f"SELECT {VISITOR_COLUMNS} FROM visitors WHERE id IN ({marks})", *chunk
            )
            for row in rows:
                visitor = _visitor_from_row(row)
                found[visitor.id] = visitor
        return found

    # conversations

    async def add_conversation(self, conversation: Conversation) -> bool:
        """Insert; False (and nothing written) if the visitor already has an open one.

        The partial unique index ``uq_conversations_open_visitor`` settles races between
        processes; ``NOT EXISTS`` also refuses an (odd) already-ended newcomer, as the
        reference store does.
        """
        row = await self.db.fetchrow(
            f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
            "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17 "
            "WHERE NOT EXISTS (SELECT 1 FROM conversations "
            "                  WHERE visitor_id = $2 AND status <> 'ended') "
            "ON CONFLICT (visitor_id) WHERE status <> 'ended' DO NOTHING "
            "RETURNING id",
            *_conversation_params(conversation),
        )
        return row is not None

    async def save_conversation(self, conversation: Conversation) -> None:
        """Insert or overwrite every field of the conversation."""
        await self.save_conversations([conversation])

    async def save_conversations(self, conversations: Sequence[Conversation]) -> None:
        """:meth:`save_conversation` of each, in one statement sent many times."""
        if not conversations:
            return
        updates = ", ".join(
            f"{col} = excluded.{col}" for col in CONVERSATION_COLUMNS.split(", ")[1:]
        )
        await self.db.executemany(
            f"INSERT INTO conversations ({CONVERSATION_COLUMNS}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) "
            f"ON CONFLICT (id) DO UPDATE SET {updates}",
            [_conversation_params(c) for c in conversations],
        )

    async def get_conversation(self, conversation_id: ConversationId) -> Conversation | None:
        row = await self.db.fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1", conversation_id
        )
        return _conversation_from_row(row) if row else None

    async def conversation_by_room(self, room_id: RoomId) -> Conversation | None:
        row = await self.db.fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE room_id = $1", room_id
        )
        return _conversation_from_row(row) if row else None

    async def latest_conversation(self, visitor_id: VisitorId) -> Conversation | None:
        row = await self.db.fetchrow(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE visitor_id = $1 "
            # the open one first: a clock stepped back must not hide it behind an ended one
            "ORDER BY CASE WHEN status = 'ended' THEN 1 ELSE 0 END, created_at DESC LIMIT 1",
            visitor_id,
        )
        return _conversation_from_row(row) if row else None

    async def open_conversations(self) -> list[Conversation]:
        """Every conversation not ended, oldest first (ties broken by id)."""
        rows = await self.db.fetch(
            f"SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE status <> 'ended' "
            f"ORDER BY created_at, id{self._by_code_point}"
        )
        return [_conversation_from_row(row) for row in rows]

    # advisors

    async def save_advisor(self, advisor: Advisor) -> None:
        """Insert or overwrite every field of the advisor."""
        updates = ", ".join(f"{col} = excluded.{col}" for col in ADVISOR_COLUMNS.split(", ")[1:])
        await self.db.execute(
            f"INSERT INTO advisors ({ADVISOR_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6) "
            f"ON CONFLICT (mxid) DO UPDATE SET {updates}",
            advisor.mxid,
            advisor.available,
            advisor.presence.value,
            advisor.capacity,
            advisor.display_name,
            advisor.control_room,
        )

    async def get_advisor(self, mxid: AdvisorMxid) -> Advisor | None:
        row = await self.db.fetchrow(
            f"SELECT {ADVISOR_COLUMNS}, last_seen_at FROM advisors WHERE mxid = $1", mxid
        )
        return _advisor_from_row(row) if row else None

    async def remove_advisor(self, mxid: AdvisorMxid) -> bool:
        """Delete the advisor (and their group memberships); False if there was none."""
        await self.db.execute("DELETE FROM group_members WHERE advisor = $1", mxid)
        removed = await self.db.fetchval(
            "DELETE FROM advisors WHERE mxid = $1 RETURNING mxid", mxid
        )
        return removed is not None

    async def advisors(self) -> list[Advisor]:
        """Every advisor, ordered by mxid (code point order, as Python sorts)."""
        rows = await self.db.fetch(
            f"SELECT {ADVISOR_COLUMNS}, last_seen_at FROM advisors "
            f"ORDER BY mxid{self._by_code_point}"
        )
        return [_advisor_from_row(row) for row in rows]

    async def advisor_seen(self, mxid: AdvisorMxid, at: float) -> None:
        await self.db.execute(
            "UPDATE advisors SET last_seen_at = $2 WHERE mxid = $1 "
            "AND (last_seen_at IS NULL OR last_seen_at < $2)",
            mxid,
            float(at),
        )

    # settings

    async def get_setting(self, key: str) -> str | None:
        value: str | None = await self.db.fetchval(
            "SELECT value FROM settings WHERE key = $1", key
        )
        return value

    async def set_setting(self, key: str, value: str) -> None:
        await self.db.execute(
            "INSERT INTO settings (key, value) VALUES ($1, $2) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            key,
            value,
        )

    # the appservice's log of handled events (see txnlog.AppserviceLog)

    async def mark_event_handled(self, event_id: str) -> None:
        await self.db.execute(
            "INSERT INTO as_events (event_id, handled_at) VALUES ($1, $2) "
            "ON CONFLICT (event_id) DO NOTHING",
            event_id,
            time.time(),
        )
