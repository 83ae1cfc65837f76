"""The visitor API against its own OpenAPI document, with Schemathesis.

The real portal app runs on a real loopback port (an aiohttp ``AppRunner`` in a thread with its
own event loop; Schemathesis speaks ASGI and WSGI, not aiohttp) on the core's in-memory fakes.
Schemathesis reads ``/api/openapi.json`` from it, generates requests for every operation, valid
and invalid ones, and checks each answer: never a 5xx, only documented status codes, the
documented content type, a body that matches its schema, a 405 with Allow for an undeclared
method, and the document and the server agreeing on the input: a request the document calls
valid is accepted, one it calls invalid is refused (so a limit the server adds or drops
without the document fails here). The project's own stricter contract (no undocumented
properties, timezone-aware timestamps) is checked as well, and the texts a visitor types are
also drawn from all of Unicode against the document's patterns.

POSTs carry the session cookie and the CSRF token from ``GET /api/session``, as the page does,
so they reach the handlers instead of stopping at the CSRF check.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from typing import Any, Iterator

import jsonschema_rs
import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from bridge.desk import DeskSettings, build_desk
from bridge.model import RoutingSettings
from bridge.validation import MAX_EMAIL, MAX_MESSAGE, MAX_NAME
from tests.fakes import FakeClock, FakeMatrixGateway, MemoryStore
from web_portal.app import create_app
from web_portal.hub import VisitorHub
from web_portal.inputs import MAX_CLIENT_ID
from web_portal.openapi import openapi_document

from .conftest import CONTRACT, TOPICS, json_schema, make_settings

CSRF_HEADER = "X-CSRF-Token"
FORM_OK = {"name": "Vera", "topic": "general", "message": "Hello"}
SESSION_COOKIE = "sb_session"


def documented_contract(ctx: Any, response: Any, case: Any) -> bool | None:
    """The project's stricter reading of the same document (tests/web_portal/conftest.py)."""
    if case.method.lower() not in DOCUMENT["paths"].get(case.path, {}):
        return None  # a method the path does not have: unsupported_method judges those
    if response.status_code == 204 or not response.content:
        body = None
    else:
        body = json.loads(response.content)
    CONTRACT.response(case.path, case.method, response.status_code, body)
    return None


@functools.lru_cache
def request_validator(path: str, method: str) -> jsonschema_rs.Validator:
    """The document's own verdict on a request body, ``\\p{C}`` read as Unicode defines it."""
    body = DOCUMENT["paths"][path][method.lower()]["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    root = {
        **json_schema(schema, closed=False),
        "components": json_schema(DOCUMENT["components"], closed=False),
    }
    return jsonschema_rs.Draft4Validator(root)


def documented_input_accepted(ctx: Any, response: Any, case: Any) -> bool | None:
    """positive_data_acceptance, for the bodies the document really admits.

    Schemathesis 4.32 reads a pattern's ``\\p{C}`` as the C0 and C1 controls only, when it
    draws "positive" strings and when it validates them: a name made only of unassigned or
    private-use characters counts as valid for it, though the document (and the server)
    refuse it. The document, read by a validator that knows Unicode, has the last word.

    A start naming a call sign is valid only while someone behind that call sign could answer
    (the document says so, and no schema can say which): its 400 is not judged here, and
    tests/web_portal/test_portal_call_signs.py proves both outcomes."""
    operation = DOCUMENT["paths"].get(case.path, {}).get(case.method.lower(), {})
    if "requestBody" in operation and case.body is not NOT_SET:
        validator = request_validator(case.path, case.method)
        if isinstance(case.body, bytes) or not validator.is_valid(case.body):
            return None
        if isinstance(case.body, dict) and case.body.get("call_sign"):
            return None
    return positive_data_acceptance(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    documented_contract,
    # the document and the server agree on what is valid, both ways
    documented_input_accepted,
    negative_data_rejection,
    unsupported_method,  # 405 and an Allow header for a method the path does not have
]


