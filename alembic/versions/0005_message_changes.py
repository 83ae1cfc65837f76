"""What advisors do to their messages in Matrix: edits, removals, replies.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05

- ``edited_at``: when the latest edit was written (``body`` holds that edit's text);
- ``removed_at``: when the message was removed (redacted) in Matrix; its ``body`` is erased,
  which a CHECK constraint holds, so the transcript keeps that something was taken back and
  when, never what;
- ``reply_to``: the seq of the message (same conversation) an advisor's reply answers;
- ``author_id``: the Matrix user who wrote an advisor's message (only they may edit it).

Down: the columns go; a removed message (whose text is gone) reads "(message removed)", since
the older code has no other way to show it. Up again, it is an ordinary line with that text.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp: sa.types.TypeEngine[float] = sa.Double().with_variant(sqlite.REAL(), "sqlite")
REMOVED_TEXT = "(message removed)"


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("author_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reply_to", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("edited_at", Timestamp, nullable=True))
        batch.add_column(sa.Column("removed_at", Timestamp, nullable=True))
        batch.create_check_constraint(
            "ck_messages_removed_erased", "removed_at IS NULL OR body = ''"
        )


def downgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.drop_constraint("ck_messages_removed_erased", type_="check")
    op.execute(
        sa.text("UPDATE messages SET body = :text WHERE removed_at IS NOT NULL").bindparams(
            text=REMOVED_TEXT
        )
    )
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("removed_at")
        batch.drop_column("edited_at")
        batch.drop_column("reply_to")
        batch.drop_column("author_id")
