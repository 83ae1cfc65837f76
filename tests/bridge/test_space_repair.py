"""Drift of the groups' spaces (deleted by hand, the bot removed, a link or a member gone) is
found by one reconciliation, reported, and repaired by the outbox's handlers (recording fake)."""

from __future__ import annotations

import pytest

from bridge.groups import Role
from bridge.model import AdvisorMxid
from tests.fakes import Settled

from .conftest import Desk

ANA = AdvisorMxid("@ana:hs")
BEA = AdvisorMxid("@bea:hs")


@pytest.fixture
def groups(desk: Desk) -> Settled:
    return Settled(desk.store, desk.outbox, desk.core.groups)


async def space_of(desk: Desk, path: str):
    line = next(line for line in await desk.core.groups.tree() if line.path == path)
    return line.group.space_id


async def repair(desk: Desk):
    report = await desk.core.space_repair.reconcile()
    await desk.settle()
    return report


@pytest.fixture
async def tree(desk: Desk, groups: Settled) -> None:
    """support/billing with Ana in billing (so in support's space too), Bea in support."""
    await desk.advisor(ANA)
    await desk.advisor(BEA)
    await groups.create("support")
    await groups.create("support/billing")
    await groups.create("support/billing/vat")
    await groups.add_member("support/billing", ANA, Role.PRIMARY)
    await groups.add_member("support", BEA, Role.SECONDARY)


async def test_spaces_in_step_need_no_repair(desk, tree):
    before = list(desk.gateway.spaces)
    report = await repair(desk)
    assert report.clean and report.checked == 3
    assert report.summary() == "Every group space is in step with the directory (3 checked)."
    assert desk.gateway.spaces == before


async def test_a_space_deleted_by_hand_is_made_again_linked_and_its_members_invited(desk, tree):
    old = await space_of(desk, "support/billing")
    support, vat = await space_of(desk, "support"), await space_of(desk, "support/billing/vat")
    desk.gateway.lose_space(old)
    report = await repair(desk)
    assert report.lines == [f"support/billing: space {old} is gone; a new one is made"]
    new = await space_of(desk, "support/billing")
    assert new not in (None, old)
    assert {(support, new), (new, vat)} <= desk.gateway.links
    assert ("unlink", support, old) in desk.gateway.spaces
    assert (new, ANA) in desk.gateway.in_space
    # a second look finds nothing more to do
    assert (await repair(desk)).clean


async def test_a_space_the_bot_was_kicked_from_is_replaced_with_its_whole_subtree_relinked(
    desk, tree
):
    support, billing = await space_of(desk, "support"), await space_of(desk, "support/billing")
    vat = await space_of(desk, "support/billing/vat")
    desk.gateway.lose_space(support)
    desk.gateway.lose_space(billing)
    report = await repair(desk)
    assert len(report.lines) == 2 and all("is gone" in line for line in report.lines)
    support2, billing2 = await space_of(desk, "support"), await space_of(desk, "support/billing")
    assert {(support2, billing2), (billing2, vat)} <= desk.gateway.links
    assert {(support2, ANA), (support2, BEA), (billing2, ANA)} <= desk.gateway.in_space
    # each lost space under its own new key: a retry of the repair finds the same one
    keys = [k for k, room in desk.gateway.room_keys.items() if room in (support2, billing2)]
    assert len(keys) == 2 and all("_r" in k for k in keys)
    assert (await repair(desk)).clean


async def test_a_child_link_removed_by_hand_is_set_again(desk, tree):
    support, billing = await space_of(desk, "support"), await space_of(desk, "support/billing")
    desk.gateway.links.discard((support, billing))
    report = await repair(desk)
    assert report.lines == ["support/billing: the link to its parent's space is set again"]
    assert (support, billing) in desk.gateway.links


async def test_a_member_who_left_a_space_by_hand_is_invited_again_once(desk, tree):
    billing = await space_of(desk, "support/billing")
    desk.gateway.in_space.discard((billing, ANA))
    report = await repair(desk)
    assert report.lines == [f"support/billing: {ANA} is not in its space; invited again"]
    assert (billing, ANA) in desk.gateway.in_space
    invites = desk.gateway.of_spaces("space-invite").count(("space-invite", billing, ANA))
    assert (await repair(desk)).clean
    assert desk.gateway.of_spaces("space-invite").count(("space-invite", billing, ANA)) == invites


async def test_a_group_deleted_before_its_repair_runs_is_left_alone(desk, groups, tree):
    vat = await space_of(desk, "support/billing/vat")
    desk.gateway.lose_space(vat)
    await desk.core.space_repair.reconcile()
    await groups.delete("support/billing/vat")  # drains the repair too, after the delete
    assert len(desk.gateway.of_spaces("space")) == 3