class LivePortal:
    """The portal app on 127.0.0.1:<free port>, served by its own loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    def __enter__(self) -> LivePortal:
        self.thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.runner is not None:
            asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
            asyncio.run_coroutine_threadsafe(self._stop_dispatcher(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _stop_dispatcher(self) -> None:
        self.dispatcher.cancel()
        await asyncio.gather(self.dispatcher, return_exceptions=True)

    async def _start(self) -> str:
        # built on the serving loop, as bootstrap.py builds them on the appservice's
        store, gateway, hub, clock = MemoryStore(), FakeMatrixGateway(), VisitorHub(), FakeClock()
        desk = build_desk(
            store, gateway, hub, clock, DeskSettings(TOPICS, RoutingSettings(3, 60.0))
        )
        # an advisor on duty, so a started chat moves on to "inviting" as it does in production
        await desk.advisors.add("@ana:test", display_name="Ana")
        await desk.advisors.set_available("@ana:test", True)
        self.dispatcher = asyncio.ensure_future(desk.outbox.run_forever())
        # the rate limits are tested elsewhere; here they would only turn calls into 429s
        unlimited = make_settings(
            starts_per_minute=100_000,
            messages_per_minute=100_000,
            message_burst=100_000,
            searches_per_minute=100_000,
            search_burst=100_000,
        )
        app = create_app(desk.visitors, hub, unlimited)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        return f"http://{host}:{port}"


class Browser:
    """One visitor's requests session: its cookie jar and the CSRF token of its session."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        response = self.session.get(f"{base_url}/api/session", timeout=5)
        response.raise_for_status()
        self.csrf = response.json()["csrf_token"]
        assert self.session.cookies.get(SESSION_COOKIE)

    def send(self, case: Any) -> Any:
        """Call the operation as this visitor's page would, and check the answer."""
        # the document declares the cookie and the header as security schemes: Schemathesis may
        # generate values for them; the visitor's real ones replace those, unless the case is
        # about a missing or broken one (a negative case), which is then sent as generated
        meta = case.meta
        if meta is not None and meta.is_negative_at(ParameterLocation.COOKIE):
            response = case.call(base_url=self.base_url, timeout=5)  # without this visitor
        else:
            if meta is None or not meta.is_negative_at(ParameterLocation.HEADER):
                case.headers = {**(case.headers or {}), CSRF_HEADER: self.csrf}
            if case.cookies:
                case.cookies.pop(SESSION_COOKIE, None)
            response = case.call(base_url=self.base_url, session=self.session, timeout=5)
        case.validate_response(response, checks=CHECKS)
        return response


@pytest.fixture(scope="module")
def live_portal() -> Iterator[LivePortal]:
    with LivePortal() as portal:
        yield portal


@pytest.fixture(scope="module")
def browser(live_portal: LivePortal) -> Browser:
    """One visitor for the whole module: their chat is started, written in, ended, restarted."""
    return Browser(live_portal.base_url)


# The document the app serves (test_the_served_document_is_the_one_tested proves it is this
# one). Loaded at import rather than from the live server: the lazy loader,
# schemathesis.pytest.from_fixture, fails on pytest 9 (it writes `request.node._nodeid`).
DOCUMENT = openapi_document(make_settings())
schema = schemathesis.openapi.from_dict(DOCUMENT)


@schema.parametrize()
@settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_operation_answers_as_documented(case: Any, browser: Browser) -> None:
    browser.send(case)


