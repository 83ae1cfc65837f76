"""The advisors' view of the directory: ``!find`` (groups, advisors and call signs by keyword) and
``!directory`` (the tree with who is available where).

Advisors see everyone, with a mark on those the public would be shown (presence ``online``
and said ``!available``); an advisor whose primary group is isolated sees only that group and
the groups inside it (see :meth:`TopicService.scope_of`).
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from .. import groups as rules
from .. import keywords
from ..groups import Group
from ..model import Advisor, AdvisorMxid, Presence
from ..ports import Store
from .callsigns import CallSignLine, CallSignService
from .topics import TopicService


class Availability(str, enum.Enum):
    """How a listing shows an advisor; only ``available`` is ever shown to the public."""

    AVAILABLE = "available"  # presence online and said !available
    AWAY = "away"  # said !away, or their client says idle
    OFFLINE = "offline"
    UNKNOWN = "unknown"  # the homeserver has not told us their presence


def availability(advisor: Advisor) -> Availability:
    if advisor.presence is Presence.OFFLINE:
        return Availability.OFFLINE
    if advisor.available and advisor.presence is Presence.ONLINE:
        return Availability.AVAILABLE
    if not advisor.available or advisor.presence is Presence.UNAVAILABLE:
        return Availability.AWAY
    return Availability.UNKNOWN


@dataclass(frozen=True)
class GroupEntry:
    """A group with how many of its members the public would be shown now."""

    path: str
    depth: int
    group: Group
    available: int
    members: int


@dataclass(frozen=True)
class AdvisorEntry:
    advisor: Advisor
    availability: Availability


@dataclass(frozen=True)
class Found:
    groups: list[GroupEntry]
    advisors: list[AdvisorEntry]
    scope: str | None  # the isolated group's path the listing was limited to
    call_signs: list[CallSignLine] = dataclasses.field(default_factory=list)


class DirectoryService:
    """Read-only listings of the groups and advisors for the bot's ``!find`` and
    ``!directory``."""

    def __init__(
        self, store: Store, topics: TopicService, call_signs: CallSignService | None = None
    ) -> None:
        self._store = store
        self._topics = topics
        self._call_signs = call_signs

    async def tree(self, viewer: AdvisorMxid | None) -> tuple[list[GroupEntry], str | None]:
        """The groups ``viewer`` may see (None: an admin, everything), depth first, with
        counts; and the isolated group's path they are limited to, if any."""
        entries, _, scope = await self._read(viewer)
        return entries, scope

    async def find(self, query: str, viewer: AdvisorMxid | None) -> Found:
        """The groups (by path and display name), advisors (by Matrix id and display name)
        and call signs (by sign, keywords and target's name) that match every word of
        ``query``."""
        entries, advisors, scope = await self._read(viewer)
        groups = [e for e in entries if keywords.matches(query, e.path, e.group.name)]
        found = [
            AdvisorEntry(a, availability(a))
            for a in advisors
            if keywords.matches(query, a.mxid.split(":", 1)[0], a.name)
        ]
        signs = []
        if self._call_signs is not None:
            # an isolated group's members see only the call signs of its people and groups
            people = {a.mxid for a in advisors}
            groups_seen = {e.group.id for e in entries}
            signs = [
                line
                for line in await self._call_signs.lines()
                if keywords.matches(query, line.call_sign.sign, line.call_sign.keywords, line.name)
                and (
                    scope is None
                    or line.call_sign.advisor in people
                    or line.call_sign.group_id in groups_seen
                )
            ]
        return Found(groups, sorted(found, key=lambda e: e.advisor.mxid), scope, signs)

    async def _read(
        self, viewer: AdvisorMxid | None
    ) -> tuple[list[GroupEntry], list[Advisor], str | None]:
        tree = {g.id: g for g in await self._store.groups()}
        everyone = {a.mxid: a for a in await self._store.advisors()}
        scope = await self._topics.scope_of(viewer) if viewer is not None else None
        top = rules.find(tree, scope[0]) if scope else rules.root(tree)
        entries: list[GroupEntry] = []
        seen: set[AdvisorMxid] = set()

        async def walk(group: Group, depth: int) -> None:
            if group.is_root:
                members = set(everyone)
            else:
                members = {m.advisor for m in await self._store.members_of(group.id)}
                members &= set(everyone)
            seen.update(members)
            ready = sum(availability(everyone[m]) is Availability.AVAILABLE for m in members)
            path = rules.path_of(tree, group.id)
            entries.append(GroupEntry(path, depth, group, ready, len(members)))
            for child in rules.children(tree, group.id):
                await walk(child, depth + 1)

        await walk(top, 0)
        return entries, [everyone[m] for m in sorted(seen)], (scope[0] if scope else None)
