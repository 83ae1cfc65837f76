"""Drift repair of the groups' spaces: one reconciliation compares every group's space with
the database and raises a domain event per repair; the handlers here do the Matrix work.

Run once at start-up and by an admin's ``!directory repair``; never as a periodic sweep.
Members who left a space by hand are invited again once per reconciliation: an advisor who
keeps leaving is invited at the next start-up or repair, not chased.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

from .. import groups as rules
from ..events import DomainEvent, SpaceLinkMissing, SpaceLost, SpaceMemberMissing
from ..groups import Group, GroupId
from ..model import RoomId
from ..outbox import Attempt, Handlers, UnitOfWork
from ..ports import MatrixGateway, SpaceState, Store
from .groups import space_key

log = logging.getLogger(__name__)


def repair_key(group_id: GroupId, lost: RoomId) -> str:
    """The alias key of the space that replaces ``lost``: a new one per lost space (the old
    alias may still point at the dead room), the same one on a retry of the same repair."""
    digest = hashlib.sha256(lost.encode()).hexdigest()[:8]
    return f"{space_key(group_id)}_r{digest}"


@dataclass
class RepairReport:
    """What one reconciliation found; each line is one repair raised."""

    checked: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.lines

    def summary(self) -> str:
        if self.clean:
            return f"Every group space is in step with the directory ({self.checked} checked)."
        return f"Repairs of the group spaces ({self.checked} checked):\n" + "\n".join(
            f"- {line}" for line in self.lines
        )


class SpaceRepair:
    """Reconciles the groups' spaces with the database (``reconcile``: reads and decides,
    raising one event per repair) and repairs them (the handlers)."""

    def __init__(self, store: Store, uow: UnitOfWork, gateway: MatrixGateway) -> None:
        self._store = store
        self._uow = uow
        self._gateway = gateway

    async def reconcile(self) -> RepairReport:
        """Check every group's space; raise the repairs and say what they are."""
        tree = {g.id: g for g in await self._store.groups()}
        report = RepairReport()
        raised: list[DomainEvent] = []
        states: dict[GroupId, SpaceState] = {}
        lost: set[GroupId] = set()
        # parents first: a re-made parent exists before its children are linked to it
        order = _depth_first(tree)
        for group in order:
            if group.is_root or group.space_id is None:
                continue  # the root has no space; a new group's space is still being made
            report.checked += 1
            state = await self._gateway.space_state(group.space_id)
            path = rules.path_of(tree, group.id)
            if state is None:
                lost.add(group.id)
                raised.append(SpaceLost(group.id, group.space_id))
                report.lines.append(f"{path}: space {group.space_id} is gone; a new one is made")
            else:
                states[group.id] = state
        members = {g.id: await self._store.members_of(g.id) for g in order}
        for group in order:
            if group.is_root or group.space_id is None:
                continue
            path = rules.path_of(tree, group.id)
            state = states.get(group.id)
            assert group.parent_id is not None
            parent = tree[group.parent_id]
            if not parent.is_root and parent.space_id is not None:
                parent_state = states.get(parent.id)
                linked = (
                    state is not None
                    and parent_state is not None
                    and group.space_id in parent_state.children
                    and parent.space_id in state.parents
                )
                if not linked:
                    raised.append(SpaceLinkMissing(group.id, parent.id))
                    if group.id not in lost and parent.id not in lost:
                        report.lines.append(f"{path}: the link to its parent's space is set again")
            wanted = {
                m.advisor
                for g in order
                if g.id == group.id or group.id in {a.id for a in rules.ancestors(tree, g.id)}
                for m in members[g.id]
            }
            there = state.members if state is not None else frozenset()
            for advisor in sorted(wanted - there):
                raised.append(SpaceMemberMissing(group.id, advisor))
                if state is not None:
                    report.lines.append(f"{path}: {advisor} is not in its space; invited again")
        if raised:
            async with self._uow() as batch:
                batch.raise_(raised)
        for line in report.lines:
            log.warning("space repair: %s", line)
        log.info("space repair: %d spaces checked, %d repairs", report.checked, len(report.lines))
        return report

    # handlers

    def register(self, handlers: Handlers) -> None:
        handlers.register(SpaceLost, self.remake_space)
        handlers.register(SpaceLinkMissing, self.relink_space)
        handlers.register(SpaceMemberMissing, self.reinvite)

    async def remake_space(self, event: SpaceLost, attempt: Attempt) -> None:
        """A new space for the group (under a new alias key); a group gone since, or repaired
        already, is done."""
        group = await self._store.get_group(event.group_id)
        if group is None or group.space_id != event.space_id:
            return
        space = await self._gateway.create_space(group.name, repair_key(group.id, event.space_id))
        parent = await self._store.get_group(group.parent_id) if group.parent_id else None
        if parent is not None and parent.space_id is not None:
            # the parent's link to the dead space would show as an unknown room in clients
            await self._gateway.unlink_space(parent.space_id, event.space_id)
        async with self._uow():
            current = await self._store.get_group(group.id)
            if current is not None and current.space_id == event.space_id:
                await self._store.save_group(current.space_made(space))
        log.info("space repair: group %s has a new space %s", group.id, space)

    async def relink_space(self, event: SpaceLinkMissing, attempt: Attempt) -> None:
        group = await self._store.get_group(event.group_id)
        if group is None or group.parent_id != event.parent_id or group.space_id is None:
            return  # moved or deleted since: its own handlers set its links
        parent = await self._store.get_group(event.parent_id)
        if parent is None or parent.space_id is None:
            return
        await self._gateway.link_space(parent.space_id, group.space_id)

    async def reinvite(self, event: SpaceMemberMissing, attempt: Attempt) -> None:
        """The advisor is invited again, if they still belong to the group or one under it."""
        tree = {g.id: g for g in await self._store.groups()}
        group = tree.get(event.group_id)
        if group is None or group.space_id is None:
            return
        mine = await self._store.memberships_of(event.advisor)
        if any(
            m.group_id == group.id or group.id in {a.id for a in rules.ancestors(tree, m.group_id)}
            for m in mine
            if m.group_id in tree
        ):
            await self._gateway.invite_to_space(group.space_id, event.advisor)


def _depth_first(tree: dict[GroupId, Group]) -> list[Group]:
    found: list[Group] = []

    def walk(group: Group) -> None:
        found.append(group)
        for child in rules.children(tree, group.id):
            walk(child)

    walk(rules.root(tree))
    return found