def test_the_served_document_is_the_one_tested(live_portal: LivePortal) -> None:
    response = requests.get(f"{live_portal.base_url}/api/openapi.json", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    document = response.json()
    assert document == DOCUMENT
    assert document["openapi"].startswith("3.")
    operations = {(p, m) for p, item in document["paths"].items() for m in item}
    assert operations == {
        ("/api/session", "get"),
        ("/api/conversation", "get"),
        ("/api/conversation", "post"),
        ("/api/conversation/messages", "post"),
        ("/api/conversation/typing", "post"),
        ("/api/conversation/read", "post"),
        ("/api/conversation/end", "post"),
        ("/api/call-signs", "get"),
    }


def test_any_sequence_of_calls_answers_as_documented(live_portal: LivePortal) -> None:
    """A visitor's calls in any order (start, write, end, start again...), each answered as
    documented; the links-driven stateful mode needs OpenAPI links, which the document has
    none of, so the sequence is drawn here."""

    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    any_call = st.one_of([operation.as_strategy() for operation in operations])

    @given(st.lists(any_call, min_size=1, max_size=8))
    @settings(
        max_examples=60,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(cases: list[Any]) -> None:
        browser = Browser(live_portal.base_url)  # a new visitor for each sequence
        for case in cases:
            browser.send(case)

    run()


# Any character a visitor could send: every assigned one (in Python's Unicode database, that of
# the server), those the core removes or trims, and code points unassigned in every version.
# Characters assigned after the server's Unicode version are left out: a newer reader of the
# document rightly calls them visible, the server cannot know them yet.
JUNK = st.sampled_from(" \t\n\r\x00\x1c\x7f\x85\xa0\xad\u200b\u2028\u3000\ufeff\u0378\uffff")
CHAR = st.characters(exclude_categories=("Cs", "Cn")) | JUNK | st.sampled_from("@.<a")
TEXT = st.text(CHAR, max_size=20)


def near(limit: int) -> st.SearchStrategy[str]:
    """Texts around a length limit, some only over it by what the core would trim."""
    return st.builds(
        lambda n, c, pad: c * n + pad,
        st.integers(limit - 3, limit + 1),
        CHAR,
        st.text(JUNK, max_size=3),
    )


# emails: mostly address-shaped, with what the core removes (anywhere) or trims (at the ends)
REMOVED = st.sampled_from("\t\n\x00\x1c\x85\xad\u200b\ufeff\u0378")
TRIMMED = st.sampled_from(" \xa0\u2028\u3000") | REMOVED
ADDRESS = st.sampled_from("ab0-_.é李") | st.characters(exclude_categories=("Cs", "Cn"))
PART = st.text(
    st.one_of(ADDRESS, ADDRESS, ADDRESS, REMOVED, st.sampled_from('<"` \xa0@')),
    min_size=1,
    max_size=5,
)
EMAIL = st.builds(
    lambda *parts: "".join(parts),
    st.text(TRIMMED, max_size=2),
    PART,
    st.sampled_from(["@", "@", "@", "", "@@"]),
    PART,
    st.sampled_from([".", ".", ".", ""]),
    PART,
    st.text(TRIMMED, max_size=2),
)


def test_the_document_and_the_server_agree_on_every_text(live_portal: LivePortal) -> None:
    """Whatever text a visitor sends as their name, email, message or message id, the portal
    accepts it exactly when the document says it is valid (Schemathesis draws such texts from
    an approximation of the patterns; this draws them from all of Unicode)."""
    start = request_validator("/api/conversation", "post")
    send = request_validator("/api/conversation/messages", "post")
    browser = Browser(live_portal.base_url)
    post = functools.partial(browser.session.post, headers={CSRF_HEADER: browser.csrf}, timeout=5)
    opened = post(f"{live_portal.base_url}/api/conversation", json=FORM_OK)
    assert opened.status_code == 201, opened.text

    @given(
        name=TEXT | near(MAX_NAME),
        email=EMAIL | TEXT | near(MAX_EMAIL) | st.none(),
        message=TEXT | near(MAX_MESSAGE),
        client_id=TEXT | near(MAX_CLIENT_ID),
    )
    @settings(
        max_examples=300,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(name: str, email: str | None, message: str, client_id: str) -> None:
        for field, value in (("name", name), ("email", email), ("message", message)):
            form = {**FORM_OK, field: value}  # one field at a time: no other one hides it
            response = post(f"{live_portal.base_url}/api/conversation", json=form)
            assert response.status_code in (200, 400), response.text
            assert (response.status_code == 200) == start.is_valid(form), response.text

        body = {"client_id": client_id, "body": message}
        response = post(f"{live_portal.base_url}/api/conversation/messages", json=body)
        assert response.status_code in (201, 400), response.text
        assert (response.status_code == 201) == send.is_valid(body), response.text

    run()


def test_an_undeclared_method_is_answered_with_allow(live_portal: LivePortal) -> None:
    response = requests.put(f"{live_portal.base_url}/api/conversation", timeout=5)
    assert response.status_code == 405
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.headers.get("Allow", "").replace(" ", "").split(",")) >= {"GET", "POST"}
