"""The Groups port of the Store, one set of assertions on memory, SQLite and PostgreSQL (the
fixtures of test_store_contract): the root the migration made, the tree, and memberships with
one primary group per advisor."""

from __future__ import annotations

import dataclasses
import sqlite3

import asyncpg
import pytest

from bridge.groups import ROOT_ID, Group, GroupId, Membership, Role
from bridge.model import Advisor, AdvisorMxid, RoomId
from bridge.ports import Store
from tests.appservice import test_store_contract as contract

backend = contract.backend
store = contract.store
# what each store raises on a broken unique constraint
REFUSED = (ValueError, sqlite3.IntegrityError, asyncpg.UniqueViolationError)

ANN, BOB = AdvisorMxid("@ann:test"), AdvisorMxid("@bob:test")
SUPPORT = Group(GroupId("g1"), "support", "Support", ROOT_ID)


async def test_a_new_database_has_the_root_group_only(store: Store) -> None:
    assert await store.groups() == [Group(ROOT_ID, "desk", "All advisors", None)]


async def test_groups_are_added_changed_and_removed_with_their_members(store: Store) -> None:
    await store.add_group(SUPPORT)
    billing = Group(GroupId("g2"), "billing", "Billing", SUPPORT.id, isolated=True)
    await store.add_group(billing)
    assert await store.get_group(billing.id) == billing
    moved = dataclasses.replace(
        billing, parent_id=ROOT_ID, name="Invoices", space_id=RoomId("!s:test")
    )
    await store.save_group(moved)
    assert await store.get_group(billing.id) == moved
    await store.save_advisor(Advisor(ANN))
    await store.save_membership(Membership(billing.id, ANN, Role.SECONDARY))
    await store.remove_group(billing.id)
    assert await store.get_group(billing.id) is None
    assert await store.memberships_of(ANN) == []
    assert [g.id for g in await store.groups()] == [SUPPORT.id, ROOT_ID]


async def test_two_groups_cannot_share_a_path(store: Store) -> None:
    await store.add_group(SUPPORT)
    with pytest.raises(REFUSED):
        async with store.transaction():
            await store.add_group(dataclasses.replace(SUPPORT, id=GroupId("g9")))
    assert [g.id for g in await store.groups()] == [SUPPORT.id, ROOT_ID]


async def test_an_advisor_has_one_primary_group_and_many_secondary_ones(store: Store) -> None:
    await store.add_group(SUPPORT)
    for mxid in (ANN, BOB):
        await store.save_advisor(Advisor(mxid))
    await store.save_membership(Membership(ROOT_ID, ANN, Role.PRIMARY))
    await store.save_membership(Membership(SUPPORT.id, ANN, Role.SECONDARY))
    await store.save_membership(Membership(SUPPORT.id, BOB, Role.PRIMARY))
    assert await store.memberships_of(ANN) == [
        Membership(SUPPORT.id, ANN, Role.SECONDARY),
        Membership(ROOT_ID, ANN, Role.PRIMARY),
    ]
    assert [m.advisor for m in await store.members_of(SUPPORT.id)] == [ANN, BOB]
    with pytest.raises(REFUSED):
        async with store.transaction():
            # a second primary group: refused (the row says which one is primary)
            await store.save_membership(Membership(SUPPORT.id, ANN, Role.PRIMARY))
    # the role of a membership is overwritten in place
    await store.remove_membership(ROOT_ID, ANN)
    await store.save_membership(Membership(SUPPORT.id, ANN, Role.PRIMARY))
    assert await store.memberships_of(ANN) == [Membership(SUPPORT.id, ANN, Role.PRIMARY)]


async def test_removing_an_advisor_removes_their_memberships(store: Store) -> None:
    await store.save_advisor(Advisor(ANN))
    await store.save_membership(Membership(ROOT_ID, ANN, Role.PRIMARY))
    assert await store.remove_advisor(ANN)
    assert await store.members_of(ROOT_ID) == []
