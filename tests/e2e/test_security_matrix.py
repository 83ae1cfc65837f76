"""What a hostile visitor can make appear in an advisor's Matrix client, and bot loops."""

from __future__ import annotations

import json
import uuid

import aiohttp

from tests.desks import open_bot_chat

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script><a href="javascript:alert(3)">x</a>'


async def test_visitor_html_reaches_matrix_as_inert_plain_text_everywhere(sqlite_desks, people):
    desk = await sqlite_desks.start()
    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    await vera.start(name=XSS[:80], message=XSS + " [data:text/html,<b>x</b>](javascript:x)")
    room = await ana.wait_for_invite()
    await ana.join(room)
    await vera.say(XSS)
    await ana.wait_for_message(room, lambda e: e.body == XSS)
    texts = [e for e in ana.timeline[room] if e.source.get("type") == "m.room.message"]
    assert texts, "no messages seen"
    for event in texts:
        content = event.source["content"]
        # nothing a visitor typed is ever sent as HTML: no formatted_body, no format
        assert "formatted_body" not in content and "format" not in content, content
    puppet = next(e.sender for e in texts if e.sender.startswith("@sb_visitor_"))
    # names are plain strings: a client shows them as text
    assert ana.client.rooms[room].user_name(puppet) == f"{XSS[:80]} (visitor)".strip()
    assert ana.client.rooms[room].name == f"{XSS[:80]} (visitor)".strip()


async def test_the_bot_never_answers_itself_or_a_puppet(sqlite_desks, people, homeserver):
    admin_id = homeserver.new_user("admin")
    desk = await sqlite_desks.start(admins=(admin_id,))
    admin = await people.login(admin_id)
    bot = desk.config.bot_mxid
    dm = await open_bot_chat(admin, bot)
    # the homeserver echoes our own events back to us: one that looks like a command
    token = desk.config.appservice.hs_token
    own = [
        {
            "type": "m.room.message",
            "room_id": dm,
            "sender": sender,
            "event_id": f"$echo-{uuid.uuid4().hex}",
            "origin_server_ts": 1,
            "content": {"msgtype": "m.text", "body": "!help"},
        }
        for sender in (bot, f"@sb_visitor_{uuid.uuid4().hex[:8]}:localhost")
    ]
    url = f"http://127.0.0.1:{desk.config.appservice.port}/_matrix/app/v1/transactions/"
    async with aiohttp.ClientSession() as http:
        async with http.put(
            url + uuid.uuid4().hex,
            data=json.dumps({"events": own}),
            headers={"Authorization": f"Bearer {token}"},
        ) as r:
            assert r.status == 200
    await admin.send_text(dm, "!queue")  # a marker: answers come in order
    await admin.wait_for_message(dm, "waiting", sender=bot)
    answers = [b for s, b, _ in admin.messages(dm) if s == bot]
    assert not any(b.startswith("Commands you can use") for b in answers), answers


async def test_user_and_alias_queries_need_the_token_and_create_nobody(sqlite_desks):
    desk = await sqlite_desks.start()
    base = f"http://127.0.0.1:{desk.config.appservice.port}/_matrix/app/v1"
    token = desk.config.appservice.hs_token
    async with aiohttp.ClientSession() as http:
        for path in (
            "/users/@sb_visitor_x:localhost",
            "/users/@someone:other.example",
            "/rooms/%23sb_lobby:localhost",
        ):
            async with http.get(base + path) as r:
                assert r.status == 403
            async with http.get(base + path, headers={"Authorization": "Bearer nope"}) as r:
                assert r.status == 403
            async with http.get(base + path, headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 404  # puppets exist only for visitors who started a chat
