"""Routing by groups: a topic's visitors go to its group's primary members, then its secondary
members; isolated groups' members get only their own visitors. Pure rules, then through the
services on the recording fake."""

from __future__ import annotations

from collections import Counter

import pytest

from bridge.errors import NotAllowed, NotFound
from bridge.groups import Group, GroupId, Membership, Role
from bridge.model import Advisor, AdvisorMxid, ConversationStatus
from bridge.routing import GroupPools, RoundRobin

from .conftest import Desk

A, B, C, D = (AdvisorMxid(f"@{n}:hs") for n in ("ana", "bob", "cid", "dan"))
ROOT = Group(GroupId("root"), "", "All", None)
SUPPORT = Group(GroupId("s"), "support", "Support", ROOT.id)
BILLING = Group(GroupId("b"), "billing", "Billing", SUPPORT.id)
SALES = Group(GroupId("x"), "sales", "Sales", ROOT.id)


def tree(*groups: Group) -> dict[GroupId, Group]:
    return {g.id: g for g in (ROOT, *groups)}


def ring(*mxids: AdvisorMxid, load: Counter | None = None) -> RoundRobin:
    advisors = [Advisor(mxid=m, available=True) for m in mxids]
    return RoundRobin(advisors, load or Counter(), None, default_capacity=1)


def test_a_topic_goes_to_its_groups_primary_members_before_secondary_ones():
    members = [
        Membership(BILLING.id, B, Role.PRIMARY),
        Membership(BILLING.id, C, Role.SECONDARY),
        Membership(ROOT.id, A, Role.PRIMARY),
    ]
    pools = GroupPools(tree(SUPPORT, BILLING), members, {"billing": BILLING.id})
    r = ring(A, B, C)
    assert r.next_in(pools.for_topic("billing")) == B  # A sorts first but is not in billing
    assert r.next_in(pools.for_topic("billing")) == C  # B full (capacity 1): the secondary
    assert r.next_in(pools.for_topic("billing")) is None  # A is never asked
    assert r.next_in(pools.for_topic("general")) == A  # unmapped topic: the root, everyone


def test_a_skipped_primary_is_asked_again_only_if_no_one_else_in_the_group_has_room():
    members = [Membership(BILLING.id, B, Role.PRIMARY), Membership(BILLING.id, C, Role.PRIMARY)]
    pools = GroupPools(tree(SUPPORT, BILLING), members, {"billing": BILLING.id})
    assert ring(A, B, C).next_in(pools.for_topic("billing"), skipped=[B]) == C
    assert ring(A, B).next_in(pools.for_topic("billing"), skipped=[B]) == B


def test_a_topic_mapped_to_a_deleted_group_goes_to_everyone():
    pools = GroupPools(tree(), [], {"billing": GroupId("gone")})
    assert pools.group_of("billing") == ROOT.id
    assert ring(A).next_in(pools.for_topic("billing")) == A


def test_members_of_an_isolated_group_get_only_its_own_visitors_and_those_inside_it():
    isolated = Group(SUPPORT.id, "support", "Support", ROOT.id, isolated=True)
    members = [
        Membership(isolated.id, A, Role.PRIMARY),
        Membership(SALES.id, A, Role.SECONDARY),
        Membership(BILLING.id, A, Role.SECONDARY),
        Membership(SALES.id, B, Role.PRIMARY),
    ]
    topics = {"support": isolated.id, "sales": SALES.id, "billing": BILLING.id}
    pools = GroupPools(tree(isolated, BILLING, SALES), members, topics)
    assert ring(A, B).next_in(pools.for_topic("general")) == B  # the root: not A
    assert ring(A).next_in(pools.for_topic("general")) is None
    assert ring(A).next_in(pools.for_topic("sales")) is None  # secondary there, but isolated
    assert ring(A).next_in(pools.for_topic("billing")) == A  # a group inside theirs
    assert ring(A, B).next_in(pools.for_topic("support")) == A
    assert ring(B).next_in(pools.for_topic("support")) is None


def test_a_full_pool_is_not_searched_again_in_the_same_pass():
    members = [Membership(BILLING.id, B, Role.PRIMARY)]
    pools = GroupPools(tree(SUPPORT, BILLING), members, {"billing": BILLING.id})
    r = ring(A, B, load=Counter({B: 1}))
    billing = pools.for_topic("billing")
    assert r.next_in(billing) is None and billing.full
    assert pools.for_topic("billing") is billing
    assert r.next_in(pools.for_topic("general")) == A


async def test_a_billing_visitor_is_offered_to_billing_primary_then_secondary(desk: Desk):
    for mxid in (A, B, C):
        await desk.advisor(mxid, capacity=1)
    await desk.core.groups.create("support")
    await desk.core.groups.create("support/billing")
    await desk.core.groups.add_member("support/billing", B, Role.PRIMARY)
    await desk.core.groups.add_member("support/billing", C, Role.SECONDARY)
    assert await desk.core.topics.route("billing", "support/billing") == "support/billing"
    await desk.settle()
    first = await desk.visitor("s1", topic="billing")
    assert (await desk.conv(first)).advisor == B
    second = await desk.visitor("s2", topic="billing")
    assert (await desk.conv(second)).advisor == C
    third = await desk.visitor("s3", topic="billing")
    assert (await desk.conv(third)).status is ConversationStatus.WAITING  # A is not asked
    general = await desk.visitor("s4")
    assert (await desk.conv(general)).advisor == A


async def test_routing_a_topic_offers_its_waiting_visitors_at_once(desk: Desk):
    await desk.advisor(A)
    await desk.core.groups.create("sales")
    await desk.core.groups.isolate("sales", True)
    await desk.core.groups.add_member("sales", A, Role.PRIMARY)
    await desk.settle()
    waiting = await desk.visitor("s1", topic="billing")
    assert (await desk.conv(waiting)).status is ConversationStatus.WAITING
    await desk.core.topics.route("billing", "sales")
    await desk.settle()
    assert (await desk.conv(waiting)).advisor == A
    lines = {line.topic: line for line in await desk.core.topics.table()}
    assert (lines["billing"].path, lines["billing"].isolated) == ("sales", True)
    assert (lines["general"].path, lines["general"].isolated) == ("/", False)


async def test_bad_topic_route_and_isolate_commands_say_what_is_wrong(desk: Desk):
    with pytest.raises(NotFound, match="general, billing"):
        await desk.core.topics.route("nope", "/")
    with pytest.raises(NotFound, match="no group sales"):
        await desk.core.topics.route("billing", "sales")
    with pytest.raises(NotAllowed):
        await desk.core.groups.isolate("/", True)
    await desk.core.groups.create("sales")
    assert await desk.core.groups.isolate("sales", True)
    assert not await desk.core.groups.isolate("sales", True)
