"""The group tree's rules: paths, slugs, create, rename, move, delete and memberships."""

from __future__ import annotations

import pytest

from bridge import groups
from bridge.errors import InvalidInput, NotAllowed, NotFound
from bridge.events import GroupCreated, GroupDeleted, GroupMoved, GroupRenamed, MembershipChanged
from bridge.groups import ROOT_ID, Group, GroupId, Membership, Role
from bridge.model import AdvisorMxid, RoomId

ANA, BOB = AdvisorMxid("@ana:hs"), AdvisorMxid("@bob:hs")
ROOT = Group(ROOT_ID, "desk", "All advisors", None)


def tree_of(*paths: str) -> dict[GroupId, Group]:
    tree = {ROOT_ID: ROOT}
    for n, path in enumerate(paths):
        group, _ = groups.create(tree, GroupId(f"g{n}"), path)
        tree[group.id] = group
    return tree


def test_a_group_is_created_under_an_existing_parent_and_raises_its_space_work():
    tree = tree_of("support")
    group, events = groups.create(tree, GroupId("b"), "support/billing", "Billing")
    assert (group.slug, group.name, group.parent_id, group.space_id) == (
        "billing",
        "Billing",
        GroupId("g0"),
        None,
    )
    assert events == [GroupCreated(GroupId("b"), GroupId("g0"))]
    assert events[0].key == "g:b"
    tree[group.id] = group
    assert groups.path_of(tree, group.id) == "support/billing"
    assert groups.find(tree, "support/billing") == group
    assert groups.path_of(tree, ROOT_ID) == "/"


def test_a_group_under_a_missing_parent_is_refused_naming_the_missing_part():
    with pytest.raises(NotFound, match="no group support;.*!group create support"):
        groups.create(tree_of(), GroupId("b"), "support/billing")


def test_a_second_group_at_the_same_path_is_refused():
    with pytest.raises(InvalidInput, match="exists already"):
        groups.create(tree_of("support"), GroupId("x"), "support")


@pytest.mark.parametrize(
    "path, says",
    [
        ("Support", "'support'"),
        ("sup port", "'sup-port'"),
        ("-support", "not first or last"),
        ("support//billing", "empty part"),
        ("", "by its path"),
        ("a" * 33, "too long"),
        ("facturación", "'facturaci-n'"),
    ],
)
def test_a_bad_slug_is_refused_with_what_is_allowed(path, says):
    with pytest.raises(InvalidInput, match=says):
        groups.create(tree_of(), GroupId("x"), path)


def test_the_root_cannot_be_created_moved_or_deleted():
    tree = tree_of("support")
    with pytest.raises(InvalidInput):
        groups.create(tree, GroupId("x"), "/")
    with pytest.raises(NotAllowed):
        groups.move(tree, ROOT, tree[GroupId("g0")])
    with pytest.raises(NotAllowed):
        groups.delete(tree, ROOT, [])


def test_rename_changes_the_display_name_and_keeps_the_path():
    tree = tree_of("support")
    renamed, events = groups.rename(tree[GroupId("g0")], "  Customer   support ")
    assert (renamed.name, renamed.slug) == ("Customer support", "support")
    assert events == [GroupRenamed(GroupId("g0"))]
    assert groups.rename(renamed, "Customer support") == (renamed, [])
    with pytest.raises(InvalidInput, match="empty"):
        groups.rename(renamed, "  ")


def test_move_re_parents_the_group_and_everything_under_it():
    tree = tree_of("support", "support/billing", "sales")
    billing = tree[GroupId("g1")]
    moved, events = groups.move(tree, billing, tree[GroupId("g2")])
    assert events == [GroupMoved(GroupId("g1"), GroupId("g0"), GroupId("g2"))]
    tree[moved.id] = moved
    assert groups.path_of(tree, moved.id) == "sales/billing"
    # to the root, and nowhere new: no event
    moved, events = groups.move(tree, moved, ROOT)
    tree[moved.id] = moved
    assert groups.path_of(tree, moved.id) == "billing"
    assert groups.move(tree, moved, ROOT) == (moved, [])


