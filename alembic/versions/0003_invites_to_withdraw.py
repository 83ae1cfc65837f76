"""Track the desk's invites until each is taken or withdrawn.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

``invited``: JSON list of the advisors the desk invited to the room whose invite is neither
taken (they joined) nor withdrawn yet. Every one but the current offer's is withdrawn, retried
until the homeserver has done it. Offers made before this revision are not listed: the core
adds an offer's advisor when it withdraws the offer, so they are withdrawn all the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INVITES_OUTSTANDING = sa.text("invited <> '[]'")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("invited", sa.Text(), nullable=False, server_default="[]"))
    # housekeeping looks only at the (few) conversations with an invite outstanding
    op.create_index(
        "ix_conversations_invited",
        "conversations",
        ["id"],
        postgresql_where=INVITES_OUTSTANDING,
        sqlite_where=INVITES_OUTSTANDING,
    )


def downgrade() -> None:
    op.drop_index("ix_conversations_invited", table_name="conversations")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_column("invited")
