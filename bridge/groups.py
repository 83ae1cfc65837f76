"""Advisor groups: a tree under one root group, each group a Matrix space (made by a handler).

Pure rules, no I/O. A group is written by its path from the root, segment by segment
(``support/billing``); the root itself is written ``/``. Each segment is a slug
(``[a-z0-9-]``), because it is shown in commands and may become part of a Matrix alias later.

Each transition checks the tree's rules and returns the new state with the domain events it
raises; the group's events share the key ``g:<id>``, so its space is made before it is linked,
renamed, moved, joined or removed.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import NewType

from .errors import InvalidInput, NotAllowed, NotFound
from .events import GroupCreated, GroupDeleted, GroupMoved, GroupRenamed, MembershipChanged
from .model import AdvisorMxid, RoomId

GroupId = NewType("GroupId", str)

ROOT_ID = GroupId("root")  # made by migration 0006
ROOT_PATH = "/"
MAX_SLUG = 32
MAX_NAME = 100
#: a group path segment, and a call sign: both may become parts of Matrix addresses
SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


class Role(str, enum.Enum):
    """An advisor's one primary group, and any number of secondary ones."""

    PRIMARY = "primary"
    SECONDARY = "secondary"


@dataclass(frozen=True)
class Group:
    """A group of advisors. ``space_id``: its Matrix space, None until the handler made it;
    ``isolated``: its primary members are routed only its own visitors (and those of groups
    inside it; see :class:`bridge.routing.GroupPools`)."""

    id: GroupId
    slug: str
    name: str
    parent_id: GroupId | None
    space_id: RoomId | None = None
    isolated: bool = False

    @property
    def is_root(self) -> bool:
        return self.parent_id is None

    def space_made(self, space_id: RoomId) -> Group:
        return replace(self, space_id=space_id)


@dataclass(frozen=True)
class Membership:
    group_id: GroupId
    advisor: AdvisorMxid
    role: Role


Tree = Mapping[GroupId, Group]


def check_slug(slug: str) -> str:
    """``slug`` if it is a valid path segment, or an error that says what is allowed."""
    if not slug:
        raise InvalidInput("A group path has an empty part; write it like support/billing.")
    if len(slug) > MAX_SLUG:
        raise InvalidInput(f"{slug!r} is too long: at most {MAX_SLUG} characters per part.")
    if not SLUG.fullmatch(slug):
        raise InvalidInput(
            f"{slug!r} is not allowed in a group path: use lower-case letters a-z, digits and "
            f"'-' (not first or last), e.g. {suggest_slug(slug)!r}."
        )
    return slug


def suggest_slug(text: str) -> str:
    """A slug close to ``text`` for an error message (never empty)."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:MAX_SLUG].strip("-") or "team"


def parse_path(path: str) -> list[str]:
    """The slugs of ``path`` (``support/billing``; ``/`` is the root: no slugs)."""
    path = path.strip()
    if path == ROOT_PATH:
        return []
    if not path:
        raise InvalidInput("Name a group by its path, like support/billing (/ is the root).")
    return [check_slug(part) for part in path.strip("/").split("/")]


def check_name(name: str) -> str:
    name = " ".join(name.split())
    if not name:
        raise InvalidInput("A group's display name cannot be empty.")
    if len(name) > MAX_NAME:
        raise InvalidInput(f"A group's display name has at most {MAX_NAME} characters.")
    return name


def root(tree: Tree) -> Group:
    for group in tree.values():
        if group.is_root:
            return group
    raise NotFound("There is no root group; the database was not migrated.")


def children(tree: Tree, group_id: GroupId) -> list[Group]:
    return sorted((g for g in tree.values() if g.parent_id == group_id), key=lambda g: g.slug)


def path_of(tree: Tree, group_id: GroupId) -> str:
    """The path of a group (``support/billing``; the root is ``/``)."""
    parts: list[str] = []
    group = tree[group_id]
    while group.parent_id is not None:
        parts.append(group.slug)
        group = tree[group.parent_id]
    return "/".join(reversed(parts)) or ROOT_PATH


def ancestors(tree: Tree, group_id: GroupId) -> list[Group]:
    """The group's parent, its parent's parent, … up to the root."""
    found: list[Group] = []
    parent_id = tree[group_id].parent_id
    while parent_id is not None:
        found.append(tree[parent_id])
        parent_id = tree[parent_id].parent_id
    return found


def find(tree: Tree, path: str) -> Group:
    """The group at ``path``, or an error that names the first missing part."""
    group = root(tree)
    walked: list[str] = []
    for slug in parse_path(path):
        walked.append(slug)
        match = [g for g in children(tree, group.id) if g.slug == slug]
        if not match:
            raise NotFound(
                f"There is no group {'/'.join(walked)}; !group list shows the groups, "
                f"!group create {'/'.join(walked)} makes it."
            )
        group = match[0]
    return group


def create(
    tree: Tree, group_id: GroupId, path: str, name: str | None = None
) -> tuple[Group, list[GroupCreated]]:
    """A new group at ``path``, under an existing parent; its space is made by a handler."""
    slugs = parse_path(path)
    if not slugs:
        raise InvalidInput("The root group / exists already; name a group under it.")
    parent = find(tree, "/".join(slugs[:-1]) or ROOT_PATH)
    slug = slugs[-1]
    if any(g.slug == slug for g in children(tree, parent.id)):
        raise InvalidInput(f"The group {'/'.join(slugs)} exists already.")
    group = Group(id=group_id, slug=slug, name=check_name(name or slug), parent_id=parent.id)
    return group, [GroupCreated(group_id, parent.id)]


def rename(group: Group, name: str) -> tuple[Group, list[GroupRenamed]]:
    """The group's display name (its path stays)."""
    name = check_name(name)
    if name == group.name:
        return group, []
    return replace(group, name=name), [GroupRenamed(group.id)]


