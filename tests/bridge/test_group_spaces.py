"""Admins' group changes reach Matrix as spaces: made once, nested as the tree, renamed, moved,
deleted, and joined by their members (through the outbox, on the recording fake)."""

from __future__ import annotations

import pytest

from bridge.errors import InvalidInput
from bridge.groups import ROOT_ID, Role
from bridge.model import AdvisorMxid
from tests.fakes import Settled

from .conftest import Desk

ANA = AdvisorMxid("@ana:hs")


@pytest.fixture
def groups(desk: Desk) -> Settled:
    return Settled(desk.store, desk.outbox, desk.core.groups)


async def space_of(desk: Desk, path: str):
    line = next(line for line in await desk.core.groups.tree() if line.path == path)
    return line.group.space_id


async def test_a_new_advisor_is_a_primary_member_of_the_root_which_has_no_space(desk):
    await desk.advisor(ANA)
    assert await space_of(desk, "/") is None
    assert [(m.group_id, m.role) for m in await desk.store.memberships_of(ANA)] == [
        (ROOT_ID, Role.PRIMARY)
    ]
    assert desk.gateway.spaces == []


async def test_nested_groups_become_nested_spaces(desk, groups):
    await groups.create("support")
    await groups.create("support/billing", "Billing")
    support, billing = await space_of(desk, "support"), await space_of(desk, "support/billing")
    assert desk.gateway.links == {(support, billing)}
    assert ("space", billing, "Billing") in desk.gateway.spaces
    # each space made once, even if a handler runs again
    await desk.core.groups.make_space(*_created(desk, billing))
    assert len(desk.gateway.of_spaces("space")) == 2


def _created(desk: Desk, space):
    from bridge.events import GroupCreated
    from bridge.outbox import Attempt

    group = next(g for g in desk.store.groups_.values() if g.space_id == space)
    assert group.parent_id is not None
    return GroupCreated(group.id, group.parent_id), Attempt(0, 2)


async def test_a_move_relinks_and_a_rename_renames_the_space(desk, groups):
    await groups.create("support")
    await groups.create("sales")
    await groups.create("support/billing")
    assert await groups.move("support/billing", "sales") == "sales/billing"
    sales, billing = await space_of(desk, "sales"), await space_of(desk, "sales/billing")
    support = await space_of(desk, "support")
    assert (sales, billing) in desk.gateway.links
    assert (support, billing) not in desk.gateway.links
    await groups.rename("sales/billing", "Invoices")
    assert ("name", billing, "Invoices") in desk.gateway.spaces


async def test_members_are_invited_to_the_group_and_its_ancestors_and_removed_again(desk, groups):
    await desk.advisor(ANA)
    await groups.create("support")
    await groups.create("support/billing")
    await groups.add_member("support/billing", ANA, Role.SECONDARY)
    billing, support = await space_of(desk, "support/billing"), await space_of(desk, "support")
    assert {(billing, ANA), (support, ANA)} <= desk.gateway.in_space
    await groups.remove_member("support/billing", ANA)
    assert (billing, ANA) not in desk.gateway.in_space


async def test_a_new_primary_group_takes_the_advisor_out_of_the_old_one(desk, groups):
    await desk.advisor(ANA)
    await groups.create("support")
    await groups.add_member("support", ANA, Role.PRIMARY)
    assert [(m.group_id, m.role) for m in await desk.store.memberships_of(ANA)] == [
        ((await desk.core.groups.tree())[1].group.id, Role.PRIMARY)
    ]
    assert {(await space_of(desk, "support"), ANA)} == desk.gateway.in_space
    # the root cannot be deleted, nor a group that is someone's primary one
    with pytest.raises(InvalidInput, match="primary group of @ana:hs"):
        await groups.delete("support")


async def test_a_deleted_group_is_unlinked_and_the_bot_leaves_its_space(desk, groups):
    await groups.create("support")
    support = await space_of(desk, "support")
    await groups.delete("support")
    assert desk.gateway.links == set()
    assert ("space-leave", support) in desk.gateway.spaces
    assert [line.path for line in await desk.core.groups.tree()] == ["/"]
    # the path is free again: a new group there gets a new space
    await groups.create("support")
    assert await space_of(desk, "support") not in (None, support)


async def test_only_advisors_join_groups(desk, groups):
    await groups.create("support")
    with pytest.raises(Exception, match="not an advisor; add them first with !advisor add"):
        await groups.add_member("support", "@nobody:hs", Role.SECONDARY)
    assert ROOT_ID in desk.store.groups_


async def test_a_removed_advisor_is_removed_from_their_groups_spaces(desk, groups):
    await desk.advisor(ANA)
    await groups.create("support")
    await groups.add_member("support", ANA, Role.SECONDARY)
    assert desk.gateway.in_space == {(await space_of(desk, "support"), ANA)}
    await desk.advisors.remove(ANA)
    assert desk.gateway.in_space == set()
    assert await desk.store.memberships_of(ANA) == []
