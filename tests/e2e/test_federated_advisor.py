"""An advisor on another homeserver (two real Synapses federating on loopback): they see the
form's answers right after joining, without scrolling back, and the desk knows their presence
from the join on (then from what is pushed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.model import Presence
from harness.advisor import AdvisorClient
from tests.desks import PASSWORD
from tests.e2e.federation import (
    Federation,
    federated_desks,  # noqa: F401 (this module's desks)
    invite_stored_by_the_desks_server,
)


@pytest.fixture
async def rita(federation: Federation) -> AsyncIterator[AdvisorClient]:
    """An advisor whose account is on the other homeserver, online and syncing."""
    mxid = federation.other.register_user("rita", PASSWORD, displayname="Rita")
    client = await AdvisorClient.login(federation.other.url, mxid, PASSWORD)
    yield client
    await client.close()


async def test_an_advisor_on_another_server_sees_the_form_after_joining_and_is_seen_online(
    desks, rita, people
):
    desk = await desks.start()
    learnt: asyncio.Queue[str] = asyncio.Queue()  # what the desk learns of Rita's presence
    real = desk.advisors.presence_changed

    async def heard(mxid: str, presence: Presence, **kwargs: Any) -> None:
        before = await desk.store.get_advisor(mxid)
        await real(mxid, presence, **kwargs)
        after = await desk.store.get_advisor(mxid)
        # what the desk learns: changes only (a push and the answer to the desk's own
        # question may both say "online")
        was = before.presence if before is not None else None
        if mxid == rita.user_id and after is not None and after.presence is not was:
            if after.presence is not Presence.UNKNOWN:
                learnt.put_nowait(after.presence.value)

    desk.advisors.presence_changed = heard  # type: ignore[method-assign]
    invited = invite_stored_by_the_desks_server(desk, rita.user_id)
    await desk.advisors.add(rita.user_id, "Rita", welcome=False)
    await desk.advisors.set_available(rita.user_id, True)
    vera = await people.visitor(desk)
    await vera.start()
    await vera.connect()

    room = await rita.wait_for_invite(timeout=20)
    await asyncio.wait_for(invited.wait(), 20)
    await rita.join(room, timeout=20)
    # her server got the room's state with the join, not its timeline: her client shows what
    # came after the join (the form's first post too, if the invite beat it), and the desk
    # posts the answers again below her join
    brief = await rita.wait_for_message(
        room, "Message: Hello, I was charged twice.", sender=desk.config.bot_mxid
    )
    assert "New visitor: Vera Visitor" in brief.body and "Email: vera@example.org" in brief.body
    await vera.wait_status("active", advisor_name="Rita")
    assert await asyncio.wait_for(learnt.get(), 10) == "online"

    await rita.send_text(room, "!status")
    await rita.wait_for_message(room, "Matrix presence online", sender=desk.config.bot_mxid)
    await rita.set_presence("unavailable")  # pushed across the federation
    assert await asyncio.wait_for(learnt.get(), 10) == "unavailable"
    await rita.send_text(room, "Hello Vera, I am here.")
    await vera.wait_message("Hello Vera, I am here.")
