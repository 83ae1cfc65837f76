"""The endpoint the homeserver pushes to: authentication, idempotency, malformed input.

Big transactions under load are in tests/faults/test_large_transactions.py."""

from __future__ import annotations

import json
import uuid

import aiohttp
import pytest


async def _put(desk, txn_id: str, body, token: str | None, *, header: bool = True):
    url = f"http://127.0.0.1:{desk.config.appservice.port}/_matrix/app/v1/transactions/{txn_id}"
    headers = {"Authorization": f"Bearer {token}"} if token is not None and header else {}
    params = {"access_token": token} if token is not None and not header else {}
    async with aiohttp.ClientSession() as http:
        async with http.put(url, data=json.dumps(body), headers=headers, params=params) as r:
            return r.status, await r.json()


@pytest.mark.parametrize("token", [None, "", "wrong-token", "Bearer"])
async def test_missing_empty_or_wrong_tokens_are_refused_with_403(sqlite_desks, token):
    desk = await sqlite_desks.start()
    status, body = await _put(desk, "t-auth", {"events": []}, token)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, _ = await _put(desk, "t-auth", {"events": []}, token, header=False)
    assert status == 403


async def test_our_own_token_for_the_homeserver_is_not_accepted_from_it(sqlite_desks):
    """The as_token authenticates us to the homeserver; only the hs_token works the other way."""
    desk = await sqlite_desks.start()
    status, body = await _put(desk, "t-as", {"events": []}, desk.config.appservice.as_token)
    assert status == 403 and body["errcode"] == "M_FORBIDDEN"
    status, _ = await _put(desk, "t-hs", {"events": []}, desk.config.appservice.hs_token)
    assert status == 200


async def test_the_same_events_are_handled_once_however_often_they_come(desks, people):
    desk = await desks.start()
    chat = await people.chatting(desk)
    ana, vera, room = chat.advisor, chat.visitor, chat.room
    event = {
        "type": "m.room.message",
        "room_id": room,
        "sender": ana.user_id,
        "event_id": f"$replayed-{uuid.uuid4().hex}",
        "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": "said once"},
    }
    token = desk.config.appservice.hs_token
    txn = f"replay-{uuid.uuid4().hex}"
    for txn_id in (txn, txn, f"{txn}-again"):  # the same id twice, then the same event anew
        status, _ = await _put(desk, txn_id, {"events": [event]}, token)
        assert status == 200
    await vera.wait_message("said once")
    history = await vera.history()
    assert [m["body"] for m in history["messages"]].count("said once") == 1


async def test_malformed_transactions_get_a_clear_error_and_nothing_breaks(sqlite_desks):
    desk = await sqlite_desks.start()
    token = desk.config.appservice.hs_token
    status, body = await _put(desk, "bad-1", [1, 2, 3], token)
    assert status == 400 and body["errcode"] == "M_BAD_JSON"
    hostile = [
        None,
        5,
        "x",
        {"type": "m.room.message"},
        {"event_id": "$e", "content": []},
        {
            "event_id": "$f",
            "type": "m.room.member",
            "room_id": "!r:x",
            "sender": "@a:x",
            "state_key": 7,
            "content": {"membership": ["join"]},
        },
    ]
    status, _ = await _put(desk, "bad-2", {"events": hostile, "ephemeral": hostile}, token)
    assert status == 200


async def test_an_event_the_homeserver_refuses_to_let_us_answer_does_not_stall_the_desk(
    sqlite_desks, people, homeserver
):
    desk = await sqlite_desks.start()
    bot = desk.config.bot_mxid
    carol = await people.login(homeserver.new_user("carol"))
    # a room where the bot may join but not speak: its greeting is refused with 403
    muted = await carol.create_room(invite=[bot], power_level_override={"events_default": 100})
    await carol.wait_for_member(muted, bot, "join")
    # the desk goes on: the next conversation with the bot is answered
    dm = await carol.create_room(invite=[bot], is_direct=True)
    await carol.wait_for_message(dm, "Type !help", sender=bot)
    await carol.send_text(dm, "!help")
    await carol.wait_for_message(dm, "Commands you can use", sender=bot)


async def test_a_transaction_id_reused_for_new_events_loses_nothing(desks, people):
    """Synapse on SQLite restarts its transaction numbering after a restart."""
    desk = await desks.start()
    chat = await people.chatting(desk)
    ana, vera, room = chat.advisor, chat.visitor, chat.room
    token = desk.config.appservice.hs_token
    txn = f"reused-{uuid.uuid4().hex}"
    for body in ("before the restart", "after the restart"):
        event = {
            "type": "m.room.message",
            "room_id": room,
            "sender": ana.user_id,
            "event_id": f"$ev-{uuid.uuid4().hex}",
            "origin_server_ts": 1_700_000_000_000,
            "content": {"msgtype": "m.text", "body": body},
        }
        status, _ = await _put(desk, txn, {"events": [event]}, token)
        assert status == 200
    await vera.wait_message("before the restart")
    await vera.wait_message("after the restart")
