"""The real portal app over loopback HTTP and websockets, on the core's in-memory fakes.

The core is wired exactly as in ``tests/bridge/conftest.py``, except that the visitor channel is
a real :class:`web_portal.hub.VisitorHub`, so what the core publishes reaches real websockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appservice.db import SqlStore, close_database, open_database
from bridge.desk import Desk, DeskSettings, build_desk
from bridge.model import AdvisorMxid, ConversationId, EventId, RoutingSettings
from tests.fakes import FakeClock, FakeMatrixGateway, MemoryStore, Settled
from tests.pg import fresh_schema_url
from web_portal.app import PortalSettings, create_app
from web_portal.hub import VisitorHub
from web_portal.openapi import openapi_document

TOPICS = {"general": "General question", "billing": "Billing"}
PUBLIC_URL = "http://portal.test"
ORIGIN = "http://portal.test"
FOREIGN_ORIGIN = "https://evil.example"
SECRET = "portal-test-secret-not-for-production"
FORM = {"name": "Vera", "email": "vera@example.org", "topic": "general", "message": "Hello"}
FRAME_TIMEOUT = 2.0


def make_settings(**overrides: Any) -> PortalSettings:
    settings = PortalSettings(
        public_url=PUBLIC_URL,
        allowed_origins=(),
        org_name="Acme",
        topics=TOPICS,
        trusted_proxies=(),
        starts_per_minute=100,
        secret=SECRET,
    )
    return dataclasses.replace(settings, **overrides)


class LatentStore:
    """A MemoryStore whose every call takes a moment, as a round trip to a database does.

    MemoryStore never suspends, so with it concurrent requests run one after another and a race
    between them can never show; this proxy lets them interleave the way they do on SQL.
    """

    def __init__(self, inner: MemoryStore, delay: float = 0.002) -> None:
        self._inner = inner
        self._delay = delay

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def latent(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self._delay)
            return await attr(*args, **kwargs)

        return latent


# -- the OpenAPI document as a checker ------------------------------------------------------


def json_schema(node: Any, closed: bool = True) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable``, and (``closed``) no undocumented
    properties, as a response must be; a request may carry more."""
    if isinstance(node, list):
        return [json_schema(n, closed) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: json_schema(v, closed) for k, v in node.items() if k != "nullable"}
    if closed and "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.tzinfo is not None


_FORMATS = jsonschema.FormatChecker(formats=())
_FORMATS.checks("date-time", raises=ValueError)(_date_time)


class Contract:
    """Validates responses against the component and response schemas of an OpenAPI document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self._components = json_schema(document["components"])

    def _validate(self, schema: dict[str, Any], value: Any) -> None:
        root = {**json_schema(schema), "components": self._components}
        jsonschema.Draft202012Validator(root, format_checker=_FORMATS).validate(value)

    def schema(self, name: str, value: Any) -> None:
        self._validate({"$ref": f"#/components/schemas/{name}"}, value)

    def response(self, path: str, method: str, status: int, body: Any) -> None:
        responses = self.document["paths"][path][method.lower()]["responses"]
        assert str(status) in responses, f"{method} {path} answered {status}, not documented"
        content = responses[str(status)].get("content")
        if content is None:
            assert body is None, f"{method} {path} {status} documents no body"
            return
        self._validate(content["application/json"]["schema"], body)


CONTRACT = Contract(openapi_document(make_settings()))


@pytest.fixture(scope="session")
def contract() -> Contract:
    return CONTRACT


async def error_of(response: aiohttp.ClientResponse, status: int, code: str | None = None) -> Any:
    """The documented JSON error of a response that must have ``status`` (and ``code``)."""
    text = await response.text()
    assert response.status == status, f"{response.status}: {text[:300]}"
    assert response.content_type == "application/json", response.content_type
    body = json.loads(text)
    CONTRACT.schema("Error", body)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


# -- visitors and the portal ---------------------------------------------------------------


async def next_frame(ws: aiohttp.ClientWebSocketResponse, timeout: float = FRAME_TIMEOUT) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type is aiohttp.WSMsgType.TEXT, f"expected a text frame, got {message!r}"
    return json.loads(message.data)


async def closed(ws: aiohttp.ClientWebSocketResponse, timeout: float = FRAME_TIMEOUT) -> int:
    """Read until the server closes the socket; its close code (frames before are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.receive()
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                await ws.close()
                assert ws.close_code is not None
                return ws.close_code


@dataclass
class Visitor:
    """One browser: its own cookie jar, so its own session."""

    client: TestClient
    csrf: str | None = None
    sockets: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)

    @property
    def cookie(self) -> str | None:
        for cookie in self.client.session.cookie_jar:
            if cookie.key == "sb_session":
                return cookie.value
        return None

    async def session(self) -> str:
        response = await self.client.get("/api/session")
        assert response.status == 200
        self.csrf = (await response.json())["csrf_token"]
        return self.csrf

    async def post(
        self,
        path: str,
        body: Any = None,
        *,
        data: bytes | str | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = True,
    ) -> aiohttp.ClientResponse:
        if csrf and self.csrf is None:
            await self.session()
        sent = {"Content-Type": "application/json"}
        if csrf:
            sent["X-CSRF-Token"] = self.csrf or ""
        sent.update(headers or {})
        if data is None:
            data = json.dumps(body) if body is not None else b""
        return await self.client.post(path, data=data, headers=sent)

    async def start(self, **changes: Any) -> tuple[int, Any]:
        response = await self.post("/api/conversation", {**FORM, **changes})
        return response.status, await response.json()

    async def conversation(self, **params: str) -> Any:
        response = await self.client.get("/api/conversation", params=params)
        assert response.status == 200
        return await response.json()

    async def say(self, text: str, client_id: str | None = None) -> tuple[int, Any]:
        body = {"client_id": client_id or f"c-{text}", "body": text}
        response = await self.post("/api/conversation/messages", body)
        return response.status, await response.json()

    async def ws(
        self, since: int | str | None = None, *, origin: str | None = ORIGIN, query: str = ""
    ) -> aiohttp.ClientWebSocketResponse:
        url = "/api/ws" + (f"?since={since}" if since is not None else "")
        if query:
            url += ("&" if "?" in url else "?") + query
        headers = {"Origin": origin} if origin is not None else {}
        ws = await self.client.ws_connect(url, headers=headers)
        self.sockets.append(ws)
        return ws

    async def backlog(self, ws: aiohttp.ClientWebSocketResponse) -> tuple[list[Any], Any]:
        """The messages a fresh socket replays, and the status frame that ends them."""
        messages = []
        while (frame := await next_frame(ws))["type"] == "message":
            messages.append(frame["message"])
        assert frame["type"] == "status", frame
        return messages, frame["conversation"]


