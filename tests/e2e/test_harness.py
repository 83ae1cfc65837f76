"""Proves LocalHomeserver and AdvisorClient work together against a real Synapse."""

from __future__ import annotations

import time

import pytest

from harness.advisor import AdvisorClient
from tests.desks import PASSWORD, Homeserver


def test_registering_an_existing_user_returns_its_id(homeserver: Homeserver) -> None:
    mxid = homeserver.new_user("carol")
    assert homeserver.server.register_user(mxid[1:].split(":")[0], "ignored") == mxid


async def test_two_real_clients_chat_type_and_read(homeserver: Homeserver) -> None:
    began = time.monotonic()
    alice = await AdvisorClient.login(
        homeserver.server.url, homeserver.new_user("alice"), PASSWORD
    )
    bob = await AdvisorClient.login(homeserver.server.url, homeserver.new_user("bob"), PASSWORD)
    try:
        room_id = await alice.create_room(invite=[bob.user_id], name="harness")

        assert await bob.wait_for_invite() == room_id
        assert bob.invite_senders[room_id] == alice.user_id
        await bob.join(room_id)
        await alice.wait_for_member(room_id, bob.user_id, "join")

        event_id = await alice.send_text(room_id, "hello bob")
        message = await bob.wait_for_message(room_id, lambda e: e.body == "hello bob")
        assert message.event_id == event_id and message.sender == alice.user_id
        # Events already received before the call count too.
        assert (await bob.wait_for_message(room_id, "hello")).event_id == event_id
        assert (alice.user_id, "hello bob", "m.text") in bob.messages(room_id)

        await bob.set_typing(room_id, True)
        await alice.wait_for_typing(room_id, bob.user_id, True)
        await bob.set_typing(room_id, False)
        await alice.wait_for_typing(room_id, bob.user_id, False)

        await bob.send_read_receipt(room_id, event_id)
        assert await alice.wait_for_receipt(room_id, bob.user_id, event_id) == event_id

        with pytest.raises(AssertionError, match="never said"):
            await bob.wait_for_message(room_id, "never said", timeout=0.2)
    finally:
        await alice.close()
        await bob.close()
    assert time.monotonic() - began < 10
