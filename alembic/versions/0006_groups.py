"""Advisor groups: a tree of groups (each a Matrix space) and who belongs to which.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

- ``groups``: one row per group, under its ``parent_id`` (NULL only for the root), its
  ``slug`` unique among its siblings, ``space_id`` the Matrix space once made, ``isolated``
  stored for the routing that comes later;
- ``group_members``: an advisor's groups with a ``role``: one ``primary`` group each (a
  partial unique index holds it), any number of ``secondary`` ones.

The root group (id ``root``, slug ``desk``, "All advisors") is made here, and every advisor
becomes a primary member of it. Down: both tables go.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "groups",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("slug", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column(
            "parent_id",
            sa.Text(),
            sa.ForeignKey("groups.id", name="fk_groups_parent"),
            nullable=True,
        ),
        sa.Column("space_id", sa.Text(), nullable=True),
        sa.Column("isolated", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.UniqueConstraint("parent_id", "slug", name="uq_groups_parent_slug"),
    )
    op.create_table(
        "group_members",
        sa.Column(
            "group_id",
            sa.Text(),
            sa.ForeignKey("groups.id", ondelete="CASCADE", name="fk_group_members_group"),
            nullable=False,
        ),
        sa.Column(
            "advisor",
            sa.Text(),
            sa.ForeignKey("advisors.mxid", ondelete="CASCADE", name="fk_group_members_advisor"),
            nullable=False,
        ),
        sa.Column("role", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("group_id", "advisor"),
        sa.CheckConstraint("role IN ('primary', 'secondary')", name="ck_group_members_role"),
    )
    op.create_index("ix_group_members_advisor", "group_members", ["advisor"])
    op.create_index(
        "uq_group_members_one_primary",
        "group_members",
        ["advisor"],
        unique=True,
        sqlite_where=sa.text("role = 'primary'"),
        postgresql_where=sa.text("role = 'primary'"),
    )
    op.execute(
        "INSERT INTO groups (id, slug, name, parent_id) "
        "VALUES ('root', 'desk', 'All advisors', NULL)"
    )
    op.execute(
        "INSERT INTO group_members (group_id, advisor, role) "
        "SELECT 'root', mxid, 'primary' FROM advisors"
    )


def downgrade() -> None:
    op.drop_index("uq_group_members_one_primary", table_name="group_members")
    op.drop_index("ix_group_members_advisor", table_name="group_members")
    op.drop_table("group_members")
    op.drop_table("groups")