@dataclass
class Portal:
    store: MemoryStore
    gateway: FakeMatrixGateway
    hub: VisitorHub
    clock: FakeClock
    desk: Desk
    settings: PortalSettings
    server: TestServer
    _client: Callable[..., Awaitable[TestClient]]
    visitors: list[Visitor] = field(default_factory=list)
    database: str | None = None  # the URL of its SqlStore, if it has one

    def __post_init__(self) -> None:
        outbox = self.desk.outbox
        self.conversations = Settled(self.store, outbox, self.desk.visitors, self.desk.rooms)
        self.advisors = Settled(self.store, outbox, self.desk.advisors)

    async def settle(self) -> None:
        """What the requests so far set in motion has run (the outbox is drained)."""
        await self.desk.outbox.drain()

    async def visitor(self) -> Visitor:
        visitor = Visitor(await self._client(self.server))
        self.visitors.append(visitor)
        return visitor

    def snapshot(self) -> tuple[Any, ...]:
        """Everything a request could have stored or sent, to prove that one did nothing."""
        return (
            dict(self.store.visitors),
            dict(self.store.conversations),
            {cid: list(log) for cid, log in self.store.messages_.items()},
            list(self.gateway.sent),
        )

    async def advisor_takes(self, conversation_id: str, mxid: str = "@ana:test") -> None:
        """An advisor says they are available, is invited to the room and joins it."""
        await self.advisors.add(mxid, display_name="Ana")
        await self.advisors.set_available(mxid, True)
        room = self.store.conversations[ConversationId(conversation_id)].room_id
        assert room is not None
        await self.conversations.advisor_joined(room, AdvisorMxid(mxid))

    async def advisor_says(self, conversation_id: str, text: str, mxid: str = "@ana:test") -> None:
        room = self.store.conversations[ConversationId(conversation_id)].room_id
        assert room is not None
        self.clock.advance(1)
        event_id = EventId(f"$ev-{len(self.gateway.sent)}-{text}")
        await self.conversations.advisor_message(
            room, AdvisorMxid(mxid), "Ana", event_id, text, self.clock.now()
        )


PortalFactory = Callable[..., Awaitable[Portal]]


@pytest.fixture
async def make_portal(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Any
) -> AsyncIterator[PortalFactory]:
    """``await make_portal(starts_per_minute=3, ...)``: settings overrides, one server.

    ``latency=True`` makes every store call take a moment; ``sqlite=True`` puts the portal on
    the production SqlStore (a temporary SQLite file) instead of MemoryStore, ``postgres=True``
    on a fresh PostgreSQL schema, or ``database=`` on a URL given (shared by two portals).
    """
    portals: list[Portal] = []
    databases: list[Any] = []
    schemas = contextlib.AsyncExitStack()

    async def make(
        *,
        latency: bool = False,
        sqlite: bool = False,
        postgres: bool = False,
        database: str | None = None,
        port: int | None = None,
        **overrides: Any,
    ) -> Portal:
        settings = make_settings(**overrides)
        memory: Any = MemoryStore()
        if sqlite:
            database = f"sqlite:///{tmp_path / f'portal{len(databases)}.db'}"
        elif postgres:
            database = await schemas.enter_async_context(fresh_schema_url())
        if database is not None:
            databases.append(await open_database(database))
            memory = SqlStore(databases[-1])
        gateway, hub, clock = FakeMatrixGateway(), VisitorHub(), FakeClock()
        store: Any = LatentStore(memory) if latency else memory
        desk = build_desk(
            store, gateway, hub, clock, DeskSettings(TOPICS, RoutingSettings(3, 60.0))
        )
        app = create_app(desk.visitors, hub, settings, monotonic=clock.monotonic)
        server = await aiohttp_server(app, port=port)
        portal = Portal(
            memory, gateway, hub, clock, desk, settings, server, aiohttp_client, database=database
        )
        portals.append(portal)
        return portal

    yield make

    for portal in portals:
        for visitor in portal.visitors:
            for ws in visitor.sockets:
                await ws.close()
    for database in databases:
        await close_database(database)
    await schemas.aclose()


@pytest.fixture
async def portal(make_portal: PortalFactory) -> Portal:
    return await make_portal()
