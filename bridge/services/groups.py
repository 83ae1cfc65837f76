"""The advisor groups: the admins' commands on the tree, and the handlers that keep each
group's Matrix space in step with it."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from .. import groups as rules
from ..errors import InvalidInput, NotFound
from ..events import (
    GroupCreated,
    GroupDeleted,
    GroupMoved,
    GroupRenamed,
    MembershipChanged,
    QueueChanged,
)
from ..groups import Group, GroupId, Membership, Role
from ..model import AdvisorMxid, RoomId, parse_mxid
from ..outbox import Attempt, Batch, Handlers, UnitOfWork
from ..ports import MatrixGateway, Store

log = logging.getLogger(__name__)


def space_key(group_id: GroupId) -> str:
    """The alias key that makes a group's space once (see ``MatrixGateway.create_space``)."""
    return f"group_{group_id}"


@dataclass(frozen=True)
class GroupLine:
    """One line of the tree as ``!group list`` shows it."""

    path: str
    depth: int
    group: Group
    members: list[Membership]


class GroupService:
    """The tree of advisor groups (admins' ``!group`` commands) and their spaces (handlers).

    Every change reads the tree and writes it in one transaction under the ``groups`` lock,
    so two admins cannot build a cycle or two groups at one path between them."""

    def __init__(self, store: Store, uow: UnitOfWork, gateway: MatrixGateway) -> None:
        self._store = store
        self._uow = uow
        self._gateway = gateway
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def _change(self) -> AsyncIterator[tuple[Batch, dict[GroupId, Group]]]:
        async with self._lock, self._uow() as batch, self._store.exclusive("groups"):
            tree = {g.id: g for g in await self._store.groups()}
            yield batch, tree

    async def tree(self) -> list[GroupLine]:
        """Every group, depth first from the root, with its members."""
        tree = {g.id: g for g in await self._store.groups()}
        lines: list[GroupLine] = []

        async def walk(group: Group, depth: int) -> None:
            members = await self._store.members_of(group.id)
            lines.append(GroupLine(rules.path_of(tree, group.id), depth, group, members))
            for child in rules.children(tree, group.id):
                await walk(child, depth + 1)

        await walk(rules.root(tree), 0)
        return lines

    async def create(self, path: str, name: str | None = None) -> Group:
        async with self._change() as (batch, tree):
            group, raised = rules.create(tree, GroupId(secrets.token_hex(8)), path, name)
            await self._store.add_group(group)
            batch.raise_(raised)
        log.info("group %s created", path)
        return group

    async def rename(self, path: str, name: str) -> Group:
        async with self._change() as (batch, tree):
            group, raised = rules.rename(rules.find(tree, path), name)
            await self._store.save_group(group)
            batch.raise_(raised)
        return group

    async def move(self, path: str, new_parent: str) -> str:
        """The group's new path."""
        async with self._change() as (batch, tree):
            group, raised = rules.move(tree, rules.find(tree, path), rules.find(tree, new_parent))
            await self._store.save_group(group)
            batch.raise_(raised)
            tree[group.id] = group
            return rules.path_of(tree, group.id)

    async def delete(self, path: str) -> None:
        async with self._change() as (batch, tree):
            group = rules.find(tree, path)
            signs = [c.sign for c in await self._store.call_signs() if c.group_id == group.id]
            if signs:
                raise InvalidInput(
                    f"The call sign {signs[0]} reaches {path.strip('/')}; give it another "
                    f"target or remove it first (!callsign remove {signs[0]})."
                )
            raised = rules.delete(tree, group, await self._store.members_of(group.id))
            await self._store.remove_group(group.id)
            batch.raise_(raised)
        log.info("group %s deleted", path)

    async def add_member(self, path: str, mxid: str, role: Role) -> bool:
        """The advisor joins the group as ``role``; False if they were so already."""
        advisor = parse_mxid(mxid)
        if await self._store.get_advisor(advisor) is None:
            raise NotFound(f"{advisor} is not an advisor; add them first with !advisor add.")
        async with self._change() as (batch, tree):
            group = rules.find(tree, path)
            current = await self._store.memberships_of(advisor)
            save, gone, raised = rules.join(current, group, advisor, role)
            for m in gone:
                await self._store.remove_membership(m.group_id, m.advisor)
            for m in save:
                await self._store.save_membership(m)
            batch.raise_(raised)
        return bool(raised)

    async def remove_member(self, path: str, mxid: str) -> None:
        advisor = parse_mxid(mxid)
        async with self._change() as (batch, tree):
            group = rules.find(tree, path)
            gone, raised = rules.leave(await self._store.memberships_of(advisor), group, advisor)
            await self._store.remove_membership(gone.group_id, gone.advisor)
            batch.raise_(raised)

    async def isolate(self, path: str, isolated: bool) -> bool:
        """Mark the group isolated or not (see :class:`bridge.routing.GroupPools`); False if
        it was so already. A routing pass follows."""
        async with self._change() as (batch, tree):
            group = rules.set_isolated(rules.find(tree, path), isolated)
            if group is tree[group.id]:
                return False
            await self._store.save_group(group)
            batch.raise_([QueueChanged()])
        return True

    # handlers: the Matrix side of the tree

    def register(self, handlers: Handlers) -> None:
        handlers.register(GroupCreated, self.make_space)
        handlers.register(GroupRenamed, self.name_space)
        handlers.register(GroupMoved, self.relink_space)
        handlers.register(GroupDeleted, self.drop_space)
        handlers.register(MembershipChanged, self.update_space_members)

    async def _space(self, group_id: GroupId) -> RoomId | None:
        """The group's space, made now if it has none yet (a child's handler may make its
        parent's before the parent's own handler runs); None for a group that is gone, and
        for the root: every advisor is in it, so a space of it would show nothing and only
        add an invite for everyone; the top-level groups are top-level spaces."""
        group = await self._store.get_group(group_id)
        if group is None or group.is_root:
            return None
        if group.space_id is not None:
            return group.space_id
        space = await self._gateway.create_space(group.name, space_key(group.id))
        async with self._uow():
            current = await self._store.get_group(group_id)
            if current is not None and current.space_id is None:
                await self._store.save_group(current.space_made(space))
        return space

    async def make_space(self, event: GroupCreated, attempt: Attempt) -> None:
        space = await self._space(event.group_id)
        parent_space = await self._space(event.parent_id)
        if space is not None and parent_space is not None:
            await self._gateway.link_space(parent_space, space)

    async def name_space(self, event: GroupRenamed, attempt: Attempt) -> None:
        space = await self._space(event.group_id)
        group = await self._store.get_group(event.group_id)
        if space is not None and group is not None:
            await self._gateway.name_space(space, group.name)

    async def relink_space(self, event: GroupMoved, attempt: Attempt) -> None:
        space = await self._space(event.group_id)
        if space is None:
            return
        old = await self._space(event.old_parent_id)
        if old is not None:
            await self._gateway.unlink_space(old, space)
        new = await self._space(event.new_parent_id)
        if new is not None:
            await self._gateway.link_space(new, space)

    async def drop_space(self, event: GroupDeleted, attempt: Attempt) -> None:
        """The deleted group's space is unlinked from its parent's and the bot leaves it (no
        tombstone: nothing replaces it); its members were removed by the events before."""
        key = space_key(event.group_id)
        space = event.space_id or await self._gateway.find_room(key)
        if space is not None:
            parent = await self._store.get_group(event.parent_id)
            if parent is not None and parent.space_id is not None:
                await self._gateway.unlink_space(parent.space_id, space)
            await self._gateway.leave_space(space)
        await self._gateway.forget_room_key(key)

    async def update_space_members(self, event: MembershipChanged, attempt: Attempt) -> None:
        """An advisor who is (still) a member is invited to the group's space and to its
        ancestors' (so that a client shows the tree); one who left is removed from it, unless
        they are still in a group under it (rows of different groups run in any order)."""
        tree = {g.id: g for g in await self._store.groups()}
        mine = await self._store.memberships_of(event.advisor)
        if any(m.group_id == event.group_id for m in mine):
            up = [a.id for a in rules.ancestors(tree, event.group_id)]
            for group_id in [event.group_id, *up]:
                space = await self._space(group_id)
                if space is not None:
                    await self._gateway.invite_to_space(space, event.advisor)
            return
        below = any(
            event.group_id in {a.id for a in rules.ancestors(tree, m.group_id)}
            for m in mine
            if m.group_id in tree
        )
        if below:
            return
        group = tree.get(event.group_id)
        space = (
            group.space_id if group else await self._gateway.find_room(space_key(event.group_id))
        )
        if space is not None:
            await self._gateway.kick_from_space(space, event.advisor)


async def place_new_advisor(store: Store, batch: Batch, advisor: AdvisorMxid) -> None:
    """A new advisor's primary group is the root, unless they have one already; called
    inside the unit of work that adds them."""
    if await store.memberships_of(advisor):
        return
    root = rules.root({g.id: g for g in await store.groups()})
    await store.save_membership(Membership(root.id, advisor, Role.PRIMARY))
    batch.raise_([MembershipChanged(root.id, advisor, Role.PRIMARY.value)])


def parse_role(text: str | None) -> Role:
    if text is None:
        return Role.PRIMARY
    try:
        return Role(text.lower())
    except ValueError:
        raise InvalidInput(f"{text!r} is not a role; write primary or secondary.") from None
