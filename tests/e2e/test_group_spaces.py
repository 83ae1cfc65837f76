"""Advisor groups as Matrix spaces, as a real client sees them: invites to the spaces of an
advisor's group and its ancestors, the spaces nested by m.space.child/m.space.parent, a move
that re-links them and a rename that renames."""

from __future__ import annotations

from tests.desks import open_bot_chat, tell_bot


async def test_groups_become_nested_spaces_an_advisor_is_invited_to(desks, people, homeserver):
    admin_id = homeserver.new_user("admin")
    desk = await desks.start(admins=(admin_id,))
    admin = await people.login(admin_id)
    ana = await people.advisor(None, "ana")
    bot = desk.config.bot_mxid
    server = desk.config.homeserver.domain

    dm = await open_bot_chat(admin, bot)
    await admin.send_text(dm, f"!advisor add {ana.user_id}")
    await admin.wait_for_message(dm, f"{ana.user_id} is now an advisor", sender=bot)
    control = await ana.wait_for_invite()  # the direct chat with the bot
    await admin.send_text(dm, "!group create support Support")
    await admin.wait_for_message(dm, "Group support (Support) created", sender=bot)
    await admin.send_text(dm, "!group create support/billing Billing")
    await admin.wait_for_message(dm, "Group support/billing (Billing) created", sender=bot)
    await admin.send_text(dm, f"!group add support/billing {ana.user_id} secondary")
    await admin.wait_for_message(dm, "is now in support/billing (secondary)", sender=bot)

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
    await admin.send_text(dm, "!group create sales Sales")
    await admin.wait_for_message(dm, "Group sales (Sales) created", sender=bot)
    await admin.send_text(dm, "!group move support/billing sales")
    await admin.wait_for_message(dm, "it is now sales/billing", sender=bot)
    # a link is removed by emptying it (a client may fill in defaults, never "via")
    await ana.wait_for_state(support, "m.space.child", billing, lambda c: "via" not in c)
    await ana.wait_for_state(billing, "m.space.parent", support, lambda c: "via" not in c)
    sales = await space("sales")
    await ana.wait_for_state(billing, "m.space.parent", sales)

    # a rename renames the space
    await admin.send_text(dm, "!group rename sales/billing Invoices")
    await admin.wait_for_message(dm, "is now called Invoices", sender=bot)
    await ana.wait_for_state(billing, "m.room.name", "", lambda c: c.get("name") == "Invoices")


async def test_a_deleted_group_is_unlinked_and_its_members_and_leavers_are_removed(
    sqlite_desks, people, homeserver
):
    admin_id = homeserver.new_user("admin")
    desk = await sqlite_desks.start(admins=(admin_id,))
    admin = await people.login(admin_id)
    ana = await people.advisor(None, "ana")
    bot = desk.config.bot_mxid

    dm = await open_bot_chat(admin, bot)
    await tell_bot(
        admin,
        dm,
        bot,
        [
            (f"!advisor add {ana.user_id}", "is now an advisor"),
            ("!group create sales Sales", "created"),
            ("!group create sales/eu Europe", "created"),
            (f"!group add sales/eu {ana.user_id} secondary", "is now in sales/eu"),
            (f"!group add sales {ana.user_id} secondary", "is now in sales"),
        ],
    )

    def named(name: str):
        return lambda r: ana.state.get(r, {}).get(("m.room.name", ""), {}).get("name") == name

    eu = await ana.wait_for_invite(named("Europe"), timeout=20)
    sales = await ana.wait_for_invite(named("Sales"))
    await ana.join(sales)
    await ana.join(eu)
    await ana.wait_for_state(sales, "m.space.child", eu)

    # deleted: its member is removed, its link in the parent emptied, the bot leaves it
    await admin.send_text(dm, "!group delete sales/eu")
    await admin.wait_for_message(dm, "Group sales/eu deleted.", sender=bot)
    await ana.wait_for_member(eu, ana.user_id, "leave")
    await ana.wait_for_state(sales, "m.space.child", eu, lambda c: "via" not in c)

    # an advisor removed from a group is removed from its space
    await admin.send_text(dm, f"!group remove sales {ana.user_id}")
    await admin.wait_for_message(dm, "is no longer in sales", sender=bot)
    await ana.wait_for_member(sales, ana.user_id, "leave")
