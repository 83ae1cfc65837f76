"""Admins and advisors talk to the bot from a real Matrix client."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge.model import ConversationStatus, Presence
from tests.desks import start_with_admin


async def test_admin_adds_an_advisor_who_makes_herself_available_and_gets_a_visitor(
    sqlite_desks, people
):
    admin = await start_with_admin(sqlite_desks, people)
    desk, bot = admin.desk, admin.bot
    ana = await people.advisor(None, "ana")

    help_text = (await admin.ask("!help", "Commands you can use")).body
    for command in ("!help", "!advisor", "!available", "!away", "!queue", "!close"):
        assert command in help_text
    assert all(" — " in line for line in help_text.splitlines()[1:])

    await admin.tell(
        ("!advisor", "Usage: !advisor add|remove @user:server"),
        ("!advisor add ana", "is not a Matrix user id"),
        ("!frobnicate", "Unknown command !frobnicate"),
    )

    await admin.ask(f"!advisor add {ana.user_id}", f"{ana.user_id} is now an advisor")

    # Ana is invited to a direct chat with the bot, with instructions
    control = await ana.wait_for_invite()
    await ana.join(control)
    await ana.wait_for_message(control, "You are now a Switchboard advisor", sender=bot)
    await ana.send_text(control, "!help")
    ana_help = (await ana.wait_for_message(control, "Commands you can use", sender=bot)).body
    assert "!available" in ana_help and "!advisor" not in ana_help
    await ana.send_text(control, "!advisor add @mallory:localhost")
    await ana.wait_for_message(control, "Unknown command !advisor", sender=bot)
    await ana.send_text(control, "!capacity lots")
    await ana.wait_for_message(control, "Usage: !capacity", sender=bot)
    await ana.send_text(control, "!available")
    await ana.wait_for_message(control, "You are available", sender=bot)

    vera = await people.visitor(desk)
    await vera.start()
    room = await ana.wait_for_invite(lambda r: r != control)
    await ana.join(room)
    await ana.send_text(room, "!status")
    await ana.wait_for_message(room, "1 of 3 visitors", sender=bot)
    await admin.ask("!advisor list", f"{ana.user_id} — available")
    await ana.send_text(control, "!away")
    await ana.wait_for_message(control, "You are away", sender=bot)


async def test_a_visitor_typing_bot_commands_sends_text_not_commands(sqlite_desks, people):
    desk = await sqlite_desks.start()
    chat = await people.chatting(desk, message="!close")
    ana, vera, room = chat.advisor, chat.visitor, chat.room
    await vera.say("!advisor add @vera:localhost")
    await ana.wait_for_message(room, "!advisor add @vera:localhost")
    conversation = await desk.store.get_conversation(chat.conversation_id)
    assert conversation.status is ConversationStatus.ACTIVE
    assert [a.mxid for a in await desk.advisors.list()] == [ana.user_id]
    assert not [
        body
        for sender, body, _ in ana.messages(room)
        if sender == desk.config.bot_mxid and "Unknown command" in body
    ]


async def test_status_and_advisor_list_show_an_advisor_online_and_syncing_as_online(
    sqlite_desks, people
):
    # Ana's client is online and syncing before she shares a room with the bot: Synapse pushes
    # presence only when it changes, and only for users sharing a room with the appservice
    admin = await start_with_admin(sqlite_desks, people)
    desk, bot = admin.desk, admin.bot
    ana = await people.advisor(None, "ana")
    learnt: asyncio.Queue[str] = asyncio.Queue()  # what the desk learns of Ana's presence
    real = desk.advisors.presence_changed

    async def heard(mxid: str, presence: Presence, **kwargs: Any) -> None:
        await real(mxid, presence, **kwargs)
        if mxid == ana.user_id and presence is not Presence.UNKNOWN:
            learnt.put_nowait(presence.value)

    desk.advisors.presence_changed = heard  # type: ignore[method-assign]

    await admin.client.send_text(admin.dm, f"!advisor add {ana.user_id}")
    control = await ana.wait_for_invite()
    await ana.join(control)  # the desk asks once, now that the homeserver will tell
    assert await asyncio.wait_for(learnt.get(), 10) == "online"
    await ana.send_text(control, "!status")
    await ana.wait_for_message(control, "Matrix presence online", sender=bot)
    await admin.ask("!advisor list", f"{ana.user_id} — away, presence online")

    # then each change is pushed (no polling): she steps away, and comes back
    await ana.set_presence("unavailable")
    assert await asyncio.wait_for(learnt.get(), 10) == "unavailable"
    await ana.send_text(control, "!status")
    await ana.wait_for_message(control, "Matrix presence unavailable", sender=bot)
    await ana.set_presence("online")
    assert await asyncio.wait_for(learnt.get(), 10) == "online"
    await ana.send_text(control, "!status")

    def online_twice(event: Any) -> bool:
        said = [body for sender, body, _ in ana.messages(control) if sender == bot]
        return sum("Matrix presence online" in body for body in said) == 2

    await ana.wait_for_message(control, online_twice, sender=bot)
