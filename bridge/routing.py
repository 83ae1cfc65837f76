"""The routing queue's rules, as pure functions over snapshots (no I/O, no clock).

Visitors wait in first-come order. Each is offered to one advisor at a time, round-robin among
advisors who said they are available, whose Matrix presence allows it and who have spare
capacity. An advisor who let an offer expire is skipped for that visitor while anyone else can
take them.

Each visitor's topic maps to a group (:class:`GroupPools`): the visitor is offered only to that
group's primary members, then its secondary members if no primary member has room. A visitor
who asked a call sign goes to its group the same way, or only to its advisor. The root
group's members are every advisor. An advisor whose primary group is isolated is offered only
visitors whose topic maps to that group or a group inside it.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .callsigns import CallSign
from .groups import Group, GroupId, Membership, Role, ancestors, root
from .model import Advisor, AdvisorMxid, Conversation, ConversationStatus


def queue_order(conversations: Iterable[Conversation]) -> list[Conversation]:
    """The waiting conversations, first come first served."""
    waiting = [c for c in conversations if c.status is ConversationStatus.WAITING]
    return sorted(waiting, key=lambda c: (c.queued_at, c.created_at, c.id))


def queue_positions(conversations: Iterable[Conversation]) -> dict[str, int]:
    """Conversation id → 1-based place in the queue, for waiting conversations."""
    return {c.id: i for i, c in enumerate(queue_order(conversations), start=1)}


def advisor_load(conversations: Iterable[Conversation]) -> Counter[AdvisorMxid]:
    """How many visitors each advisor holds (offered or chatting)."""
    return Counter(
        c.advisor
        for c in conversations
        if c.advisor is not None
        and c.status in (ConversationStatus.INVITING, ConversationStatus.ACTIVE)
    )


class RoundRobin:
    """The ring of advisors for one routing pass: built once, then asked for each visitor.

    Each :meth:`next` continues after the advisor chosen last and counts the offer against
    that advisor's capacity, so a pass over a long queue costs O(offers × advisors) at worst
    and stops as soon as nobody has room (:attr:`exhausted`).
    """

    def __init__(
        self,
        advisors: Sequence[Advisor],
        load: Counter[AdvisorMxid],
        last_assigned: AdvisorMxid | None,
        *,
        default_capacity: int,
    ) -> None:
        self._ring = sorted(advisors, key=lambda a: a.mxid)
        self._ids = [a.mxid for a in self._ring]
        self._room = {
            a.mxid: (a.capacity if a.capacity is not None else default_capacity) - load[a.mxid]
            for a in self._ring
            if a.available and a.reachable
        }
        self._free = sum(1 for room in self._room.values() if room > 0)
        self.last = last_assigned

    @property
    def exhausted(self) -> bool:
        return self._free == 0

    def next(
        self,
        skipped: Sequence[AdvisorMxid] = (),
        among: Container[AdvisorMxid] | None = None,
    ) -> AdvisorMxid | None:
        """The next advisor with room after the last one chosen (skipped ones only if nobody
        else has room), counted as offered; None if nobody has room. ``among``: only these
        advisors (a group's pool); None: anyone."""
        if self._free == 0:
            return None
        start = bisect.bisect_right(self._ids, self.last) if self.last is not None else 0
        fallback: AdvisorMxid | None = None
        for i in range(len(self._ids)):
            mxid = self._ids[(start + i) % len(self._ids)]
            if self._room.get(mxid, 0) <= 0 or (among is not None and mxid not in among):
                continue
            if mxid not in skipped:
                return self._take(mxid)
            fallback = fallback or mxid
        return self._take(fallback) if fallback is not None else None

    def next_in(self, pools: Pools, skipped: Sequence[AdvisorMxid] = ()) -> AdvisorMxid | None:
        """The next advisor of ``pools``: a primary member with room (not skipped, else
        skipped), then a secondary member likewise; None if none of them has room."""
        if pools.full:
            return None
        for among in pools.tiers:
            found = self.next(skipped, among)
            if found is not None:
                return found
        pools.full = True  # rooms only shrink during a pass: skip this pool from now on
        return None

    def _take(self, mxid: AdvisorMxid) -> AdvisorMxid:
        self._room[mxid] -= 1
        if self._room[mxid] == 0:
            self._free -= 1
        self.last = mxid
        return mxid


def pick_advisor(
    advisors: Sequence[Advisor],
    load: Counter[AdvisorMxid],
    last_assigned: AdvisorMxid | None,
    *,
    default_capacity: int,
    skipped: Sequence[AdvisorMxid] = (),
) -> AdvisorMxid | None:
    """The next advisor after ``last_assigned`` in a stable ring who can take one more visitor.

    Advisors in ``skipped`` are passed over while anyone else qualifies; if only they qualify,
    the visitor is offered to them again rather than left waiting for nobody.
    """
    ring = RoundRobin(advisors, load, last_assigned, default_capacity=default_capacity)
    return ring.next(skipped)


@dataclass
class Pools:
    """Who may be offered the visitors of one group: ``primary`` first, then ``secondary``
    (None: every advisor). ``full`` is set once nobody in them had room during a pass."""

    primary: Container[AdvisorMxid] | None
    secondary: frozenset[AdvisorMxid]
    full: bool = False

    @property
    def tiers(self) -> list[Container[AdvisorMxid] | None]:
        return [self.primary, self.secondary] if self.secondary else [self.primary]


class GroupPools:
    """The pools of one routing pass: built once from the tree, every membership and the
    topic → group mapping, then asked per visitor (one dictionary look-up each)."""

    def __init__(
        self,
        tree: Mapping[GroupId, Group],
        memberships: Iterable[Membership],
        topic_groups: Mapping[str, GroupId],
        call_signs: Mapping[str, CallSign] | None = None,
    ) -> None:
        self._tree = tree
        self._call_signs = call_signs or {}
        self._advisor_pools: dict[AdvisorMxid, Pools] = {}
        self._root = root(tree).id if tree else None
        self._topic_groups = topic_groups
        primary: dict[GroupId, set[AdvisorMxid]] = {}
        secondary: dict[GroupId, set[AdvisorMxid]] = {}
        self._home: dict[AdvisorMxid, GroupId] = {}
        for m in memberships:
            (primary if m.role is Role.PRIMARY else secondary).setdefault(m.group_id, set()).add(
                m.advisor
            )
            if m.role is Role.PRIMARY:
                self._home[m.advisor] = m.group_id
        self._primary = primary
        self._secondary = secondary
        self._pools: dict[GroupId, Pools] = {}

    def group_of(self, topic: str) -> GroupId | None:
        """The group a topic's visitors go to: its mapped group if that still exists, else
        the root."""
        group_id = self._topic_groups.get(topic)
        return group_id if group_id is not None and group_id in self._tree else self._root

    def for_conversation(self, conversation: Conversation) -> Pools:
        """The pools of a waiting visitor: their call sign's advisor or group, if they asked
        one (and it still exists), else their topic's group."""
        call_sign = self._call_signs.get(conversation.call_sign or "")
        if call_sign is not None and call_sign.advisor is not None:
            advisor = call_sign.advisor
            if advisor not in self._advisor_pools:
                self._advisor_pools[advisor] = Pools(frozenset({advisor}), frozenset())
            return self._advisor_pools[advisor]
        if call_sign is not None and call_sign.group_id in self._tree:
            group_id = call_sign.group_id
            assert group_id is not None
            if group_id not in self._pools:
                self._pools[group_id] = self._build(group_id)
            return self._pools[group_id]
        return self.for_topic(conversation.topic)

    def for_topic(self, topic: str) -> Pools:
        group_id = self.group_of(topic)
        if group_id is None:  # no tree at all: everyone, as before groups
            return self._pools.setdefault(GroupId(""), Pools(None, frozenset()))
        if group_id not in self._pools:
            self._pools[group_id] = self._build(group_id)
        return self._pools[group_id]

    def _build(self, group_id: GroupId) -> Pools:
        shut_out = self._isolated_elsewhere(group_id)
        if group_id == self._root:
            if not shut_out:
                return Pools(None, frozenset())
            everyone_else = _Except(frozenset(shut_out))
            return Pools(everyone_else, frozenset())
        primary = frozenset(self._primary.get(group_id, ())) - shut_out
        secondary = frozenset(self._secondary.get(group_id, ())) - shut_out - primary
        return Pools(primary, secondary)

    def _isolated_elsewhere(self, group_id: GroupId) -> set[AdvisorMxid]:
        """Advisors whose primary group is isolated and is neither ``group_id`` nor one of
        its ancestors (their visitors are those of their group and the groups inside it)."""
        allowed = {group_id, *(g.id for g in ancestors(self._tree, group_id))}
        return {
            advisor
            for advisor, home in self._home.items()
            if home not in allowed and (g := self._tree.get(home)) is not None and g.isolated
        }


class _Except:
    """Every advisor but these (the root's pool when some advisors are isolated)."""

    def __init__(self, excluded: frozenset[AdvisorMxid]) -> None:
        self._excluded = excluded

    def __contains__(self, mxid: object) -> bool:
        return mxid not in self._excluded
