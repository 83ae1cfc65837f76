"""The messages of the :class:`bridge.ports.Store` port on SQLite or PostgreSQL: appended
with the next ``seq`` of their conversation, and changed in place by an advisor's edit or
removal in Matrix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mautrix.util.async_db import Connection, Database

from bridge.model import ConversationId, EventId, Message, MessageId, Sender

Row = Any  # sqlite3.Row or asyncpg.Record: both are read by column name

MESSAGE_COLUMNS = (
    "id, conversation_id, seq, sender, author, body, ts, client_id, event_id, txn_id, "
    "author_id, reply_to, edited_at, removed_at"
)
# the columns add_message writes: all but seq (computed in the INSERT) and the later changes
INSERTED = (
    "id, conversation_id, sender, author, body, ts, client_id, event_id, txn_id, author_id, "
    "reply_to"
)

# How often add_message recomputes ``seq`` after losing a race for it. On PostgreSQL the
# conversation row lock makes losing impossible for writers that go through this class; the
# loop is the safety net for anything else that inserts messages.
SEQ_ATTEMPTS = 5


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def message_from_row(row: Row) -> Message:
    return Message(
        id=MessageId(row["id"]),
        conversation_id=ConversationId(row["conversation_id"]),
        seq=row["seq"],
        sender=Sender(row["sender"]),
        author=row["author"],
        body=row["body"],
        ts=row["ts"],
        client_id=row["client_id"],
        event_id=row["event_id"],
        txn_id=row["txn_id"],
        author_id=row["author_id"],
        reply_to=row["reply_to"],
        edited_at=row["edited_at"],
        removed_at=row["removed_at"],
    )


@asynccontextmanager
async def transaction_connection(db: Database) -> AsyncIterator[Connection]:
    """A connection in a transaction, published to mautrix's context variable.

    Calls through ``db`` inside the block reuse it (``Database.acquire`` looks there first), so
    they commit or roll back together; inside another transaction this nests (a savepoint on
    PostgreSQL, a no-op on SQLite).
    """
    conn: Connection  # mautrix annotates acquire() as returning the connection itself
    async with db.acquire() as conn, conn.transaction():
        yield conn


class SqlMessages:
    """The message half of :class:`appservice.db.SqlStore` (which sets ``db``, ``_postgres``)."""

    db: Database
    _postgres: bool

    async def add_message(self, message: Message) -> tuple[Message, bool]:
        """Append with the next ``seq`` of its conversation (``message.seq`` is ignored).

        Idempotent: if the conversation already has a message with this ``client_id``, or any
        conversation one with this ``event_id`` (or this very ``id``), that one is returned with
        ``False``. ``seq`` is computed inside the INSERT; on PostgreSQL the conversation row is
        locked first so concurrent appends queue up instead of colliding. The conversation must
        exist (foreign key).
        """
        async with transaction_connection(self.db) as conn:
            if self._postgres:
                await conn.execute(
                    "SELECT 1 FROM conversations WHERE id = $1 FOR NO KEY UPDATE",
                    message.conversation_id,
                )
            for _ in range(SEQ_ATTEMPTS):
                row = await conn.fetchrow(
                    f"INSERT INTO messages ({INSERTED}, seq) VALUES ($1, $2, $3, $4, $5, $6, "
                    "$7, $8, $9, $10, $11, "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE conversation_id = $2)"
                    f") ON CONFLICT DO NOTHING RETURNING {MESSAGE_COLUMNS}",
                    message.id,
                    message.conversation_id,
                    message.sender.value,
                    message.author,
                    message.body,
                    float(message.ts),
                    message.client_id,
                    message.event_id,
                    message.txn_id,
                    message.author_id,
                    message.reply_to,
                )
                if row is not None:
                    return message_from_row(row), True
                existing = await conn.fetchrow(
                    f"SELECT {MESSAGE_COLUMNS} FROM messages "
                    "WHERE (conversation_id = $1 AND client_id = $2) OR event_id = $3 OR id = $4 "
                    "ORDER BY CASE WHEN conversation_id = $1 THEN 0 ELSE 1 END, seq LIMIT 1",
                    message.conversation_id,
                    message.client_id,
                    message.event_id,
                    message.id,
                )
                if existing is not None:
                    return message_from_row(existing), False
                # Nothing matched: we lost the race for this seq to another writer. Again.
        raise RuntimeError(
            f"could not append to conversation {message.conversation_id} "
            f"after {SEQ_ATTEMPTS} attempts"
        )

    async def messages(self, conversation_id: ConversationId, since: int = 0) -> list[Message]:
        """The conversation's messages with ``seq > since``, in order."""
        rows = await self.db.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq > $2 "
            "ORDER BY seq",
            conversation_id,
            since,
        )
        return [message_from_row(row) for row in rows]

    async def changed_messages(self, conversation_id: ConversationId, up_to: int) -> list[Message]:
        """The conversation's edited or removed messages with ``seq <= up_to``, in order."""
        rows = await self.db.fetch(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq <= $2 "
            "AND (edited_at IS NOT NULL OR removed_at IS NOT NULL) ORDER BY seq",
            conversation_id,
            up_to,
        )
        return [message_from_row(row) for row in rows]

    async def message_by_event(self, event_id: EventId) -> Message | None:
        row = await self.db.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE event_id = $1", event_id
        )
        return message_from_row(row) if row else None

    async def get_message(self, message_id: MessageId) -> Message | None:
        row = await self.db.fetchrow(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1", message_id
        )
        return message_from_row(row) if row else None

    async def set_message_event(self, message_id: MessageId, event_id: EventId) -> None:
        """Record that the message reached the other side as ``event_id``."""
        await self.db.execute(
            "UPDATE messages SET event_id = $2 WHERE id = $1", message_id, event_id
        )

    async def change_message(self, before: Message, after: Message) -> bool:
        """Store the edit or removal ``after`` if the row still is ``before`` (compare and
        set: of two processes applying changes of one message, the later one reads again)."""
        changed = await self.db.fetchval(
            "UPDATE messages SET body = $2, edited_at = $3, removed_at = $4 "
            "WHERE id = $1 AND body = $5 AND removed_at IS NULL "
            "AND COALESCE(edited_at, -1) = COALESCE(CAST($6 AS DOUBLE PRECISION), -1) "
            "RETURNING id",
            before.id,
            after.body,
            _optional_float(after.edited_at),
            _optional_float(after.removed_at),
            before.body,
            _optional_float(before.edited_at),
        )
        return changed is not None
