"""The visitor API against its own OpenAPI document, with Schemathesis.

The real portal app runs on a real loopback port (an aiohttp ``AppRunner`` in a thread with its
own event loop; Schemathesis speaks ASGI and WSGI, not aiohttp) on the core's in-memory fakes.
Schemathesis reads ``/api/openapi.json`` from it, generates requests for every operation, valid
and invalid ones, and checks each answer: never a 5xx, only documented status codes, the
documented content type, a body that matches its schema. The project's own stricter contract
(no undocumented properties, timezone-aware timestamps) is checked as well.

POSTs carry the session cookie and the CSRF token from ``GET /api/session``, as the page does,
so they reach the handlers instead of stopping at the CSRF check.
"""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from bridge.model import RoutingSettings
from bridge.services.advisors import AdvisorService
from bridge.services.conversations import ConversationService
from bridge.services.presenter import Presenter
from bridge.services.queue import QueueService
from tests.fakes import FakeClock, FakeMatrixGateway, MemoryStore
from web_portal.app import create_app
from web_portal.hub import VisitorHub
from web_portal.openapi import openapi_document

from .conftest import CONTRACT, TOPICS, make_settings

CSRF_HEADER = "X-CSRF-Token"
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


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    documented_contract,
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
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> str:
        # built on the serving loop, as bootstrap.py builds them on the appservice's
        store, gateway, hub, clock = MemoryStore(), FakeMatrixGateway(), VisitorHub(), FakeClock()
        presenter = Presenter(store, hub, TOPICS)
        queue = QueueService(store, gateway, presenter, clock, RoutingSettings(3, 60.0))
        conversations = ConversationService(store, gateway, hub, presenter, queue, clock, TOPICS)
        advisors = AdvisorService(store, queue)
        # an advisor on duty, so a started chat moves on to "inviting" as it does in production
        await advisors.add("@ana:test", display_name="Ana")
        await advisors.set_available("@ana:test", True)
        # the rate limit is tested elsewhere; here it would only turn starts into 429s
        app = create_app(conversations, hub, make_settings(starts_per_minute=100_000))
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
        # generate values for them; the visitor's real ones replace those
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


def test_an_undeclared_method_is_answered_with_allow(live_portal: LivePortal) -> None:
    response = requests.put(f"{live_portal.base_url}/api/conversation", timeout=5)
    assert response.status_code == 405
    assert response.headers["Content-Type"].startswith("application/json")
    assert set(response.headers.get("Allow", "").replace(" ", "").split(",")) >= {"GET", "POST"}
