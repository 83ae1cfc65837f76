"""Which group each pre-chat topic's visitors are routed to (admins' ``!topic`` commands).

The mapping is one setting (``routing.topic_groups``: topic id → group id, JSON), read in one
go by each routing pass. A topic not in it, or mapped to a group deleted since, goes to the
root group: every advisor, as before groups, so old configurations route as they did.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from .. import groups as rules
from ..errors import NotFound
from ..events import QueueChanged
from ..groups import Group, GroupId, Membership, Role
from ..model import AdvisorMxid
from ..outbox import UnitOfWork
from ..ports import Store
from ..routing import GroupPools

log = logging.getLogger(__name__)

TOPIC_GROUPS_KEY = "routing.topic_groups"


async def read_topic_groups(store: Store) -> dict[str, GroupId]:
    raw = await store.get_setting(TOPIC_GROUPS_KEY)
    if not raw:
        return {}
    try:
        loaded = json.loads(raw)
    except ValueError:
        log.warning("the setting %s is not JSON; every topic goes to the root", TOPIC_GROUPS_KEY)
        return {}
    return {str(k): GroupId(str(v)) for k, v in loaded.items()} if isinstance(loaded, dict) else {}


async def read_pools(store: Store) -> GroupPools:
    """The routing pass's pools: the tree, the members of every group but the root (whose
    members are everyone), the topic mapping and the call signs, each read once."""
    tree = {g.id: g for g in await store.groups()}
    members: list[Membership] = []
    for group in tree.values():
        if not group.is_root:
            members.extend(await store.members_of(group.id))
    call_signs = {c.sign: c for c in await store.call_signs()}
    return GroupPools(tree, members, await read_topic_groups(store), call_signs)


@dataclass(frozen=True)
class TopicLine:
    """One line of ``!topic list``."""

    topic: str
    label: str
    path: str
    isolated: bool
    lost: bool = False  # mapped to a group deleted since: routed to the root again


class TopicService:
    """The admins' mapping of the pre-chat form's topics (``portal.topics``) to groups."""

    def __init__(self, store: Store, uow: UnitOfWork, topics: Mapping[str, str]) -> None:
        self._store = store
        self._uow = uow
        self._topics = topics

    async def table(self) -> list[TopicLine]:
        """Each configured topic, its label and the path of the group it is routed to."""
        tree: dict[GroupId, Group] = {g.id: g for g in await self._store.groups()}
        mapping = await read_topic_groups(self._store)
        pools = GroupPools(tree, [], mapping)
        lines = []
        for topic, label in self._topics.items():
            group_id = pools.group_of(topic)
            group = tree.get(group_id) if group_id is not None else None
            path = rules.path_of(tree, group.id) if group else rules.ROOT_PATH
            lost = topic in mapping and mapping[topic] not in tree
            lines.append(TopicLine(topic, label, path, bool(group and group.isolated), lost))
        return lines

    async def route(self, topic: str, path: str) -> str:
        """Route ``topic``'s visitors to the group at ``path`` from the next pass on; the
        group's path."""
        if topic not in self._topics:
            known = ", ".join(self._topics) or "none"
            raise NotFound(f"There is no topic {topic!r}; the topics are: {known}.")
        async with self._uow() as batch, self._store.exclusive("groups"):
            tree = {g.id: g for g in await self._store.groups()}
            group = rules.find(tree, path)
            mapping = await read_topic_groups(self._store)
            if group.is_root:
                mapping.pop(topic, None)
            else:
                mapping[topic] = group.id
            await self._store.set_setting(TOPIC_GROUPS_KEY, json.dumps(mapping, sort_keys=True))
            batch.raise_([QueueChanged()])  # waiting visitors of that topic: a pass now
        log.info("topic %s routed to group %s", topic, group.id)
        return rules.path_of(tree, group.id)

    async def scope_of(self, advisor: AdvisorMxid) -> tuple[str, set[str]] | None:
        """For an advisor whose primary group is isolated: its path and the topics whose
        visitors they may be routed (mapped to it or a group inside it), so that listings show
        them only their group's queue; None for everyone else (they see the whole queue)."""
        home = next(
            (m for m in await self._store.memberships_of(advisor) if m.role is Role.PRIMARY),
            None,
        )
        tree = {g.id: g for g in await self._store.groups()}
        group = tree.get(home.group_id) if home is not None else None
        if group is None or not group.isolated:
            return None
        pools = GroupPools(tree, [], await read_topic_groups(self._store))
        inside = [
            topic
            for topic in self._topics
            if (mapped := pools.group_of(topic)) is not None
            and (mapped == group.id or group.id in {a.id for a in rules.ancestors(tree, mapped)})
        ]
        return rules.path_of(tree, group.id), set(inside)
