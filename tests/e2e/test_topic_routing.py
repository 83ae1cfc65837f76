"""Routing by topic, against the real homeserver: a visitor who chose "billing", mapped by an
admin to the group support/billing, is invited to that group's primary advisor and not to an
available advisor outside it; with the primary at capacity, to the group's secondary member."""

from __future__ import annotations

from bridge.model import AdvisorMxid
from tests.desks import start_with_admin

SPACES = {"Support", "Billing"}


async def test_a_billing_visitor_goes_to_billing_primary_then_secondary(desks, people):
    admin = await start_with_admin(desks, people, capacity=1)
    desk = admin.desk
    assert "billing" in desk.config.portal.topics
    bob = await people.advisor(desk, "bob")  # available, in the root group only
    ana = await people.advisor(desk, "ana")
    cid = await people.advisor(desk, "cid")

    await admin.tell(
        ("!group create support Support", "Group support (Support) created"),
        ("!group create support/billing Billing", "Group support/billing (Billing) created"),
        (f"!group add support/billing {ana.user_id} primary", "(primary)"),
        (f"!group add support/billing {cid.user_id} secondary", "(secondary)"),
        ("!topic route billing support/billing", "billing now go to support/billing"),
    )

    def conversation(client):
        def is_conversation(room: str) -> bool:
            name = client.state.get(room, {}).get(("m.room.name", ""), {}).get("name")
            return name not in SPACES

        return is_conversation

    first = await people.visitor(desk)
    await first.start(topic="billing")
    await ana.wait_for_invite(conversation(ana))
    stored = await desk.desk.store.get_conversation(first.conversation["id"])
    assert stored.advisor == AdvisorMxid(ana.user_id)  # not Bob, free and first in the ring

    second = await people.visitor(desk)
    await second.start(topic="billing")  # Ana is at capacity (1): the secondary member
    await cid.wait_for_invite(conversation(cid))
    stored = await desk.desk.store.get_conversation(second.conversation["id"])
    assert stored.advisor == AdvisorMxid(cid.user_id)

    third = await people.visitor(desk)
    await third.start(topic="general")  # not mapped: the root group, everyone — Bob
    await bob.wait_for_invite()
    stored = await desk.desk.store.get_conversation(third.conversation["id"])
    assert stored.advisor == AdvisorMxid(bob.user_id)
    # Bob was never offered a billing visitor: his one invite is the general one
    assert list(bob.invites) == [stored.room_id]
    assert len([r for r in ana.invites if conversation(ana)(r)]) == 1


async def test_a_member_of_an_isolated_group_is_offered_only_its_visitors(sqlite_desks, people):
    admin = await start_with_admin(sqlite_desks, people)
    desk = admin.desk
    ana = await people.advisor(desk, "ana")  # first in the ring, free
    bob = await people.advisor(desk, "bob")
    await admin.tell(
        ("!group create billing Billing", "Group billing (Billing) created"),
        (f"!group add billing {ana.user_id} primary", "(primary)"),
        ("!group isolate billing on", "billing is isolated"),
        ("!topic route billing billing", "billing now go to billing"),
    )

    general = await people.visitor(desk)
    await general.start(topic="general")
    room = await bob.wait_for_invite()
    stored = await desk.desk.store.get_conversation(general.conversation["id"])
    assert (stored.room_id, stored.advisor) == (room, AdvisorMxid(bob.user_id))

    billing = await people.visitor(desk)
    await billing.start(topic="billing")
    await ana.wait_for_invite(lambda r: r != room and r not in ana_spaces(ana))
    stored = await desk.desk.store.get_conversation(billing.conversation["id"])
    assert stored.advisor == AdvisorMxid(ana.user_id)
    assert list(bob.invites) == [room]


def ana_spaces(client) -> set[str]:
    return {
        r
        for r in client.invites
        if client.state.get(r, {}).get(("m.room.name", ""), {}).get("name") in SPACES
    }
