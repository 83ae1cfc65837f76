"""People of a partner homeserver reach the desk's call sign (two real Synapses federating on
loopback): two of them knock on its alias at the same moment and each gets a room of their
own with the advisor; a third opens a direct chat with the call sign's user; a remote
advisor is listed to the public only while there is proof they are alive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bridge.model import Presence
from harness.advisor import AdvisorClient
from tests.desks import PASSWORD, People, start_with_admin
from tests.e2e.federation import (
    Federation,
    federated_desks,  # noqa: F401 (this module's desks)
    invite_stored_by_the_desks_server,
)
from tests.e2e.test_call_signs import knock, stored


def knocks_rejected(desk: Any, *users: str) -> dict[str, asyncio.Future[str]]:
    """Each user's knock rejection as the desk's homeserver pushes it: its reason."""
    loop = asyncio.get_running_loop()
    rejected = {user: loop.create_future() for user in users}
    sink = desk.endpoint._sink
    handle = sink.handle

    async def spy(event: Any) -> None:
        await handle(event)
        if isinstance(event, dict) and event.get("type") == "m.room.member":
            waiting = rejected.get(event.get("state_key", ""))
            content = event.get("content") or {}
            if waiting is not None and not waiting.done() and content.get("membership") == "leave":
                waiting.set_result(content.get("reason", ""))

    sink.handle = spy
    return rejected


class Partner:
    """Clients of users on the partner homeserver."""

    def __init__(self, federation: Federation) -> None:
        self.server = federation.other
        self.clients: list[AdvisorClient] = []

    async def user(self, name: str) -> AdvisorClient:
        mxid = self.server.register_user(f"{name}-{uuid.uuid4().hex[:8]}", PASSWORD)
        client = await AdvisorClient.login(self.server.url, mxid, PASSWORD)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()


@pytest.fixture
async def people(federation: Federation) -> AsyncIterator[People]:
    """Users of the desk's homeserver (the federating one, not the session's)."""
    crowd = People(federation.desk_side)
    yield crowd
    await crowd.close()


@pytest.fixture
async def partner(federation: Federation) -> AsyncIterator[Partner]:
    crowd = Partner(federation)
    yield crowd
    await crowd.close()


async def test_partner_users_reach_a_call_sign_by_knock_and_by_direct_chat(desks, people, partner):
    admin = await start_with_admin(desks, people)  # on the desk's side of the federation
    desk = admin.desk
    ana = await people.advisor(desk, "ana")
    await admin.ask(f"!callsign set billing-es {ana.user_id} facturación", "now reaches")
    alias = desk.config.call_sign_alias("billing-es")

    kim, lee = await partner.user("kim"), await partner.user("lee")
    stored_invites = [invite_stored_by_the_desks_server(desk, u.user_id) for u in (kim, lee)]
    rejections = knocks_rejected(desk, kim.user_id, lee.user_id)
    lobbies = await asyncio.gather(knock(kim, alias), knock(lee, alias))
    assert lobbies[0] == lobbies[1]
    kim_room = await kim.wait_for_invite(timeout=30)
    lee_room = await lee.wait_for_invite(timeout=30)
    assert kim_room != lee_room
    # the knock is rejected with the room's id (on the partner's side the invite is what
    # shows: their server is not in the lobby, so it need not hear of the rejection)
    for user, room in ((kim, kim_room), (lee, lee_room)):
        reason = await asyncio.wait_for(rejections[user.user_id], 20)
        assert room in reason
    for invited in stored_invites:
        await asyncio.wait_for(invited.wait(), 20)

    await kim.join(kim_room, timeout=20)
    await ana.wait_for_invite(kim_room.__eq__, timeout=20)
    await ana.join(kim_room)
    await kim.send_text(kim_room, "Hola desde otro servidor")
    await ana.wait_for_message(kim_room, "Hola desde otro servidor", sender=kim.user_id)
    await ana.send_text(kim_room, "Bienvenida")
    await kim.wait_for_message(kim_room, "Bienvenida", sender=ana.user_id, timeout=20)
    assert lee.user_id not in kim.members.get(kim_room, {})
    conversation = await desk.store.conversation_by_room(kim_room)
    assert conversation is not None and conversation.asker == kim.user_id
    transcript = await stored(desk, conversation.id, "Bienvenida")
    assert [m.body for m in transcript][-2:] == ["Hola desde otro servidor", "Bienvenida"]

    # a direct chat with the call sign's user, from the partner's server
    ned = await partner.user("ned")
    _, call_sign_user = desk.gateway.call_sign_address("billing-es")
    chat = await ned.create_room(invite=[call_sign_user], is_direct=True)
    told = await ned.wait_for_message(chat, "Your conversation", sender=call_sign_user, timeout=30)
    ned_room = await ned.wait_for_invite(timeout=30)
    assert ned_room in told.body
    askers = {c.asker for c in await desk.store.open_conversations()}
    assert askers == {kim.user_id, lee.user_id, ned.user_id}


async def test_a_partner_advisor_is_listed_only_with_a_recent_proof_of_life(
    desks, people, partner
):
    """Her presence says online, but the public search shows her call sign only once the desk
    has seen her alive (here: a message of hers crossing the federation), and no longer once
    directory.proof_of_life has passed without a sign."""
    desk = await desks.start()
    bot = desk.config.bot_mxid
    rita = await partner.user("rita")
    await desk.advisors.add(rita.user_id, "Rita", welcome=False)
    await desk.advisors.set_available(rita.user_id, True)
    await desk.desk.call_signs.set("rita", rita.user_id, "remota")
    room = await rita.create_room(invite=[bot], is_direct=True)
    await rita.wait_for_message(room, "Type !help", sender=bot, timeout=30)

    async def listed() -> bool:
        return [c.sign for c in await desk.desk.call_signs.search("remota")] == ["rita"]

    # what her server last told ours, as our question's answer: a hint, not a proof of life
    await desk.advisors.presence_changed(rita.user_id, Presence.ONLINE, unless_known=True)
    advisor = await desk.store.get_advisor(rita.user_id)
    assert advisor is not None and advisor.presence is Presence.ONLINE
    if advisor.last_seen_at is None:  # no push of her presence came yet (it may have)
        assert not await listed()
    # a message of hers is handled (the bot's answer says so): she is alive
    await rita.send_text(room, "!status")
    await rita.wait_for_message(room, "Matrix presence", sender=bot, timeout=30)
    assert await listed()
    # a dead partner server from here: still "online", and no sign of life for longer than
    # the window
    seen = (await desk.store.get_advisor(rita.user_id)).last_seen_at  # type: ignore[union-attr]
    assert seen is not None
    async with desk.store.transaction():
        await desk.store.db.execute(
            "UPDATE advisors SET last_seen_at = $2 WHERE mxid = $1",
            rita.user_id,
            seen - desk.config.directory.proof_of_life - 1,
        )
    assert (await desk.store.get_advisor(rita.user_id)).presence is Presence.ONLINE  # type: ignore[union-attr]
    assert not await listed()
