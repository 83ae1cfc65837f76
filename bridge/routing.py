"""The routing queue's rules, as pure functions over snapshots (no I/O, no clock).

Visitors wait in first-come order. Each is offered to one advisor at a time, round-robin among
advisors who said they are available, whose Matrix presence allows it and who have spare
capacity. An advisor who let an offer expire is skipped for that visitor while anyone else can
take them.
"""

from __future__ import annotations

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


def eligible(advisor: Advisor, load: Counter[AdvisorMxid], default_capacity: int) -> bool:
    capacity = advisor.capacity if advisor.capacity is not None else default_capacity
    return advisor.available and advisor.reachable and load[advisor.mxid] < capacity


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
    ring = sorted(advisors, key=lambda a: a.mxid)
    if not ring:
        return None
    start = 0
    if last_assigned is not None:
        # first advisor strictly after the cursor, so the ring survives advisors leaving it
        start = next((i for i, a in enumerate(ring) if a.mxid > last_assigned), 0)
    ordered = ring[start:] + ring[:start]
    candidates = [a for a in ordered if eligible(a, load, default_capacity)]
    for advisor in candidates:
        if advisor.mxid not in skipped:
            return advisor.mxid
    return candidates[0].mxid if candidates else None
