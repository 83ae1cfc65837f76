"""The outbox: side effects as domain events committed with the state, run by handlers.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

Work still to do used to be remembered in the conversation's columns (``announced``,
``room_closed``, ``invited``, ``messages.delivered``, a missing ``room_id``) and found again by
sweeps. This revision turns what is in flight into outbox rows, then drops those columns:

- an open conversation without a room: ``ConversationOpened``; one whose form was not posted:
  ``VisitorEntered`` (the puppet joins and the form is posted);
- every visitor message not delivered: ``VisitorSaid``, in order, after that;
- an ended conversation whose room is not closed: ``ConversationEnded``, after its messages;
- an invite to withdraw: ``InviteWithdrawn``; an offer outstanding: its ``OfferExpires`` timer;
- one ``QueueChanged`` if any conversation is open, so the first routing pass runs at once.

``conversations.version`` counts transitions (see ``bridge.model.Conversation``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp: sa.types.TypeEngine[float] = sa.Double().with_variant(sqlite.REAL(), "sqlite")
NOT_DONE = sa.text("state <> 'done'")
OUTBOX_STATES = "state IN ('pending', 'parked', 'done')"
UNDELIVERED = sa.text("NOT delivered")
INVITES_OUTSTANDING = sa.text("invited <> '[]'")
WITHDRAWN = "This chat is no longer offered to you."


def _payload(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"), sort_keys=True)


def upgrade() -> None:
    outbox = op.create_table(
        "outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("due_at", Timestamp, nullable=False),
        # a timer's delay when it was set: a clock stepped back never makes it wait longer
        sa.Column("delay", Timestamp, nullable=False, server_default=sa.text("0")),
        sa.Column("created_at", Timestamp, nullable=False),
        # lower first: the invite path goes ahead of joins, forms and texts in a burst
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("tries", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("lease_until", Timestamp, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("done_at", Timestamp, nullable=True),
        sa.CheckConstraint(OUTBOX_STATES, name="ck_outbox_state"),
    )
    # what the dispatcher reads: only rows not done (done rows are pruned)
    op.create_index(
        "ix_outbox_key", "outbox", ["key", "id"], postgresql_where=NOT_DONE, sqlite_where=NOT_DONE
    )
    op.create_index(
        "ix_outbox_due", "outbox", ["due_at"], postgresql_where=NOT_DONE, sqlite_where=NOT_DONE
    )
    op.create_index("ix_outbox_done", "outbox", ["done_at"])

    conn = op.get_bind()
    now = time.time()
    rows: list[dict[str, Any]] = []

    def add(key: str, kind: str, payload: str, due_at: float = 0.0, priority: int = 1) -> None:
        rows.append(
            {
                "key": key,
                "kind": kind,
                "payload": payload,
                "due_at": due_at,
                # a timer's delay from now: a clock stepped back never makes it wait longer
                "delay": max(0.0, due_at - now),
                "created_at": now,
                "priority": priority,
            }
        )

    conversations = conn.execute(
        sa.text(
            "SELECT id, status, room_id, advisor, invite_deadline, announced, room_closed, "
            "invited FROM conversations "
            "WHERE (status <> 'ended' AND (room_id IS NULL OR NOT announced)) "
            "   OR (status = 'ended' AND room_id IS NOT NULL AND NOT room_closed) "
            "   OR invited <> '[]' OR status = 'inviting' "
            "   OR id IN (SELECT conversation_id FROM messages WHERE NOT delivered) "
            "ORDER BY created_at, id"
        )
    ).mappings()
    for c in conversations:
        cid, key = c["id"], f"c:{c['id']}"
        if c["status"] != "ended" and c["room_id"] is None:
            add(key, "ConversationOpened", _payload(conversation_id=cid), priority=0)
        if c["status"] != "ended" and not c["announced"]:
            add(key, "VisitorEntered", _payload(conversation_id=cid))
        undelivered = conn.execute(
            sa.text(
                "SELECT id FROM messages WHERE conversation_id = :c AND NOT delivered "
                "AND sender = 'visitor' ORDER BY seq"
            ),
            {"c": cid},
        )
        for (message_id,) in undelivered:
            add(key, "VisitorSaid", _payload(conversation_id=cid, message_id=message_id))
        if c["status"] == "ended" and c["room_id"] is not None and not c["room_closed"]:
            add(key, "ConversationEnded", _payload(conversation_id=cid))
        offer = c["advisor"] if c["status"] == "inviting" else None
        withdraw = [a for a in json.loads(c["invited"] or "[]") if a != offer]
        for advisor in withdraw:
            add(
                f"{key}:{advisor}",
                "InviteWithdrawn",
                _payload(conversation_id=cid, advisor=advisor, reason=WITHDRAWN),
            )
        if offer is not None:
            due = c["invite_deadline"] or now
            add(
                f"t:{cid}:0",
                "OfferExpires",
                _payload(conversation_id=cid, advisor=offer, version=0, due=due),
                due,
                priority=0,
            )
    if conn.execute(
        sa.text("SELECT 1 FROM conversations WHERE status <> 'ended' LIMIT 1")
    ).first():
        add("queue", "QueueChanged", _payload(), priority=0)  # the first routing pass
    op.bulk_insert(outbox, rows)

    op.drop_index("ix_conversations_invited", table_name="conversations")
    op.drop_index("ix_messages_undelivered", table_name="messages")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("announced")
        batch.drop_column("room_closed")
        batch.drop_column("invited")
        batch.add_column(
            sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("delivered")


def downgrade() -> None:
    """Back to the columns; what the outbox still holds becomes their values again."""
    with op.batch_alter_table("messages") as batch:
        batch.add_column(
            sa.Column("delivered", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("version")
        batch.add_column(
            sa.Column("announced", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch.add_column(
            sa.Column("room_closed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("invited", sa.Text(), nullable=False, server_default="[]"))
    conn = op.get_bind()
    # as 0002 did: the rooms of ended conversations were closed, unless a row says otherwise
    conn.execute(sa.text("UPDATE conversations SET room_closed = TRUE WHERE status = 'ended'"))
    pending = conn.execute(
        sa.text("SELECT kind, payload FROM outbox WHERE state <> 'done' ORDER BY id")
    ).all()
    withdrawals: dict[str, list[str]] = {}
    for kind, payload in pending:
        fields = json.loads(payload)
        cid = fields.get("conversation_id")
        if kind in ("ConversationOpened", "VisitorEntered"):
            conn.execute(
                sa.text("UPDATE conversations SET announced = FALSE WHERE id = :c"), {"c": cid}
            )
        elif kind == "VisitorSaid":
            conn.execute(
                sa.text("UPDATE messages SET delivered = FALSE WHERE id = :m"),
                {"m": fields["message_id"]},
            )
        elif kind == "ConversationEnded":
            conn.execute(
                sa.text("UPDATE conversations SET room_closed = FALSE WHERE id = :c"), {"c": cid}
            )
        elif kind == "InviteWithdrawn":
            withdrawals.setdefault(cid, []).append(fields["advisor"])
    for cid, advisors in withdrawals.items():
        conn.execute(
            sa.text("UPDATE conversations SET invited = :i WHERE id = :c"),
            {"i": json.dumps(list(dict.fromkeys(advisors))), "c": cid},
        )
    # delivered messages have their event; undelivered ones were marked above
    op.create_index(
        "ix_messages_undelivered",
        "messages",
        ["conversation_id", "seq"],
        postgresql_where=UNDELIVERED,
        sqlite_where=UNDELIVERED,
    )
    op.create_index(
        "ix_conversations_invited",
        "conversations",
        ["id"],
        postgresql_where=INVITES_OUTSTANDING,
        sqlite_where=INVITES_OUTSTANDING,
    )
    op.drop_table("outbox")