def test_a_group_cannot_move_under_itself_or_a_group_inside_it():
    tree = tree_of("support", "support/billing", "support/billing/es")
    support = tree[GroupId("g0")]
    for target in ("g0", "g1", "g2"):
        with pytest.raises(InvalidInput, match="under itself or a group inside it"):
            groups.move(tree, support, tree[GroupId(target)])


def test_a_move_onto_a_taken_name_is_refused():
    tree = tree_of("support", "support/billing", "billing")
    with pytest.raises(InvalidInput, match="billing exists already"):
        groups.move(tree, tree[GroupId("g1")], ROOT)


def test_delete_refuses_a_group_with_subgroups_or_primary_members_and_says_what_to_do():
    tree = tree_of("support", "support/billing")
    with pytest.raises(InvalidInput, match=r"inside \(billing\).*!group move support/billing"):
        groups.delete(tree, tree[GroupId("g0")], [])
    billing = tree[GroupId("g1")]
    with pytest.raises(InvalidInput, match="primary group of @ana:hs.*!group add <path> @ana:hs"):
        groups.delete(tree, billing, [Membership(billing.id, ANA, Role.PRIMARY)])


def test_delete_of_a_group_with_secondary_members_removes_them_from_its_space():
    tree = tree_of("support")
    support = tree[GroupId("g0")].space_made(RoomId("!s:hs"))
    events = groups.delete(tree, support, [Membership(support.id, BOB, Role.SECONDARY)])
    assert events == [
        MembershipChanged(support.id, BOB, None),
        GroupDeleted(support.id, ROOT_ID, RoomId("!s:hs")),
    ]


def test_a_new_primary_group_replaces_the_old_one():
    tree = tree_of("support")
    support = tree[GroupId("g0")]
    old = [Membership(ROOT_ID, ANA, Role.PRIMARY)]
    save, gone, events = groups.join(old, support, ANA, Role.PRIMARY)
    assert save == [Membership(support.id, ANA, Role.PRIMARY)]
    assert gone == old
    assert events == [
        MembershipChanged(ROOT_ID, ANA, None),
        MembershipChanged(support.id, ANA, "primary"),
    ]
    assert groups.join(save, support, ANA, Role.PRIMARY) == ([], [], [])


def test_secondary_groups_add_up_and_a_primary_group_cannot_become_secondary():
    tree = tree_of("support", "sales")
    primary = [Membership(ROOT_ID, ANA, Role.PRIMARY)]
    save, gone, _ = groups.join(primary, tree[GroupId("g0")], ANA, Role.SECONDARY)
    assert gone == []
    save2, gone2, _ = groups.join(primary + save, tree[GroupId("g1")], ANA, Role.SECONDARY)
    assert (len(save2), gone2) == (1, [])
    with pytest.raises(InvalidInput, match="primary group"):
        groups.join(primary, ROOT, ANA, Role.SECONDARY)
    # a secondary group may become the primary one
    save3, gone3, _ = groups.join(primary + save, tree[GroupId("g0")], ANA, Role.PRIMARY)
    assert (save3[0].role, gone3) == (Role.PRIMARY, primary)


def test_leaving_a_secondary_group_is_allowed_and_the_primary_one_is_not():
    tree = tree_of("support")
    support = tree[GroupId("g0")]
    rows = [Membership(ROOT_ID, ANA, Role.PRIMARY), Membership(support.id, ANA, Role.SECONDARY)]
    gone, events = groups.leave(rows, support, ANA)
    assert gone == rows[1] and events == [MembershipChanged(support.id, ANA, None)]
    with pytest.raises(InvalidInput, match="primary group"):
        groups.leave(rows, ROOT, ANA)
    with pytest.raises(NotFound):
        groups.leave([], support, BOB)


def test_ancestors_go_up_to_the_root():
    tree = tree_of("support", "support/billing")
    assert [g.id for g in groups.ancestors(tree, GroupId("g1"))] == [GroupId("g0"), ROOT_ID]
