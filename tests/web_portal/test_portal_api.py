"""The visitor API as a page or an API client uses it, checked against its OpenAPI document."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from bridge.model import AdvisorMxid, ConversationId
from tests.web_portal.conftest import (
    FORM,
    ORIGIN,
    TOPICS,
    Contract,
    Portal,
    PortalFactory,
    error_of,
    next_frame,
)


async def served_contract(portal: Portal) -> Contract:
    visitor = await portal.visitor()
    response = await visitor.client.get("/api/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    return Contract(await response.json())


async def test_visitor_chats_from_start_to_end_through_the_documented_api(portal: Portal) -> None:
    contract = await served_contract(portal)
    vera = await portal.visitor()

    response = await vera.client.get("/api/session")
    session = await response.json()
    contract.response("/api/session", "get", response.status, session)
    assert re.fullmatch(r"[0-9a-f]{64}", session["csrf_token"])
    vera.csrf = session["csrf_token"]

    response = await vera.client.get("/api/conversation")
    nothing = await response.json()
    contract.response("/api/conversation", "get", response.status, nothing)
    assert nothing == {"conversation": None, "messages": []}

    response = await vera.post("/api/conversation", FORM)
    started = await response.json()
    contract.response("/api/conversation", "post", response.status, started)
    assert response.status == 201
    conversation = started["conversation"]
    assert conversation["status"] == "waiting"
    assert conversation["queue_position"] == 1
    assert conversation["topic"] == TOPICS["general"]
    assert conversation["visitor_name"] == "Vera"
    assert [(m["sender"], m["author"], m["body"]) for m in started["messages"]] == [
        ("visitor", "Vera", "Hello")
    ]
    await portal.settle()  # the room is made from the outbox, after the answer
    room = portal.gateway.of("room")
    assert len(room) == 1 and room[0][3] == "Vera (visitor)"
    assert ("text", room[0][1], "Hello") in portal.gateway.sent

    response = await vera.client.get("/api/conversation")
    again = await response.json()
    contract.response("/api/conversation", "get", response.status, again)
    assert again["messages"] == started["messages"]
    # the same conversation; its room was made meanwhile (a change the page may order by)
    assert again["conversation"]["version"] > started["conversation"]["version"]
    assert {**again["conversation"], "version": 0} == {**started["conversation"], "version": 0}

    await portal.advisor_takes(conversation["id"])
    assert (await vera.conversation())["conversation"]["status"] == "active"

    response = await vera.post(
        "/api/conversation/messages", {"client_id": "c-1", "body": "Where is my parcel?"}
    )
    sent = await response.json()
    contract.response("/api/conversation/messages", "post", response.status, sent)
    assert response.status == 201
    assert sent["message"]["body"] == "Where is my parcel?"
    assert sent["message"]["client_id"] == "c-1"
    await portal.settle()
    assert ("text", room[0][1], "Where is my parcel?") in portal.gateway.sent

    response = await vera.post("/api/conversation/typing", {"typing": True})
    contract.response(
        "/api/conversation/typing", "post", response.status, (await response.read()) or None
    )
    assert response.status == 204
    assert portal.gateway.of("typing")[-1] == ("typing", room[0][1], True)

    await portal.advisor_says(conversation["id"], "On its way!")
    response = await vera.client.get(
        "/api/conversation", params={"since": str(sent["message"]["seq"])}
    )
    later = await response.json()
    contract.response("/api/conversation", "get", response.status, later)
    assert [(m["sender"], m["body"], m["client_id"]) for m in later["messages"]] == [
        ("advisor", "On its way!", None)
    ]
    assert later["conversation"]["advisor_name"] == "Ana"

    response = await vera.post("/api/conversation/read", {"up_to": later["messages"][0]["seq"]})
    contract.response(
        "/api/conversation/read", "post", response.status, (await response.read()) or None
    )
    assert response.status == 204
    assert portal.gateway.of("read")[-1][1] == room[0][1]

    response = await vera.post("/api/conversation/end")
    ended = await response.json()
    contract.response("/api/conversation/end", "post", response.status, ended)
    assert response.status == 200
    assert ended["conversation"]["status"] == "ended"
    await portal.settle()
    assert portal.gateway.of("leave")

    response = await vera.post(
        "/api/conversation/messages", {"client_id": "c-2", "body": "one more thing"}
    )
    error = await error_of(response, 409, "no_conversation")
    contract.response("/api/conversation/messages", "post", 409, {"error": error})


async def test_starting_twice_returns_the_open_conversation(portal: Portal) -> None:
    vera = await portal.visitor()
    first_status, first = await vera.start()
    second_status, second = await vera.start(message="Hello again")
    assert (first_status, second_status) == (201, 200)
    assert second["conversation"]["id"] == first["conversation"]["id"]
    assert [m["body"] for m in second["messages"]] == ["Hello"]
    await portal.settle()
    assert portal.gateway.rooms == 1


async def test_ten_concurrent_starts_from_one_session_open_one_conversation_and_one_room(
    make_portal: PortalFactory,
) -> None:
    # a store that yields like a database, so the ten requests really interleave
    portal = await make_portal(latency=True)
    vera = await portal.visitor()
    await vera.session()
    results = await asyncio.gather(*(vera.start() for _ in range(10)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 9 + [201]
    assert len({body["conversation"]["id"] for _, body in results}) == 1
    assert len(portal.store.conversations) == 1
    await portal.settle()
    assert portal.gateway.rooms == 1
    (log,) = portal.store.messages_.values()
    assert [m.body for m in log] == ["Hello"]


async def test_two_tabs_of_one_visitor_see_each_others_messages_live(
    portal: Portal, contract: Contract
) -> None:
    vera = await portal.visitor()
    _, started = await vera.start()
    tab1, tab2 = await vera.ws(), await vera.ws()
    for tab in (tab1, tab2):
        backlog, status = await vera.backlog(tab)
        assert [m["body"] for m in backlog] == ["Hello"]
        contract.schema("Conversation", status)

    status, _ = await vera.say("typed in tab 1")
    assert status == 201
    for tab in (tab1, tab2):
        frame = await next_frame(tab)
        assert frame["type"] == "message"
        contract.schema("Message", frame["message"])
        assert frame["message"]["body"] == "typed in tab 1"

    await portal.advisor_takes(started["conversation"]["id"])
    await portal.advisor_says(started["conversation"]["id"], "Hi Vera")
    for tab in (tab1, tab2):
        statuses = []
        while (frame := await next_frame(tab))["type"] != "message" or (
            frame["message"]["body"] != "Hi Vera"
        ):
            if frame["type"] == "status":
                statuses.append(frame["conversation"]["status"])
        assert frame["message"]["sender"] == "advisor"
        assert statuses[-2:] == ["inviting", "active"]


async def test_websocket_since_replays_exactly_the_later_messages_then_the_status(
    portal: Portal, contract: Contract
) -> None:
    vera = await portal.visitor()
    await vera.start()
    for text in ("two", "three", "four"):
        assert (await vera.say(text))[0] == 201

    for since, expected in [
        (0, ["Hello", "two", "three", "four"]),
        (2, ["three", "four"]),
        (4, []),
        (99, []),
        (10**40, []),
        ("0" * 12 + "2", ["three", "four"]),
    ]:
        ws = await vera.ws(since)
        backlog, status = await vera.backlog(ws)
        for message in backlog:
            contract.schema("Message", message)
        contract.schema("Conversation", status)
        assert [m["body"] for m in backlog] == expected, since
        assert [m["seq"] for m in backlog] == list(range(5 - len(expected), 5)), since
        # nothing else is queued: the next frame is the answer to our ping
        await ws.send_json({"type": "ping"})
        assert await next_frame(ws) == {"type": "pong"}
        await ws.close()


@pytest.mark.parametrize(
    "since", ["abc", "1.5", "1e3", "", "0x10", "-1", "-5", "+5", " 5", "1_0", "٣"]
)
async def test_since_that_is_not_a_whole_number_is_a_400_json_error(
    portal: Portal, contract: Contract, since: str
) -> None:
    vera = await portal.visitor()
    await vera.start()

    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await vera.ws(since)
    assert refused.value.status == 400

    response = await vera.client.get(
        "/api/ws", params={"since": since}, headers={"Origin": ORIGIN}
    )
    await error_of(response, 400, "invalid_input")

    response = await vera.client.get("/api/conversation", params={"since": since})
    error = await error_of(response, 400, "invalid_input")
    contract.response("/api/conversation", "get", 400, {"error": error})


async def test_openapi_document_describes_every_api_route_the_app_serves(portal: Portal) -> None:
    contract = await served_contract(portal)
    served = {
        (route.resource.canonical, route.method.lower())
        for route in portal.server.app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith("/api/")
        and route.method != "HEAD"
        # the websocket is described in info.description; the document does not list itself
        and route.resource.canonical not in ("/api/ws", "/api/openapi.json")
    }
    documented = {
        (path, method) for path, item in contract.document["paths"].items() for method in item
    }
    assert served == documented
    assert contract.document["servers"] == [{"url": portal.settings.public_url}]


async def test_openapi_topic_choices_are_exactly_the_configured_topics_and_all_work(
    portal: Portal,
) -> None:
    contract = await served_contract(portal)
    enum = contract.document["components"]["schemas"]["StartForm"]["properties"]["topic"]["enum"]
    assert enum == list(portal.settings.topics)
    for topic in enum:
        visitor = await portal.visitor()
        status, body = await visitor.start(topic=topic)
        assert status == 201
        assert body["conversation"]["topic"] == portal.settings.topics[topic]
    visitor = await portal.visitor()
    response = await visitor.post("/api/conversation", {**FORM, "topic": "not-a-topic"})
    assert (await error_of(response, 400, "invalid_input"))["field"] == "topic"


async def test_edits_and_removals_reach_an_open_page_and_one_that_comes_back(
    portal: Portal, contract: Contract
) -> None:
    vera = await portal.visitor()
    _, started = await vera.start()
    cid = started["conversation"]["id"]
    await portal.advisor_takes(cid)
    await portal.advisor_says(cid, "Helo")
    await portal.advisor_says(cid, "my card is 4242")
    stored = {m.body: m for m in portal.store.messages_[ConversationId(cid)]}
    ws = await vera.ws(0)
    backlog, _ = await vera.backlog(ws)
    last = backlog[-1]["seq"]

    rooms, room = portal.desk.rooms, portal.store.conversations[ConversationId(cid)].room_id
    assert room is not None
    context = await rooms.context(room, "@ana:test")
    ana = AdvisorMxid("@ana:test")
    await rooms.advisor_edited(context, ana, stored["Helo"].event_id, "Hello", 2e9)
    await rooms.message_removed(room, stored["my card is 4242"].event_id, 2e9 + 1)
    edited, removed = await next_frame(ws), await next_frame(ws)
    for frame in (edited, removed):
        assert frame["type"] == "update"
        contract.schema("Message", frame["message"])
    assert (edited["message"]["body"], edited["message"]["seq"]) == ("Hello", last - 1)
    assert edited["message"]["edited_at"] and not edited["message"]["removed_at"]
    assert (removed["message"]["body"], removed["message"]["seq"]) == ("", last)
    assert removed["message"]["removed_at"]
    await ws.close()

    # a page that had both, and reconnects: the changes first, then the status
    again = await vera.ws(last)
    first, second, status = [await next_frame(again) for _ in range(3)]
    assert [f["type"] for f in (first, second, status)] == ["update", "update", "status"]
    assert [f["message"]["body"] for f in (first, second)] == ["Hello", ""]
    # over HTTP (the page's fallback) too; and a fresh page has them as they are now
    changed = (await vera.conversation(since=str(last)))["messages"]
    assert [(m["seq"], m["body"]) for m in changed] == [(last - 1, "Hello"), (last, "")]
    fresh = (await vera.conversation(since="0"))["messages"]
    assert [m["body"] for m in fresh][-2:] == ["Hello", ""]
