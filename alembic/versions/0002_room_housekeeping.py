"""Track the Matrix side of a conversation: form answers posted, room closed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01

``announced``: the form's answers were posted in the room (retried until they are).
``room_closed``: after the end, pending text, the end notice and the puppet's leave are done
(retried until they are).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(
            sa.Column("announced", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(
            sa.Column("room_closed", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # conversations from before this revision: their rooms were announced and closed then
    op.execute("UPDATE conversations SET announced = TRUE WHERE room_id IS NOT NULL")
    op.execute("UPDATE conversations SET room_closed = TRUE WHERE status = 'ended'")


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("room_closed")
        batch.drop_column("announced")
