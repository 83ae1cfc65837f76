"""Call signs against the real homeserver, with real Matrix clients: an admin assigns one with
an accented keyword; two people knock on its alias at the same moment and each gets a private
room with the advisor; asking again points to the open room; a direct chat with the call
sign's user opens one too; !find finds it; start-up refuses a registration without the call
signs' alias namespace."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import aiohttp
import pytest

from appservice.bootstrap import Switchboard
from appservice.startup import StartupError
from bridge.model import ConversationId, Message
from harness.advisor import AdvisorClient
from tests.desks import Homeserver, free_port, start_with_admin


async def knock(client: AdvisorClient, alias: str) -> str:
    """Knock on the room behind ``alias``; the lobby's id."""
    response = await client.client.room_knock(alias, reason="I need help")
    room_id = getattr(response, "room_id", None)
    assert room_id, f"{client.user_id} could not knock on {alias}: {response}"
    return str(room_id)


async def rejected_with(client: AdvisorClient, lobby: str) -> str:
    """The reason the desk gave when it rejected ``client``'s knock on ``lobby``."""
    content = await client.wait_for_state(
        lobby, "m.room.member", client.user_id, lambda c: c.get("membership") == "leave"
    )
    return str(content.get("reason", ""))


async def stored(desk: Switchboard, conversation_id: str, body: str) -> list[Message]:
    """The transcript once the desk has stored ``body`` (its transaction may come after the
    other client saw the message)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        messages = await desk.store.messages(ConversationId(conversation_id))
        if any(m.body == body for m in messages) or loop.time() > deadline:
            return messages
        await asyncio.sleep(0.05)


async def stored_public_rooms(client: AdvisorClient, wanted: str) -> dict[str, dict]:
    """The public room directory once it lists ``wanted`` (it follows the desk's handler)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while True:
        listed = await _public_rooms(client)
        if wanted in listed or loop.time() > deadline:
            return listed
        await asyncio.sleep(0.1)


async def _public_rooms(client: AdvisorClient) -> dict[str, dict]:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{client.client.homeserver}/_matrix/client/v3/publicRooms",
            headers={"Authorization": f"Bearer {client.client.access_token}"},
        ) as response:
            body = await response.json()
    return {r["room_id"]: r for r in body.get("chunk", [])}


async def test_people_reach_a_call_sign_privately_by_knock_and_by_direct_chat(
    desks, people, homeserver
):
    admin = await start_with_admin(desks, people)
    desk, bot = admin.desk, admin.bot
    ana = await people.advisor(desk, "ana")
    await admin.ask(f"!callsign set billing-es {ana.user_id} facturación pagos", "now reaches")
    alias = desk.config.call_sign_alias("billing-es")

    # two people knock at the same moment: a room each, nobody sees the other
    kim = await people.login(homeserver.new_user("kim"))
    lee = await people.login(homeserver.new_user("lee"))
    lobbies = await asyncio.gather(knock(kim, alias), knock(lee, alias))
    assert lobbies[0] == lobbies[1]
    lobby = lobbies[0]
    kim_room = await kim.wait_for_invite(timeout=20)
    lee_room = await lee.wait_for_invite(timeout=20)
    assert kim_room != lee_room
    assert kim_room in await rejected_with(kim, lobby)
    assert lee_room in await rejected_with(lee, lobby)

    # the advisor is offered both; Kim and Ana talk privately
    for room in (kim_room, lee_room):
        await ana.wait_for_invite(room.__eq__, timeout=20)
    await kim.join(kim_room)
    await ana.join(kim_room)
    await ana.wait_for_message(kim_room, "call sign billing-es", sender=bot)
    await kim.send_text(kim_room, "Hola, una factura")
    await ana.wait_for_message(kim_room, "Hola, una factura", sender=kim.user_id)
    await ana.send_text(kim_room, "Claro, dime")
    await kim.wait_for_message(kim_room, "Claro, dime", sender=ana.user_id)
    assert lee.user_id not in kim.members.get(kim_room, {})
    conversation = await desk.store.conversation_by_room(kim_room)
    assert conversation is not None and conversation.advisor == ana.user_id
    transcript = await stored(desk, conversation.id, "Claro, dime")
    assert [(m.sender.value, m.body) for m in transcript][-2:] == [
        ("visitor", "Hola, una factura"),
        ("advisor", "Claro, dime"),
    ]

    # Kim asks again while it is open: pointed to the same room, no second conversation
    await knock(kim, alias)
    content = await kim.wait_for_state(
        lobby,
        "m.room.member",
        kim.user_id,
        lambda c: c.get("membership") == "leave" and kim_room in c.get("reason", ""),
    )
    assert kim_room in content["reason"]
    asked = [c for c in await desk.store.open_conversations() if c.asker == kim.user_id]
    assert len(asked) == 1

    # a direct chat with the call sign's user opens one too
    ned = await people.login(homeserver.new_user("ned"))
    _, call_sign_user = desk.gateway.call_sign_address("billing-es")
    chat = await ned.create_room(invite=[call_sign_user], is_direct=True)
    told = await ned.wait_for_message(chat, "Your conversation", sender=call_sign_user, timeout=20)
    ned_room = await ned.wait_for_invite(timeout=20)
    assert ned_room in told.body

    # published, the lobby is in the public room directory
    await admin.ask("!callsign publish billing-es on", "is listed in")
    rooms = await stored_public_rooms(ned, lobby)
    assert rooms[lobby].get("join_rule") == "knock"

    # !find finds it by an accent-less keyword
    found = await admin.ask("!find FACTURACION", "Found for 'FACTURACION'")
    assert f"billing-es → {ana.user_id}" in found.body


async def test_start_up_refuses_a_registration_without_the_call_signs_namespace(
    homeserver: Homeserver, tmp_path: Path
):
    """A registration made before call signs (here: another alias prefix than the config's)
    stops the start with one line that says what to do."""
    base = homeserver.config
    port = free_port()
    config = dataclasses.replace(
        base,
        database_url=f"sqlite:///{tmp_path / 'sb.db'}",
        portal=dataclasses.replace(base.portal, port=port, public_url=f"http://127.0.0.1:{port}"),
        directory=dataclasses.replace(base.directory, call_sign_alias_prefix="help_"),
    )
    switchboard = Switchboard(config)
    try:
        with pytest.raises(StartupError) as e:
            await switchboard.start()
    finally:
        await switchboard.stop()
    text = str(e.value)
    assert "lacks the call signs' alias namespace #help_.*:" in text
    assert "switchboard generate" in text and "restart the homeserver" in text