def set_isolated(group: Group, isolated: bool) -> Group:
    """The group with ``isolated`` set (the same object if it was so already)."""
    if group.is_root and isolated:
        raise NotAllowed("The root group / holds every advisor; it cannot be isolated.")
    return group if group.isolated is isolated else replace(group, isolated=isolated)


def move(tree: Tree, group: Group, new_parent: Group) -> tuple[Group, list[GroupMoved]]:
    """The group and everything under it go under ``new_parent``."""
    if group.is_root:
        raise NotAllowed("The root group / cannot be moved.")
    if new_parent.id == group.id or any(a.id == group.id for a in ancestors(tree, new_parent.id)):
        raise InvalidInput(
            f"{path_of(tree, group.id)} cannot move under itself or a group inside it "
            f"({path_of(tree, new_parent.id)}); move the group inside it out first."
        )
    if new_parent.id == group.parent_id:
        return group, []
    if any(g.slug == group.slug for g in children(tree, new_parent.id)):
        target = path_of(tree, new_parent.id).rstrip("/")
        raise InvalidInput(
            f"{target}/{group.slug} exists already; delete or move that group first."
            if target
            else f"{group.slug} exists already; delete or move that group first."
        )
    assert group.parent_id is not None
    moved = replace(group, parent_id=new_parent.id)
    return moved, [GroupMoved(group.id, group.parent_id, new_parent.id)]


def delete(
    tree: Tree, group: Group, members: Iterable[Membership]
) -> list[GroupDeleted | MembershipChanged]:
    """A group without subgroups and without primary members goes; its secondary members
    leave it (their membership rows go with it)."""
    path = path_of(tree, group.id)
    if group.is_root:
        raise NotAllowed("The root group / cannot be deleted.")
    inside = children(tree, group.id)
    if inside:
        raise InvalidInput(
            f"{path} still has groups inside ({', '.join(g.slug for g in inside)}); delete or "
            f"move them first (!group move {path}/{inside[0].slug} <new parent>)."
        )
    members = list(members)
    primary = [m.advisor for m in members if m.role is Role.PRIMARY]
    if primary:
        raise InvalidInput(
            f"{path} is the primary group of {', '.join(primary)}; give them another one first "
            f"(!group add <path> {primary[0]} primary)."
        )
    assert group.parent_id is not None
    events: list[GroupDeleted | MembershipChanged] = [
        MembershipChanged(group.id, m.advisor, None) for m in members
    ]
    events.append(GroupDeleted(group.id, group.parent_id, group.space_id))
    return events


def join(
    current: Iterable[Membership], group: Group, advisor: AdvisorMxid, role: Role
) -> tuple[list[Membership], list[Membership], list[MembershipChanged]]:
    """The advisor joins ``group`` as ``role``; ``current``: their memberships.

    Returns (rows to save, rows to remove, events). A new primary group replaces the old one
    (the advisor leaves the old group); a group that was their primary cannot become secondary
    (every advisor has one primary group)."""
    current = list(current)
    here = next((m for m in current if m.group_id == group.id), None)
    if here is not None and here.role is role:
        return [], [], []
    if role is Role.SECONDARY and here is not None:
        raise InvalidInput(
            f"This is {advisor}'s primary group; make another group primary first "
            f"(!group add <path> {advisor} primary)."
        )
    new = Membership(group.id, advisor, role)
    gone: list[Membership] = []
    if role is Role.PRIMARY:
        gone = [m for m in current if m.role is Role.PRIMARY and m.group_id != group.id]
    events = [MembershipChanged(m.group_id, advisor, None) for m in gone]
    events.append(MembershipChanged(group.id, advisor, role.value))
    return [new], gone, events


def leave(
    current: Iterable[Membership], group: Group, advisor: AdvisorMxid
) -> tuple[Membership, list[MembershipChanged]]:
    """The advisor leaves a secondary group; their primary group is changed with ``join``."""
    here = next((m for m in current if m.group_id == group.id), None)
    if here is None:
        raise NotFound(f"{advisor} is not a member of this group.")
    if here.role is Role.PRIMARY:
        raise InvalidInput(
            f"This is {advisor}'s primary group; every advisor has one. Give them another "
            f"(!group add <path> {advisor} primary) and they leave this one."
        )
    return here, [MembershipChanged(group.id, advisor, None)]
