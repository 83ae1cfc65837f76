"""Call signs: public names that reach an advisor or a group, and who asked them from Matrix.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

- ``call_signs``: one row per call sign (its slug ``sign``), reaching one ``advisor`` or one
  group (``group_id``; a CHECK holds that exactly one is set), with free-text ``keywords``,
  whether its lobby is ``listed`` in the public room directory, and ``lobby_id``, the
  knock-only room its alias points at once made;
- ``call_sign_chats``: the direct chats Matrix users opened with a call sign's user (a message
  there asks again);
- ``conversations.call_sign``: the call sign a visitor asked (routed to its target);
  ``conversations.asker``: the Matrix user who asked it from Matrix (in the room themself);
- ``advisors.last_seen_at``: the last proof of life of an advisor of another homeserver.

Down: the tables and columns go (conversations of Matrix askers stay, as ordinary ones).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import sqlite

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Timestamp: sa.types.TypeEngine[float] = sa.Double().with_variant(sqlite.REAL(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "call_signs",
        sa.Column("sign", sa.Text(), primary_key=True),
        sa.Column("advisor", sa.Text(), nullable=True),
        sa.Column(
            "group_id",
            sa.Text(),
            sa.ForeignKey("groups.id", name="fk_call_signs_group"),
            nullable=True,
        ),
        sa.Column("keywords", sa.Text(), nullable=False, server_default=""),
        sa.Column("listed", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("lobby_id", sa.Text(), nullable=True, unique=True),
        sa.CheckConstraint(
            "(advisor IS NULL) <> (group_id IS NULL)", name="ck_call_signs_one_target"
        ),
    )
    op.create_table(
        "call_sign_chats",
        sa.Column("room_id", sa.Text(), primary_key=True),
        sa.Column("sign", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
    )
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("call_sign", sa.Text(), nullable=True))
        batch.add_column(sa.Column("asker", sa.Text(), nullable=True))
    with op.batch_alter_table("advisors") as batch:
        batch.add_column(sa.Column("last_seen_at", Timestamp, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("advisors") as batch:
        batch.drop_column("last_seen_at")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("asker")
        batch.drop_column("call_sign")
    op.drop_table("call_sign_chats")
    op.drop_table("call_signs")
