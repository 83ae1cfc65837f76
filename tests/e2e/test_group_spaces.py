"""Advisor groups as Matrix spaces, as a real client sees them: invites to the spaces of an
advisor's group and its ancestors, the spaces nested by m.space.child/m.space.parent, a move
that re-links them and a rename that renames."""

from __future__ import annotations

from tests.desks import start_with_admin


async def test_groups_become_nested_spaces_an_advisor_is_invited_to(desks, people):
    admin = await start_with_admin(desks, people)
    desk = admin.desk
    ana = await people.advisor(None, "ana")
    server = desk.config.homeserver.domain

    await admin.ask(f"!advisor add {ana.user_id}", f"{ana.user_id} is now an advisor")
    control = await ana.wait_for_invite()  # the direct chat with the bot
    await admin.tell(
        ("!group create support Support", "Group support (Support) created"),
        ("!group create support/billing Billing", "Group support/billing (Billing) created"),
        (
            f"!group add support/billing {ana.user_id} secondary",
            "is now in support/billing (secondary)",
        ),
    )

    # the spaces were made (and stored) before their members were invited
    async def space(path: str) -> str:
        (line,) = [line for line in await desk.desk.groups.tree() if line.path == path]
        assert line.group.space_id is not None, path
        return str(line.group.space_id)

    def named(name: str):
        return lambda r: ana.state.get(r, {}).get(("m.room.name", ""), {}).get("name") == name

    billing = await ana.wait_for_invite(named("Billing"), timeout=20)
    support = await ana.wait_for_invite(named("Support"))
    assert (billing, support) == (await space("support/billing"), await space("support"))
    # the root (every advisor) has no space: only the DM with the bot and the two spaces
    assert set(ana.invites) == {control, billing, support}
    await ana.join(support)
    await ana.join(billing)
    for room in (billing, support):
        created = await ana.wait_for_state(room, "m.room.create")
        assert created.get("type") == "m.space", room
    child = await ana.wait_for_state(support, "m.space.child", billing)
    assert child["via"] == [server]
    parent = await ana.wait_for_state(billing, "m.space.parent", support)
    assert parent["via"] == [server]

    # a move re-links billing's space under sales' (and takes it from support's)
    await admin.tell(
        ("!group create sales Sales", "Group sales (Sales) created"),
        ("!group move support/billing sales", "it is now sales/billing"),
    )
    # a link is removed by emptying it (a client may fill in defaults, never "via")
    await ana.wait_for_state(support, "m.space.child", billing, lambda c: "via" not in c)
    await ana.wait_for_state(billing, "m.space.parent", support, lambda c: "via" not in c)
    sales = await space("sales")
    await ana.wait_for_state(billing, "m.space.parent", sales)

    # a rename renames the space
    await admin.ask("!group rename sales/billing Invoices", "is now called Invoices")
    await ana.wait_for_state(billing, "m.room.name", "", lambda c: c.get("name") == "Invoices")


async def test_a_deleted_group_is_unlinked_and_its_members_and_leavers_are_removed(
    sqlite_desks, people
):
    admin = await start_with_admin(sqlite_desks, people)
    ana = await people.advisor(None, "ana")

    await admin.tell(
        (f"!advisor add {ana.user_id}", "is now an advisor"),
        ("!group create sales Sales", "created"),
        ("!group create sales/eu Europe", "created"),
        (f"!group add sales/eu {ana.user_id} secondary", "is now in sales/eu"),
        (f"!group add sales {ana.user_id} secondary", "is now in sales"),
    )

    def named(name: str):
        return lambda r: ana.state.get(r, {}).get(("m.room.name", ""), {}).get("name") == name

    eu = await ana.wait_for_invite(named("Europe"), timeout=20)
    sales = await ana.wait_for_invite(named("Sales"))
    await ana.join(sales)
    await ana.join(eu)
    await ana.wait_for_state(sales, "m.space.child", eu)

    # deleted: its member is removed, its link in the parent emptied, the bot leaves it
    await admin.ask("!group delete sales/eu", "Group sales/eu deleted.")
    await ana.wait_for_member(eu, ana.user_id, "leave")
    await ana.wait_for_state(sales, "m.space.child", eu, lambda c: "via" not in c)

    # an advisor removed from a group is removed from its space
    await admin.ask(f"!group remove sales {ana.user_id}", "is no longer in sales")
    await ana.wait_for_member(sales, ana.user_id, "leave")
