"""The routing queue's rules, as pure functions over snapshots (no I/O, no clock).

Visitors wait in first-come order. Each is offered to one advisor at a time, round-robin among
advisors who said they are available, whose Matrix presence allows it and who have spare
capacity. An advisor who let an offer expire is skipped for that visitor while anyone else can
take them.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Iterable, Sequence

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

    def next(self, skipped: Sequence[AdvisorMxid] = ()) -> AdvisorMxid | None:
        """The next advisor with room after the last one chosen (skipped ones only if nobody
        else has room), counted as offered; None if nobody has room."""
        if self._free == 0:
            return None
        start = bisect.bisect_right(self._ids, self.last) if self.last is not None else 0
        fallback: AdvisorMxid | None = None
        for i in range(len(self._ids)):
            mxid = self._ids[(start + i) % len(self._ids)]
            if self._room.get(mxid, 0) <= 0:
                continue
            if mxid not in skipped:
                return self._take(mxid)
            fallback = fallback or mxid
        return self._take(fallback) if fallback is not None else None

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
