"""Initial schema: visitors, conversations, messages, advisors, settings, appservice log.

Revision ID: 0001
Revises:
Create Date: 2024-12-01

The value lists in the CHECK constraints are a frozen copy of ``bridge.model``'s enums at this
revision; a new enum member needs a new migration, not an edit here.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Seconds since the epoch: DOUBLE PRECISION on PostgreSQL, REAL (8-byte float) on SQLite.
Timestamp: sa.types.TypeEngine[float] = sa.Double().with_variant(sqlite.REAL(), "sqlite")

OPEN_CONVERSATION = sa.text("status <> 'ended'")
UNDELIVERED = sa.text("NOT delivered")


def _in(column: str, values: Sequence[str], nullable: bool = False) -> str:
    listed = ", ".join(f"'{v}'" for v in values)
    check = f"{column} IN ({listed})"
    return f"{column} IS NULL OR {check}" if nullable else check


STATUSES = ("waiting", "inviting", "active", "ended")
SENDERS = ("visitor", "advisor", "system")
PRESENCES = ("online", "unavailable", "offline", "unknown")


def upgrade() -> None:
    op.create_table(
        "visitors",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("created_at", Timestamp, nullable=False),
    )
    op.create_table(
        "visitor_sessions",
        sa.Column("session_hash", sa.Text(), primary_key=True),
        sa.Column(
            "visitor_id",
            sa.Text(),
            sa.ForeignKey("visitors.id", ondelete="CASCADE", name="fk_visitor_sessions_visitor"),
            nullable=False,
        ),
    )
    op.create_index("ix_visitor_sessions_visitor", "visitor_sessions", ["visitor_id"])

    op.create_table(
        "conversations",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column(
            "visitor_id",
            sa.Text(),
            sa.ForeignKey("visitors.id", ondelete="CASCADE", name="fk_conversations_visitor"),
            nullable=False,
        ),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", Timestamp, nullable=False),
        sa.Column("queued_at", Timestamp, nullable=False),
        sa.Column("puppet", sa.Text(), nullable=True),
        sa.Column("room_id", sa.Text(), nullable=True),
        # No foreign key: removing an advisor must not rewrite or block old transcripts.
        sa.Column("advisor", sa.Text(), nullable=True),
        sa.Column("invite_deadline", Timestamp, nullable=True),
        # JSON list of advisor mxids who declined or timed out, in order.
        sa.Column("skipped", sa.Text(), nullable=False, server_default="[]"),
        sa.Column("read_up_to", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("ended_at", Timestamp, nullable=True),
        sa.Column("ended_by", sa.Text(), nullable=True),
        sa.CheckConstraint(_in("status", STATUSES), name="ck_conversations_status"),
        sa.CheckConstraint(
            _in("ended_by", SENDERS, nullable=True), name="ck_conversations_ended_by"
        ),
    )
    op.create_index("uq_conversations_room", "conversations", ["room_id"], unique=True)
    # At most one open conversation per visitor, even with two portal processes racing.
    op.create_index(
        "uq_conversations_open_visitor",
        "conversations",
        ["visitor_id"],
        unique=True,
        postgresql_where=OPEN_CONVERSATION,
        sqlite_where=OPEN_CONVERSATION,
    )
    op.create_index(
        "ix_conversations_visitor_created", "conversations", ["visitor_id", "created_at"]
    )
    op.create_index("ix_conversations_status", "conversations", ["status"])

    op.create_table(
        "messages",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.Text(),
            sa.ForeignKey("conversations.id", ondelete="CASCADE", name="fk_messages_conversation"),
            nullable=False,
        ),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("ts", Timestamp, nullable=False),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("event_id", sa.Text(), nullable=True),
        sa.Column("txn_id", sa.Text(), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("conversation_id", "seq", name="uq_messages_conversation_seq"),
        sa.UniqueConstraint(
            "conversation_id", "client_id", name="uq_messages_conversation_client"
        ),
        sa.UniqueConstraint("event_id", name="uq_messages_event"),
        sa.CheckConstraint("seq > 0", name="ck_messages_seq"),
        sa.CheckConstraint(_in("sender", SENDERS), name="ck_messages_sender"),
    )
    # The redelivery sweep looks only at the (few) messages that have not reached Matrix yet.
    op.create_index(
        "ix_messages_undelivered",
        "messages",
        ["conversation_id", "seq"],
        postgresql_where=UNDELIVERED,
        sqlite_where=UNDELIVERED,
    )

    op.create_table(
        "advisors",
        sa.Column("mxid", sa.Text(), primary_key=True),
        sa.Column("available", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("presence", sa.Text(), nullable=False, server_default="unknown"),
        sa.Column("capacity", sa.Integer(), nullable=True),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("control_room", sa.Text(), nullable=True),
        sa.CheckConstraint(_in("presence", PRESENCES), name="ck_advisors_presence"),
        sa.CheckConstraint("capacity IS NULL OR capacity >= 0", name="ck_advisors_capacity"),
    )

    op.create_table(
        "settings",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )

    op.create_table(
        "as_transactions",
        sa.Column("txn_id", sa.Text(), primary_key=True),
        sa.Column("completed_at", Timestamp, nullable=False),
    )
    op.create_index("ix_as_transactions_completed", "as_transactions", ["completed_at"])
    op.create_table(
        "as_events",
        sa.Column("event_id", sa.Text(), primary_key=True),
        sa.Column("handled_at", Timestamp, nullable=False),
    )
    op.create_index("ix_as_events_handled", "as_events", ["handled_at"])


def downgrade() -> None:
    for table in (
        "as_events",
        "as_transactions",
        "settings",
        "advisors",
        "messages",
        "conversations",
        "visitor_sessions",
        "visitors",
    ):
        op.drop_table(table)
