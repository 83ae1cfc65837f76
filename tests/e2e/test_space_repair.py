"""Drift of the groups' spaces repaired, as a real client sees it: a space the homeserver's
admin deleted by hand, or one the bot's account left by hand, comes back (a new space, linked
under its parent, its member invited) on an admin's !directory repair, and a space an advisor
left by hand invites them again at the next start-up."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import aiohttp

from appservice.bootstrap import Switchboard
from bridge.model import RoomId
from tests.desks import PASSWORD, start_with_admin


async def test_a_space_deleted_by_hand_comes_back_on_repair_and_a_restart_reinvites(
    desks, people, homeserver
):
    admin = await start_with_admin(desks, people)
    desk, bot = admin.desk, admin.bot
    ana = await people.advisor(None, "ana")

    await admin.tell(
        (f"!advisor add {ana.user_id}", "is now an advisor"),
        ("!group create support Support", "created"),
        ("!group create support/billing Billing", "created"),
        (f"!group add support/billing {ana.user_id} secondary", "is now in support/billing"),
    )

    def named(name: str, but: str = ""):
        return (
            lambda r: r != but
            and ana.state.get(r, {}).get(("m.room.name", ""), {}).get("name") == name
        )

    billing = await ana.wait_for_invite(named("Billing"), timeout=20)
    support = await ana.wait_for_invite(named("Support"))
    await ana.join(support)
    await ana.join(billing)
    await ana.wait_for_state(support, "m.space.child", billing)

    # the homeserver's admin deletes billing's space (everyone in it is removed, the bot too)
    root_id = homeserver.server.register_user(f"root-{uuid.uuid4().hex[:8]}", PASSWORD, admin=True)
    root = await people.login(root_id)
    url = f"{homeserver.server.url}/_synapse/admin/v1/rooms/{quote(billing)}"
    headers = {"Authorization": f"Bearer {root.client.access_token}"}
    async with aiohttp.ClientSession() as http:
        async with http.delete(url, json={"purge": True}, headers=headers) as response:
            assert response.status == 200, await response.text()
    # (the room is purged at once: Ana's client sees the bot go, maybe not herself)
    await ana.wait_for_member(billing, bot, "leave")

    report = await admin.ask("!directory repair", "Repairs of the group spaces")
    assert f"support/billing: space {billing} is gone; a new one is made" in report.body
    billing2 = await ana.wait_for_invite(named("Billing", but=billing), timeout=20)
    await ana.join(billing2)
    created = await ana.wait_for_state(billing2, "m.room.create")
    assert created.get("type") == "m.space"
    await ana.wait_for_state(support, "m.space.child", billing2)
    await ana.wait_for_state(billing2, "m.space.parent", support)
    # and the link to the dead space is emptied, so no unknown room shows in the tree
    await ana.wait_for_state(support, "m.space.child", billing, lambda c: "via" not in c)
    await admin.ask("!directory repair", "Every group space is in step")

    # Ana leaves support's space by hand; the next start-up invites her again, once
    await ana.leave(support)
    await ana.wait_for_member(support, ana.user_id, "leave")
    config = desk.config
    await desk.stop()
    restarted = Switchboard(config)
    # the factory stops the running desk at the end and closes its database
    desks.running[-1] = (restarted, desks.running[-1][1])
    await restarted.start()
    await ana.wait_for_member(support, ana.user_id, "invite")


async def test_a_space_the_bot_left_by_hand_is_replaced_on_repair(sqlite_desks, people):
    admin = await start_with_admin(sqlite_desks, people)
    desk, bot = admin.desk, admin.bot
    ana = await people.advisor(None, "ana")

    await admin.tell(
        (f"!advisor add {ana.user_id}", "is now an advisor"),
        ("!group create sales Sales", "created"),
        (f"!group add sales {ana.user_id} secondary", "is now in sales"),
    )

    def named(name: str, but: str = ""):
        return (
            lambda r: r != but
            and ana.state.get(r, {}).get(("m.room.name", ""), {}).get("name") == name
        )

    sales = await ana.wait_for_invite(named("Sales"), timeout=20)
    await ana.join(sales)

    # the bot's account leaves the space by hand (in room version 12 nobody can kick the
    # bot from a space it created: its creator's power is above everyone's)
    await desk.gateway.leave_space(RoomId(sales))
    await ana.wait_for_member(sales, bot, "leave")

    report = await admin.ask("!directory repair", "Repairs of the group spaces")
    assert f"sales: space {sales} is gone; a new one is made" in report.body
    sales2 = await ana.wait_for_invite(named("Sales", but=sales), timeout=20)
    await ana.join(sales2)
    created = await ana.wait_for_state(sales2, "m.room.create")
    assert created.get("type") == "m.space"
