"""What an attacker tries against the portal, and what a visitor must never notice."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from http.cookies import SimpleCookie
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict

from bridge.model import ConversationId, Message, MessageId, Sender
from bridge.ports import MessageEvent
from tests.web_portal.conftest import (
    FOREIGN_ORIGIN,
    FORM,
    ORIGIN,
    SECRET,
    Portal,
    PortalFactory,
    Visitor,
    closed,
    error_of,
    next_frame,
)
from web_portal.hub import CLOSE_TOO_SLOW, QUEUE_SIZE, Subscriber, VisitorHub
from web_portal.security import ClientAddress, RateLimiter

POSTS = [
    "/api/conversation",
    "/api/conversation/messages",
    "/api/conversation/typing",
    "/api/conversation/read",
    "/api/conversation/end",
]
WITH_BODY = POSTS[:4]
BODIES: dict[str, Any] = {
    "/api/conversation": FORM,
    "/api/conversation/messages": {"client_id": "attack", "body": "injected"},
    "/api/conversation/typing": {"typing": True},
    "/api/conversation/read": {"up_to": 1},
    "/api/conversation/end": None,
}


def set_cookie(response: aiohttp.ClientResponse) -> Any:
    """The sb_session morsel the response sets, or None."""
    for header in response.headers.getall("Set-Cookie", []):
        cookie = SimpleCookie()
        cookie.load(header)
        if "sb_session" in cookie:
            return cookie["sb_session"]
    return None


async def visitor_in_chat(portal: Portal, **form: Any) -> tuple[Visitor, str]:
    visitor = await portal.visitor()
    status, body = await visitor.start(**form)
    assert status == 201, body
    return visitor, body["conversation"]["id"]


# -- CSRF and origins ----------------------------------------------------------------------


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("token", ["missing", "wrong", "another session's"])
async def test_post_without_this_sessions_csrf_token_is_refused_and_changes_nothing(
    portal: Portal, path: str, token: str
) -> None:
    victim = await portal.visitor()
    if path != "/api/conversation":
        await victim.start()  # so that the request would otherwise succeed
    else:
        await victim.session()
    other = await portal.visitor()
    headers = {
        "missing": {},
        "wrong": {"X-CSRF-Token": "0" * 64},
        "another session's": {"X-CSRF-Token": await other.session()},
    }[token]
    before = portal.snapshot()
    response = await victim.post(path, BODIES[path], csrf=False, headers=headers)
    await error_of(response, 403, "forbidden")
    assert portal.snapshot() == before


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("origin", [FOREIGN_ORIGIN, "null", ORIGIN + ".evil.example"])
async def test_post_from_a_foreign_origin_is_refused_even_with_the_right_token(
    portal: Portal, path: str, origin: str
) -> None:
    vera = await portal.visitor()
    if path != "/api/conversation":
        await vera.start()
    before = portal.snapshot()
    response = await vera.post(path, BODIES[path], headers={"Origin": origin})
    await error_of(response, 403, "forbidden")
    assert portal.snapshot() == before


async def test_websocket_from_a_foreign_origin_or_without_origin_is_refused_before_upgrade(
    portal: Portal,
) -> None:
    vera = await portal.visitor()
    await vera.start()
    for origin in (FOREIGN_ORIGIN, None, "null", "http://portal.test.evil.example"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await vera.ws(origin=origin)
        assert refused.value.status == 403, origin
    assert len(portal.hub) == 0

    ws = await vera.ws(origin=ORIGIN.upper())  # origins are case-insensitive
    backlog, status = await vera.backlog(ws)
    assert [m["body"] for m in backlog] == ["Hello"]
    assert len(portal.hub) == 1


async def test_websocket_accepts_a_configured_embedding_origin(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(allowed_origins=("https://www.acme.example",))
    vera = await portal.visitor()
    await vera.start()
    ws = await vera.ws(origin="https://www.acme.example")
    await vera.backlog(ws)


async def test_websocket_without_a_conversation_is_closed_with_4401(portal: Portal) -> None:
    stranger = await portal.visitor()
    ws = await stranger.ws()  # no cookie at all
    assert await closed(ws) == 4401
    await stranger.session()  # a session, but no conversation yet
    ws = await stranger.ws()
    assert await closed(ws) == 4401
    assert len(portal.hub) == 0


async def test_a_failure_after_the_upgrade_closes_that_socket_with_1011_and_a_reference(
    portal: Portal, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    vera = await portal.visitor()
    await vera.start()

    async def store_down(*args: Any) -> Any:
        raise RuntimeError("database is gone")

    monkeypatch.setattr(portal.desk.visitors, "current", store_down)
    ws = await vera.ws()
    assert await closed(ws) == 1011
    assert ws.close_code == 1011
    reference = [r for r in caplog.records if "database is gone" in str(r.exc_info)]
    assert reference and "[ref " in reference[0].getMessage()
    assert len(portal.hub) == 0
    monkeypatch.undo()
    ws = await vera.ws()  # and the page comes back once the store does
    await vera.backlog(ws)


# -- cookies and headers -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/api/session"])
async def test_session_cookie_is_httponly_and_samesite_lax(portal: Portal, path: str) -> None:
    response = await (await portal.visitor()).client.get(path)
    assert response.status == 200
    cookie = set_cookie(response)
    assert cookie is not None
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["path"] == "/"
    assert not cookie["secure"]  # plain http in this test: a Secure cookie would be lost
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{24}", cookie.value)


@pytest.mark.parametrize("path", ["/", "/api/session"])
async def test_session_cookie_is_secure_when_the_portal_is_https(
    make_portal: PortalFactory, path: str
) -> None:
    portal = await make_portal(public_url="https://portal.test")
    response = await (await portal.visitor()).client.get(path)
    cookie = set_cookie(response)
    assert cookie["secure"] is True
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"


@pytest.mark.parametrize(
    "method, path",
    [
        ("GET", "/"),
        ("GET", "/api/session"),
        ("GET", "/api/conversation"),
        ("GET", "/api/openapi.json"),
        ("POST", "/api/conversation"),  # a 403: errors carry the headers too
        ("GET", "/api/no-such-thing"),
    ],
)
async def test_page_and_api_responses_carry_csp_nosniff_and_no_store(
    portal: Portal, method: str, path: str
) -> None:
    response = await (await portal.visitor()).client.request(method, path)
    csp = response.headers["Content-Security-Policy"]
    directives = {
        d.split()[0]: d.split()[1:] for d in (part.strip() for part in csp.split(";")) if d
    }
    assert directives["script-src"] == ["'self'"]
    assert directives["default-src"] == ["'self'"]
    assert directives["base-uri"] == ["'none'"]
    assert "frame-ancestors" in directives
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "no-store" in response.headers["Cache-Control"]


@pytest.mark.parametrize("path", ["/no-such-page", "/portal.html"])
async def test_not_found_pages_carry_the_security_headers_too(portal: Portal, path: str) -> None:
    response = await (await portal.visitor()).client.get(path)
    assert response.status == 404
    assert "script-src 'self'" in response.headers.get("Content-Security-Policy", "")
    assert response.headers.get("X-Content-Type-Options") == "nosniff"


async def test_a_page_asked_with_a_method_it_lacks_says_which_it_has(portal: Portal) -> None:
    response = await (await portal.visitor()).client.put("/")
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"GET", "HEAD"}
    assert response.content_type == "text/plain"
    assert "script-src 'self'" in response.headers.get("Content-Security-Policy", "")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../app.py",
        "/static/..%2fapp.py",
        "/static/%2e%2e/app.py",
        "/static/%2e%2e%2fsecurity.py",
        "/static/..\\app.py",
    ],
)
async def test_static_files_do_not_serve_the_source_next_to_them(
    portal: Portal, path: str
) -> None:
    response = await (await portal.visitor()).client.get(path)
    assert response.status in (403, 404)
    text = await response.text()
    assert "create_app" not in text and "compare_digest" not in text


# -- session fixation and forged cookies ---------------------------------------------------


async def test_session_token_in_the_url_is_ignored(portal: Portal) -> None:
    attacker, conversation_id = await visitor_in_chat(portal, message="attacker's chat")
    planted = attacker.cookie
    assert planted is not None
    planted_csrf = hmac.new(SECRET.encode(), b"csrf:" + planted.encode(), hashlib.sha256)

    victim = await portal.visitor()
    page = await victim.client.get("/", params={"sb_session": planted})
    cookie = set_cookie(page)
    assert cookie is not None and cookie.value != planted
    assert planted_csrf.hexdigest() not in await page.text()

    response = await victim.client.get("/api/session", params={"sb_session": planted})
    assert (await response.json())["csrf_token"] != planted_csrf.hexdigest()
    assert (await victim.conversation(sb_session=planted))["conversation"] is None
    ws = await victim.ws(query=f"sb_session={planted}")
    assert await closed(ws) == 4401
    assert conversation_id in portal.store.conversations


@pytest.mark.parametrize(
    "forged",
    [
        "short",
        "!" * 40,
        "a" * 65,
        "a" * 4000,
        "../../../../etc/passwd/aaaaaaaaaaaaaa",
        '"short"',
        "é" * 30,  # str.isalnum() alone would take these for a token
        "１２３４５６７８９０" * 3,
        "²" * 30,
        "aaaaaaaaaaaa%00aaaaaaaaaaaaaaaa",
        "",
    ],
)
async def test_forged_session_cookie_gets_a_fresh_session_never_an_error(
    portal: Portal, forged: str
) -> None:
    visitor = await portal.visitor()
    response = await visitor.client.get("/api/session", headers={"Cookie": f"sb_session={forged}"})
    assert response.status == 200, await response.text()
    cookie = set_cookie(response)
    assert cookie is not None, "the forged value was adopted as a session"
    assert cookie.value != forged and re.fullmatch(
        r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{24}", cookie.value
    )
    page_visitor = await portal.visitor()  # a clean jar: only the forged cookie is sent
    page = await page_visitor.client.get("/", headers={"Cookie": f"sb_session={forged}"})
    assert page.status == 200
    assert set_cookie(page) is not None


async def test_well_shaped_session_token_the_server_never_issued_is_not_adopted(
    portal: Portal,
) -> None:
    planted = "A" * 43  # the shape of secrets.token_urlsafe(32)
    victim = await portal.visitor()
    response = await victim.client.get("/", headers={"Cookie": f"sb_session={planted}"})
    assert response.status == 200
    cookie = set_cookie(response)
    assert cookie is not None and cookie.value != planted


async def test_cookie_too_large_for_the_http_layer_is_a_400_not_a_500(portal: Portal) -> None:
    visitor = await portal.visitor()
    response = await visitor.client.get(
        "/api/session", headers={"Cookie": "sb_session=" + "a" * 10_240}
    )
    assert response.status == 400
    assert len(portal.store.visitors) == 0


# -- IDOR ----------------------------------------------------------------------------------


async def test_visitor_cannot_read_or_post_into_another_visitors_conversation(
    portal: Portal,
) -> None:
    alice, alice_id = await visitor_in_chat(portal, name="Alice", message="my card is 4242")
    assert (await alice.say("secret", client_id="alice-1"))[0] == 201
    alice_log = list(portal.store.messages_[ConversationId(alice_id)])
    mallory = await portal.visitor()
    await mallory.session()
    ids = {"conversation_id": alice_id, "conversation": alice_id, "id": alice_id}

    got = await mallory.conversation(**ids, since="0")
    assert got == {"conversation": None, "messages": []}
    for path in POSTS[1:]:
        body = {**(BODIES[path] or {}), **ids}
        response = await mallory.post(path + f"?conversation_id={alice_id}", body)
        await error_of(response, 409, "no_conversation")
    ws = await mallory.ws(0, query=f"conversation_id={alice_id}&conversation={alice_id}")
    assert await closed(ws) == 4401

    # with a chat of her own, the ids still only ever reach her own conversation
    status, own = await mallory.start(name="Mallory", message="hi", **ids)
    assert status == 201 and own["conversation"]["id"] != alice_id
    response = await mallory.post(
        "/api/conversation/messages", {**ids, "client_id": "alice-1", "body": "injected"}
    )
    assert response.status == 201
    stored = (await response.json())["message"]
    assert stored["body"] == "injected" and stored["author"] == "Mallory"
    got = await mallory.conversation(**ids)
    assert got["conversation"]["id"] == own["conversation"]["id"]
    assert "4242" not in json.dumps(got) and "secret" not in json.dumps(got)
    ws = await mallory.ws(0, query=f"conversation_id={alice_id}")
    backlog, status_frame = await mallory.backlog(ws)
    assert status_frame["id"] == own["conversation"]["id"]
    assert [m["body"] for m in backlog] == ["hi", "injected"]
    response = await mallory.post("/api/conversation/end", ids)
    assert response.status == 200

    assert portal.store.messages_[ConversationId(alice_id)] == alice_log
    assert portal.store.conversations[ConversationId(alice_id)].status.is_open


# -- XSS -----------------------------------------------------------------------------------

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_TEXT = (
    '<img src=x onerror=alert(1)> <a href="javascript:alert(2)">click</a> '
    "[more](javascript:alert(3)) \"'><svg onload=alert(4)>"
)


async def test_hostile_name_and_message_are_stored_and_returned_as_plain_text(
    portal: Portal,
) -> None:
    vera, conversation_id = await visitor_in_chat(portal, name=HOSTILE_NAME, message=HOSTILE_TEXT)
    ws = await vera.ws()
    backlog, status = await vera.backlog(ws)
    assert status["visitor_name"] == HOSTILE_NAME
    assert backlog[0]["body"] == HOSTILE_TEXT and backlog[0]["author"] == HOSTILE_NAME
    response = await vera.post(
        "/api/conversation/messages", {"client_id": "x", "body": "javascript:alert(5)"}
    )
    assert response.content_type == "application/json"
    assert (await response.json())["message"]["body"] == "javascript:alert(5)"
    assert (await next_frame(ws))["message"]["body"] == "javascript:alert(5)"
    got = await vera.conversation()
    assert [m["body"] for m in got["messages"]] == [HOSTILE_TEXT, "javascript:alert(5)"]
    assert [m.body for m in portal.store.messages_[ConversationId(conversation_id)]] == [
        HOSTILE_TEXT,
        "javascript:alert(5)",
    ]
    # a topic is an id from the list, never free text
    other = await portal.visitor()
    response = await other.post("/api/conversation", {**FORM, "topic": HOSTILE_NAME})
    assert (await error_of(response, 400, "invalid_input"))["field"] == "topic"


async def test_portal_page_escapes_a_hostile_org_name_and_topic_labels(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(
        org_name='<script>alert(1)</script>"><img src=x onerror=alert(2)>',
        topics={"general": "<b onmouseover=alert(3)>General</b>", 'x"><script>': "X"},
    )
    page = await (await portal.visitor()).client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    html = await page.text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert" not in html
    assert "<img src=x" not in html and "<b onmouseover" not in html
    # the quote cannot end the attribute
    assert 'data-org="&lt;script&gt;alert(1)&lt;/script&gt;&#34;&gt;&lt;img src=x' in html
    assert 'value="x&#34;&gt;&lt;script&gt;"' in html
    scripts = re.findall(r"<script\b[^>]*>", html)
    assert len(scripts) == 1 and re.fullmatch(
        r'<script src="/static/portal\.[0-9a-f]{16}\.js" defer>', scripts[0]
    ), scripts
    token = re.search(r'<meta name="csrf-token" content="([0-9a-f]{64})">', html)
    assert token is not None


# -- hostile JSON --------------------------------------------------------------------------

CONFUSION = {
    "array": b"[]",
    "array of the form": json.dumps([FORM]).encode(),
    "number": b"42",
    "string": b'"hello"',
    "null": b"null",
    "true": b"true",
    "NaN": b"NaN",
    "empty body": b"",
    "invalid JSON": b'{"name": ',
    "trailing garbage": b'{"typing": true} x',
    "invalid UTF-8": b'{"name": "\xff\xfe", "body": "\xc3\x28", "typing": true, "up_to": 1}',
    "lone surrogate": b'{"name": "\\ud800", "body": "\\udfff", "message": "\\ud800"}',
    "nested objects": json.dumps(
        {k: {"$gt": ""} for k in ("name", "email", "topic", "message", "body", "typing", "up_to")}
    ).encode(),
    "arrays in fields": json.dumps(
        {k: [1] for k in ("name", "email", "topic", "message", "body", "typing", "up_to")}
    ).encode(),
    "numbers in fields": json.dumps(
        {
            "name": 1,
            "email": 2,
            "topic": 3,
            "message": 4,
            "body": 5,
            "typing": 1,
            "client_id": 6,
            "up_to": 1.5,
        }
    ).encode(),
    "booleans in fields": json.dumps(
        {
            "name": True,
            "topic": True,
            "message": False,
            "body": True,
            "typing": "yes",
            "up_to": True,
        }
    ).encode(),
    "nulls in fields": json.dumps(
        {"name": None, "topic": None, "message": None, "body": None, "typing": None, "up_to": None}
    ).encode(),
    "strings in fields": b'{"typing": "true", "name": "", "body": "", "up_to": "1"}',
}


@pytest.mark.parametrize("path", WITH_BODY)
@pytest.mark.parametrize("payload", list(CONFUSION), ids=list(CONFUSION))
async def test_malformed_json_is_a_4xx_json_error_and_stores_nothing(
    portal: Portal, path: str, payload: str
) -> None:
    vera = await portal.visitor()
    if path != "/api/conversation":
        await vera.start()
    else:
        await vera.session()
    before = portal.snapshot()
    response = await vera.post(path, data=CONFUSION[payload])
    await error_of(response, 400, "invalid_input")
    assert portal.snapshot() == before


@pytest.mark.parametrize("path", WITH_BODY)
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None],
)
async def test_wrong_content_type_is_refused_even_with_a_valid_body(
    portal: Portal, path: str, content_type: str | None
) -> None:
    vera = await portal.visitor()
    if path != "/api/conversation":
        await vera.start()
    before = portal.snapshot()
    headers = {"Content-Type": content_type} if content_type else {"Content-Type": ""}
    response = await vera.post(path, data=json.dumps(BODIES[path]), headers=headers)
    await error_of(response, 400, "invalid_input")
    assert portal.snapshot() == before


@pytest.mark.parametrize("path", WITH_BODY)
async def test_ten_megabyte_body_is_a_413_json_error_not_a_500(portal: Portal, path: str) -> None:
    vera = await portal.visitor()
    if path != "/api/conversation":
        await vera.start()
    before = portal.snapshot()
    huge = "x" * (10 * 1024 * 1024)
    body = {**FORM, "name": huge, "message": huge, "body": huge, "client_id": "big"}
    response = await vera.post(path, body)
    await error_of(response, 413)
    assert portal.snapshot() == before


def test_every_error_status_a_post_can_return_is_documented(contract: Any) -> None:
    for path in WITH_BODY:
        assert "413" in contract.document["paths"][path]["post"]["responses"], path


@pytest.mark.parametrize("path", WITH_BODY)
async def test_deeply_nested_json_is_a_400_not_a_server_error(portal: Portal, path: str) -> None:
    vera = await portal.visitor()
    if path != "/api/conversation":
        await vera.start()
    before = portal.snapshot()
    response = await vera.post(path, data=b"[" * 60_000)
    await error_of(response, 400, "invalid_input")
    assert portal.snapshot() == before


async def test_read_receipt_with_an_absurd_message_number_is_not_a_server_error(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(sqlite=True)
    vera = await portal.visitor()
    assert (await vera.start())[0] == 201
    for up_to in (2**31 + 1, 2**63 + 50, 10**30):
        response = await vera.post("/api/conversation/read", {"up_to": up_to})
        assert response.status in (204, 400), (up_to, await response.text())


async def test_garbage_body_to_end_without_a_chat_is_a_409_json_error(portal: Portal) -> None:
    vera = await portal.visitor()
    response = await vera.post("/api/conversation/end", data=b"\xff[[[")
    await error_of(response, 409, "no_conversation")


@pytest.mark.parametrize(
    "path, change, field",
    [
        ("/api/conversation", {"name": ""}, "name"),
        ("/api/conversation", {"name": " \u200b\t "}, "name"),
        ("/api/conversation", {"name": "n" * 81}, "name"),
        ("/api/conversation", {"email": "not-an-email"}, "email"),
        ("/api/conversation", {"email": "a@b.c<script>"}, "email"),
        ("/api/conversation", {"topic": "nope"}, "topic"),
        ("/api/conversation", {"message": ""}, "message"),
        ("/api/conversation", {"message": "m" * 4001}, "message"),
        ("/api/conversation/messages", {"body": ""}, "message"),
        ("/api/conversation/messages", {"body": "\u0000\u0007"}, "message"),
        ("/api/conversation/messages", {"body": 12}, "message"),
        # what the document says, counted as sent: over the limit only by what would be trimmed
        ("/api/conversation", {"name": "Vera" + " " * 77}, "name"),
        ("/api/conversation", {"email": " vera@example.org" + "\u200b" * 240}, "email"),
        ("/api/conversation", {"message": "Hello" + "\n" * 3996}, "message"),
        ("/api/conversation/messages", {"body": "hi" + "\t" * 3999}, "message"),
        # the idempotency key: without it a retried send would be stored twice
        ("/api/conversation/messages", {"client_id": None}, "client_id"),
        ("/api/conversation/messages", {"client_id": ""}, "client_id"),
        ("/api/conversation/messages", {"client_id": "c" * 65}, "client_id"),
        ("/api/conversation/messages", {"client_id": 7}, "client_id"),
    ],
)
async def test_field_error_names_the_field(
    portal: Portal, path: str, change: dict[str, Any], field: str
) -> None:
    vera = await portal.visitor()
    if path != "/api/conversation":
        await vera.start()
    before = portal.snapshot()
    base = FORM if path == "/api/conversation" else {"client_id": "c", "body": "hi"}
    response = await vera.post(path, {**base, **change})
    error = await error_of(response, 400, "invalid_input")
    assert error["field"] == field
    assert error["message"]
    assert portal.snapshot() == before


# -- rate limits and client addresses ------------------------------------------------------


async def test_fourth_new_chat_from_one_address_in_a_minute_is_429_but_retries_are_free(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(starts_per_minute=3)
    first = await portal.visitor()
    assert (await first.start())[0] == 201
    for _ in range(5):  # double clicks and retries of an open chat cost nothing
        assert (await first.start())[0] == 200
    for _ in range(2):
        assert (await (await portal.visitor()).start())[0] == 201
    fourth = await portal.visitor()
    response = await fourth.post("/api/conversation", FORM)
    await error_of(response, 429, "rate_limited")
    assert len(portal.store.conversations) == 3
    assert (await first.start())[0] == 200  # still free while limited


async def test_rejected_forms_do_not_use_up_the_new_chat_budget(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(starts_per_minute=3)
    vera = await portal.visitor()
    for _ in range(3):
        status, _ = await vera.start(email="vera@example")
        assert status == 400
    status, body = await vera.start()
    assert status == 201, body


async def test_concurrent_duplicates_of_one_start_cost_one_token(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(starts_per_minute=3, latency=True)
    vera = await portal.visitor()
    await vera.session()
    results = await asyncio.gather(*(vera.start() for _ in range(10)))
    assert sorted(status for status, _ in results) == [200] * 9 + [201]


def request(remote: str | None, *xff: str) -> Any:
    return SimpleNamespace(
        remote=remote, headers=CIMultiDict(("X-Forwarded-For", value) for value in xff)
    )


@pytest.mark.parametrize(
    "proxies, req, expected",
    [
        ((), request("198.51.100.7", "203.0.113.1"), "198.51.100.7"),
        (("10.0.0.0/8",), request("198.51.100.7", "203.0.113.1"), "198.51.100.7"),
        (("10.0.0.0/8",), request("10.0.0.2", "203.0.113.1"), "203.0.113.1"),
        (("10.0.0.0/8",), request("10.0.0.2", "6.6.6.6, 203.0.113.1"), "203.0.113.1"),
        (("10.0.0.0/8",), request("10.0.0.2", "203.0.113.1, 10.0.0.9"), "203.0.113.1"),
        (("10.0.0.0/8",), request("10.0.0.2", "10.0.0.8, 10.0.0.9"), "10.0.0.2"),
        (("10.0.0.0/8",), request("10.0.0.2", "not-an-ip"), "10.0.0.2"),
        (("10.0.0.0/8",), request("10.0.0.2", "6.6.6.6, <script>"), "10.0.0.2"),
        (("10.0.0.0/8",), request("10.0.0.2"), "10.0.0.2"),
        (("10.0.0.0/8",), request("10.0.0.2", ""), "10.0.0.2"),
        (("10.0.0.0/8",), request(None, "203.0.113.1"), "unknown"),
        (("fd00::/8",), request("fd00::1", "2001:DB8::1"), "2001:db8::1"),
        (("fd00::/8",), request("2001:db8::5", "203.0.113.1"), "2001:db8::5"),
    ],
)
def test_forwarded_for_is_believed_only_from_trusted_proxies(
    proxies: tuple[str, ...], req: Any, expected: str
) -> None:
    assert ClientAddress.of(proxies)(req) == expected


def test_forged_forwarded_for_line_before_the_proxys_own_is_not_believed() -> None:
    client = ClientAddress.of(["10.0.0.0/8"])
    assert client(request("10.0.0.2", "6.6.6.6", "203.0.113.1")) == "203.0.113.1"


@pytest.mark.parametrize("trusted", [True, False])
async def test_rate_limit_buckets_follow_forwarded_for_only_behind_a_trusted_proxy(
    make_portal: PortalFactory, trusted: bool
) -> None:
    portal = await make_portal(
        starts_per_minute=3, trusted_proxies=("127.0.0.1/32",) if trusted else ()
    )
    statuses = []
    for i in range(4):
        visitor = await portal.visitor()
        response = await visitor.post(
            "/api/conversation", FORM, headers={"X-Forwarded-For": f"203.0.113.{i + 1}"}
        )
        statuses.append(response.status)
    assert statuses == ([201] * 4 if trusted else [201, 201, 201, 429])
    if trusted:  # but one forwarded address still has one bucket
        for _ in range(3):
            visitor = await portal.visitor()
            response = await visitor.post(
                "/api/conversation", FORM, headers={"X-Forwarded-For": "198.51.100.9"}
            )
            statuses.append(response.status)
        assert statuses[4:] == [201, 201, 201]
        visitor = await portal.visitor()
        response = await visitor.post(
            "/api/conversation", FORM, headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.9"}
        )
        await error_of(response, 429, "rate_limited")


def test_rate_limiter_refills_over_the_minute() -> None:
    limiter = RateLimiter(per_minute=3)
    assert [limiter.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", now=0.0)
    assert not limiter.allow("a", now=10.0)
    assert limiter.allow("a", now=20.0)
    assert not limiter.allow("a", now=20.0)


def test_rate_limiter_memory_bound_does_not_forgive_a_limited_key() -> None:
    limiter = RateLimiter(per_minute=1, max_keys=3)
    assert limiter.allow("attacker", now=0.0)
    assert not limiter.allow("attacker", now=0.0)
    for key in ("k1", "k2", "k3"):
        limiter.allow(key, now=0.0)
    assert not limiter.allow("attacker", now=0.0)


# -- websocket abuse -----------------------------------------------------------------------


@pytest.mark.parametrize("frame", ["oversized text", "binary", "not JSON", "deeply nested"])
async def test_hostile_websocket_frame_closes_only_that_socket(portal: Portal, frame: str) -> None:
    alice, _ = await visitor_in_chat(portal, name="Alice")
    bob, _ = await visitor_in_chat(portal, name="Bob")
    alice_ws, bob_ws = await alice.ws(), await bob.ws()
    await alice.backlog(alice_ws)
    await bob.backlog(bob_ws)

    # just under the limit is still a fine ping
    await alice_ws.send_str(json.dumps({"type": "ping", "pad": "x" * 8000}))
    assert await next_frame(alice_ws) == {"type": "pong"}
    if frame == "oversized text":
        await alice_ws.send_str(json.dumps({"type": "ping", "pad": "x" * 8200}))
    elif frame == "binary":
        await alice_ws.send_bytes(b'{"type": "ping"}')
    elif frame == "deeply nested":
        await alice_ws.send_str("[" * 8000)
    else:
        await alice_ws.send_str("<script>alert(1)</script>")
    assert await closed(alice_ws) in (1000, 1003, 1009)

    assert (await bob.say("still here"))[0] == 201
    assert (await next_frame(bob_ws))["message"]["body"] == "still here"
    await bob_ws.send_json({"type": "ping"})
    assert await next_frame(bob_ws) == {"type": "pong"}
    assert len(portal.hub) == 1

    # and Alice's page reconnects fine
    alice_ws = await alice.ws()
    backlog, _ = await alice.backlog(alice_ws)
    assert [m["body"] for m in backlog] == ["Hello"]


async def test_a_frame_trickled_in_and_stalled_closes_only_that_socket(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(heartbeat=0.5)
    alice, _ = await visitor_in_chat(portal, name="Alice")
    bob, _ = await visitor_in_chat(portal, name="Bob")
    alice_ws = await alice.client.ws_connect("/api/ws", headers={"Origin": ORIGIN}, autoping=False)
    bob_ws = await bob.ws()
    await alice.backlog(alice_ws)
    await bob.backlog(bob_ws)
    bobs_next = asyncio.create_task(next_frame(bob_ws))  # Bob's page reads (and answers pings)

    # the start of a masked text frame of 100 bytes, then nothing more: a slowloris page
    alice_ws._writer.transport.write(b"\x81\xe4\x00\x00\x00\x00" + b"{" * 10)
    began = time.monotonic()
    assert await closed(alice_ws, timeout=5) in (1000, 1001, 1006, 1011)
    assert time.monotonic() - began < 5
    assert len(portal.hub) == 1

    assert (await bob.say("still here"))[0] == 201
    assert (await bobs_next)["message"]["body"] == "still here"


class FakeSocket:
    def __init__(self, stuck: bool = False) -> None:
        self.sent: list[Any] = []
        self.close_codes: list[int] = []
        self.stuck = stuck  # a browser that stopped reading: the first send never finishes

    async def send_json(self, frame: Any) -> None:
        if self.stuck:
            await asyncio.Event().wait()
        self.sent.append(frame)

    async def close(self, *, code: int = 1000, message: bytes = b"") -> bool:
        self.close_codes.append(code)
        return True


def event(seq: int) -> MessageEvent:
    return MessageEvent(
        Message(
            id=MessageId(f"m{seq}"),
            conversation_id=ConversationId("c"),
            seq=seq,
            sender=Sender.ADVISOR,
            author="Ana",
            body=f"line {seq}",
            ts=1_700_000_000.0 + seq,
        )
    )


async def test_socket_that_does_not_keep_up_is_closed_with_1013_and_others_are_unaffected() -> (
    None
):
    hub = VisitorHub()
    slow_ws, fast_ws, other_ws = FakeSocket(stuck=True), FakeSocket(), FakeSocket()
    slow, fast, other = Subscriber(slow_ws), Subscriber(fast_ws), Subscriber(other_ws)  # type: ignore[arg-type]
    hub.subscribe(ConversationId("c"), slow)  # its first send never finishes: it never reads
    hub.subscribe(ConversationId("c"), fast)
    hub.subscribe(ConversationId("other"), other)
    for subscriber in (slow, fast, other):
        subscriber.replay([])  # no backlog: live from here
    try:
        total = QUEUE_SIZE + 44
        for seq in range(1, total + 1):
            await hub.publish(ConversationId("c"), event(seq))
            await hub.publish(ConversationId("other"), event(seq))
            await asyncio.sleep(0)  # events arrive one request at a time
        for _ in range(3):
            await asyncio.sleep(0)
        assert slow_ws.close_codes and set(slow_ws.close_codes) == {CLOSE_TOO_SLOW}
        assert slow_ws.sent == []
        assert [f["message"]["seq"] for f in fast_ws.sent] == list(range(1, total + 1))
        assert [f["message"]["seq"] for f in other_ws.sent] == list(range(1, total + 1))
        assert fast_ws.close_codes == [] and other_ws.close_codes == []
    finally:
        for subscriber in (slow, fast, other):
            subscriber.stop()
