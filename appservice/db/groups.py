"""The groups of the :class:`bridge.ports.Store` port on SQLite or PostgreSQL: the tree of
advisor groups (``groups``) and who belongs to which (``group_members``, with a role)."""

from __future__ import annotations

from typing import Any

from mautrix.util.async_db import Database

from bridge.groups import Group, GroupId, Membership, Role
from bridge.model import AdvisorMxid, RoomId

Row = Any  # sqlite3.Row or asyncpg.Record: both are read by column name

GROUP_COLUMNS = "id, slug, name, parent_id, space_id, isolated"
MEMBER_COLUMNS = "group_id, advisor, role"


def _group_from_row(row: Row) -> Group:
    return Group(
        id=GroupId(row["id"]),
        slug=row["slug"],
        name=row["name"],
        parent_id=GroupId(row["parent_id"]) if row["parent_id"] is not None else None,
        space_id=RoomId(row["space_id"]) if row["space_id"] is not None else None,
        isolated=bool(row["isolated"]),
    )


def _member_from_row(row: Row) -> Membership:
    return Membership(
        group_id=GroupId(row["group_id"]),
        advisor=AdvisorMxid(row["advisor"]),
        role=Role(row["role"]),
    )


class SqlGroups:
    """The ``Groups`` port; mixed into :class:`appservice.db.store.SqlStore`."""

    db: Database

    async def groups(self) -> list[Group]:
        rows = await self.db.fetch(f"SELECT {GROUP_COLUMNS} FROM groups ORDER BY id")
        return [_group_from_row(row) for row in rows]

    async def get_group(self, group_id: GroupId) -> Group | None:
        row = await self.db.fetchrow(f"SELECT {GROUP_COLUMNS} FROM groups WHERE id = $1", group_id)
        return _group_from_row(row) if row else None

    async def add_group(self, group: Group) -> None:
        await self.db.execute(
            f"INSERT INTO groups ({GROUP_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)",
            group.id,
            group.slug,
            group.name,
            group.parent_id,
            group.space_id,
            group.isolated,
        )

    async def save_group(self, group: Group) -> None:
        await self.db.execute(
            "UPDATE groups SET slug = $2, name = $3, parent_id = $4, space_id = $5, "
            "isolated = $6 WHERE id = $1",
            group.id,
            group.slug,
            group.name,
            group.parent_id,
            group.space_id,
            group.isolated,
        )

    async def remove_group(self, group_id: GroupId) -> None:
        # explicit rather than by the foreign key's cascade, which SQLite applies only with
        # its pragma on
        await self.db.execute("DELETE FROM group_members WHERE group_id = $1", group_id)
        await self.db.execute("DELETE FROM groups WHERE id = $1", group_id)

    async def members_of(self, group_id: GroupId) -> list[Membership]:
        rows = await self.db.fetch(
            f"SELECT {MEMBER_COLUMNS} FROM group_members WHERE group_id = $1 ORDER BY advisor",
            group_id,
        )
        return [_member_from_row(row) for row in rows]

    async def memberships_of(self, advisor: AdvisorMxid) -> list[Membership]:
        rows = await self.db.fetch(
            f"SELECT {MEMBER_COLUMNS} FROM group_members WHERE advisor = $1 ORDER BY group_id",
            advisor,
        )
        return [_member_from_row(row) for row in rows]

    async def save_membership(self, membership: Membership) -> None:
        await self.db.execute(
            f"INSERT INTO group_members ({MEMBER_COLUMNS}) VALUES ($1, $2, $3) "
            "ON CONFLICT (group_id, advisor) DO UPDATE SET role = excluded.role",
            membership.group_id,
            membership.advisor,
            membership.role.value,
        )

    async def remove_membership(self, group_id: GroupId, advisor: AdvisorMxid) -> None:
        await self.db.execute(
            "DELETE FROM group_members WHERE group_id = $1 AND advisor = $2", group_id, advisor
        )
