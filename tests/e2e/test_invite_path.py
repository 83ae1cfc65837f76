"""The way from a visitor's form to the advisor's invite, on a real Synapse: as few requests as
the protocol needs (the homeserver is what a crowd of visitors waits for), and none of the
answers the requests we dropped used to give is lost."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import unquote

import aiohttp

from bridge.model import AdvisorMxid, ConversationStatus, Presence, Visitor, VisitorId


class RequestLog:
    """What Switchboard asks the homeserver, in order: method, path template and who asks."""

    def __init__(self, bot: str) -> None:
        self.bot = bot
        self.requests: list[str] = []

    def trace_config(self) -> aiohttp.TraceConfig:
        async def started(
            session: aiohttp.ClientSession,
            context: SimpleNamespace,
            params: aiohttp.TraceRequestStartParams,
        ) -> None:
            path = unquote(params.url.raw_path).split("/_matrix/client/", 1)[-1]
            if "/appservice/" in path:
                return  # the housekeeping ping, whenever it comes
            parts = [
                "{room}" if p.startswith("!") else "{user}" if p.startswith("@") else p
                for p in path.split("/")[1:]  # without the API version
            ]
            if len(parts) > 3 and parts[2] == "send":
                parts[4:] = ["{txn}"]
            who = "bot" if params.url.query.get("user_id", self.bot) == self.bot else "puppet"
            self.requests.append(f"{params.method} /{'/'.join(parts)} ({who})")

        config = aiohttp.TraceConfig()
        config.on_request_start.append(started)
        config.freeze()
        return config


async def test_the_way_to_the_invite_makes_only_the_requests_the_protocol_needs(
    sqlite_desks, people
):
    desk = await sqlite_desks.start()
    ana = await people.advisor(desk, "ana")
    # her presence is known, as after her first join (where it is asked once: PresenceUnknown)
    await desk.advisors.presence_changed(ana.user_id, Presence.ONLINE)
    vera = await people.visitor(desk)
    log = RequestLog(desk.config.bot_mxid)
    assert desk._http is not None
    desk._http.trace_configs.append(log.trace_config())  # read by aiohttp on every request

    await vera.start(name="Vera <b>Visitor</b>")
    room = await ana.wait_for_invite()
    invite = log.requests.index("POST /rooms/{room}/invite (bot)")
    assert log.requests[: invite + 1] == [
        "POST /register (puppet)",
        "PUT /profile/{user}/displayname (puppet)",
        "POST /createRoom (bot)",
        "POST /rooms/{room}/invite (bot)",
    ]
    # then the puppet joins, and the form and the first message are two sends; nothing is
    # read back
    await ana.join(room)
    first = await ana.wait_for_message(room, "Hello, I was charged twice.")
    assert log.requests.count("POST /rooms/{room}/join (puppet)") == 1
    assert not [r for r in log.requests if r.startswith("GET ")]
    assert log.requests.count("PUT /rooms/{room}/send/m.room.message/{txn} (bot)") == 1
    assert log.requests.count("PUT /rooms/{room}/send/m.room.message/{txn} (puppet)") == 1
    # the puppet is in the room as the visitor, their name as typed
    assert ana.client.rooms[room].user_name(first.sender) == "Vera <b>Visitor</b> (visitor)"


async def test_an_advisor_handed_a_visitor_back_while_still_in_the_room_owns_it_again(
    sqlite_desks, people
):
    desk = await sqlite_desks.start()
    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    started = await vera.start()
    room = await ana.wait_for_invite()
    await ana.join(room)
    await vera.connect()
    await vera.wait_status("active", advisor_name="Ana")

    # the desk hands the visitor back (as when Ana's presence goes away) while Ana stays in
    # the room; she is the only advisor, so she is offered the visitor again: the invite
    # answers that she is there already, and she owns the chat at once, with no join to wait for
    conversation_id = started["conversation"]["id"]
    assert await desk.queue.release(conversation_id, AdvisorMxid(ana.user_id), "Back to you.")
    back = await vera.wait_message("Back to you.")
    await vera.wait_for(  # offered to Ana again: she is in the room, so it is hers at once
        lambda f: f.get("type") == "message"
        and f["message"]["body"] == "Ana joined the chat."
        and f["message"]["seq"] > back["seq"]
    )
    conversation = await desk.store.get_conversation(conversation_id)
    assert conversation.status is ConversationStatus.ACTIVE
    assert conversation.advisor == ana.user_id
    transcript = [m.body for m in await desk.rooms.transcript(conversation_id)]
    assert transcript[-3:] == ["Ana joined the chat.", "Back to you.", "Ana joined the chat."]
    await vera.wait_status("active", advisor_name="Ana")
    # she stayed in the room all along: her last membership event is her join
    own = [e for e in ana.timeline[room] if getattr(e, "state_key", None) == ana.user_id]
    assert own and getattr(own[-1], "membership", None) == "join"
    # and an advisor who is not in the room gets a real invite
    bob = await people.advisor(desk, "bob")
    assert not await desk.gateway.invite_advisor(room, AdvisorMxid(bob.user_id))
    assert await bob.wait_for_invite() == room


async def test_a_room_made_before_its_answer_was_lost_is_found_not_made_again(
    sqlite_desks, people
):
    # the homeserver made the room, but its answer never reached us (or we died before storing
    # it): the retry finds that room by its key instead of leaving it behind with the puppet
    desk = await sqlite_desks.start()
    visitor = Visitor(VisitorId("v-lost"), "Lou", None, desk.clock.now())
    puppet = await desk.gateway.create_puppet(visitor)
    first = await desk.gateway.create_room(puppet, "Lou (visitor)", "topic", "conv_lost-answer")
    again = await desk.gateway.create_room(puppet, "Lou (visitor)", "topic", "conv_lost-answer")
    assert again == first
    await desk.gateway.puppet_join(first, puppet)  # the puppet is invited to it
    # once the room is closed its key is let go: a new room may take it
    await desk.gateway.forget_room_key("conv_lost-answer")
    await desk.gateway.forget_room_key("conv_lost-answer")  # gone already: done
    other = await desk.gateway.create_room(puppet, "Lou (visitor)", "topic", "conv_lost-answer")
    assert other != first
