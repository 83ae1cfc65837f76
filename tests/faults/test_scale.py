"""Several Switchboard processes on one PostgreSQL: any portal process serves any visitor."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from harness.visitor import Visitor
from tests.desks import free_port, open_bot_chat
from tests.faults.process import SwitchboardProcess, write_config
from tests.pg import fresh_schema_url


@pytest.fixture
async def two_processes(homeserver, tmp_path):
    """A: the appservice the homeserver pushes to, and a portal. B: a second portal, with a
    standby appservice endpoint the homeserver does not know."""
    admin = homeserver.new_user("admin")
    async with fresh_schema_url() as url:
        ports = {name: free_port() for name in ("a", "b", "standby")}
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        processes = []
        for name, as_port in (("a", homeserver.config.appservice.port), ("b", ports["standby"])):
            other = "b" if name == "a" else "a"
            path = tmp_path / f"{name}.yaml"
            write_config(
                homeserver.config.path,
                path,
                {
                    "database.url": url,
                    "appservice.port": as_port,
                    "portal.port": ports[name],
                    "portal.public_url": urls[name],
                    "portal.allowed_origins": [urls[other]],
                    "desk.admins": [admin],
                    "logging.root.level": "INFO",
                },
            )
            processes.append(SwitchboardProcess(path))
        try:
            for process in processes:
                await asyncio.to_thread(process.start)
            yield admin, processes[0], processes[1]
        finally:
            for process in processes:  # also A when B did not start: its port is the session's
                process.stop()


async def test_a_visitor_reconnecting_to_another_portal_process_loses_nothing(
    two_processes, people
):
    admin_id, a, b = two_processes
    bot = a.config.bot_mxid
    admin = await people.login(admin_id)
    ana = await people.advisor(None, "ana")
    dm = await open_bot_chat(admin, bot)
    await admin.send_text(dm, f"!advisor add {ana.user_id}")
    control = await ana.wait_for_invite()
    await ana.join(control)
    await ana.send_text(control, "!available")
    await ana.wait_for_message(control, "You are available", sender=bot)

    chat = await people.chatting(a, ana)  # the visitor's page is on A
    on_a, room = chat.visitor, chat.room
    await on_a.wait_status("active", advisor_name="Ana")
    await ana.send_text(room, "hello through A")
    await on_a.wait_message("hello through A")
    last = on_a.last_seq()
    await on_a.disconnect()

    # the same visitor (same cookie) comes back through the other process
    on_b = Visitor(b.config.portal.public_url, on_a.http)
    on_b.csrf = on_a.csrf
    await on_b.connect(since=last)
    await ana.send_text(room, "live through B")  # handled by A, pushed to B's page
    await on_b.wait_message("live through B")
    await on_b.say("answered through B")  # sent by B as the visitor's puppet
    await ana.wait_for_message(room, "answered through B")
    await ana.set_typing(room, True)
    await on_b.wait_for(lambda f: f.get("type") == "typing" and f["typing"])
    # the homeserver fails over to the standby endpoint (B), then back: handled once
    event = {
        "type": "m.room.message",
        "room_id": room,
        "sender": ana.user_id,
        "event_id": f"$failover-{uuid.uuid4().hex}",
        "origin_server_ts": 1_700_000_000_000,
        "content": {"msgtype": "m.text", "body": "pushed to the standby"},
    }
    token = a.config.appservice.hs_token
    async with aiohttp.ClientSession() as http:
        for process in (b, a):
            async with http.put(
                f"http://127.0.0.1:{process.config.appservice.port}"
                f"/_matrix/app/v1/transactions/failover-{uuid.uuid4().hex}",
                json={"events": [event]},
                headers={"Authorization": f"Bearer {token}"},
            ) as response:
                assert response.status == 200
    await on_b.wait_message("pushed to the standby")
    history = await on_b.history()
    bodies = [m["body"] for m in history["messages"]]
    for body in (
        "hello through A",
        "live through B",
        "answered through B",
        "pushed to the standby",
    ):
        assert bodies.count(body) == 1
    await ana.send_text(room, "!close")
    await on_b.wait_status("ended")
    await on_b.disconnect()
