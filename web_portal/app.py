"""The visitor portal: ``create_app(conversations, hub, settings)`` builds the aiohttp app."""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import aiohttp_jinja2
import jinja2
from aiohttp import WSMsgType, hdrs, web
from aiohttp.typedefs import Handler, LooseHeaders

from bridge.errors import (
    InvalidInput,
    NoOpenConversation,
    NotAllowed,
    RateLimited,
    SwitchboardError,
)
from bridge.model import ConversationId
from bridge.services.visitors import VisitorService

from . import inputs
from .assets import Assets
from .hub import Subscriber, VisitorHub
from .openapi import openapi_document
from .reports import NoReports, PortalReports
from .security import ClientAddress, Origins, RateLimiter, Sessions, TypingGate, origin_of
from .serialize import call_sign_json, message_json, view_json

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024
MAX_WS_FRAME = 8 * 1024
CLOSE_NO_SESSION = 4401
CLOSE_INTERNAL = 1011


@dataclass(frozen=True)
class PortalSettings:
    public_url: str
    allowed_origins: tuple[str, ...]
    org_name: str
    topics: Mapping[str, str]
    trusted_proxies: tuple[str, ...]
    starts_per_minute: int
    # one secret, or several while rotating: the first signs, every one verifies
    secret: str | tuple[str, ...]
    # a page that stops answering pings (gone, or stalled mid-frame) is closed within about
    # 1.5× this; its socket is freed and it reconnects with `since` when it comes back
    heartbeat: float = 30.0
    # per session, so one visitor cannot flood an advisor's room (see example-config.yaml)
    messages_per_minute: int = 30
    message_burst: int = 10
    typing_per_minute: int = 30
    typing_burst: int = 10
    # per client address: the search box asks as the visitor types (debounced)
    searches_per_minute: int = 120
    search_burst: int = 40


SERVER_SENT_AWAY = (1001, 1012)
CONVERSATIONS = web.AppKey("conversations", VisitorService)
HUB = web.AppKey("hub", VisitorHub)
SETTINGS = web.AppKey("settings", PortalSettings)
SESSIONS = web.AppKey("sessions", Sessions)
ORIGINS = web.AppKey("origins", Origins)
CLIENT = web.AppKey("client_address", ClientAddress)
START_LIMIT = web.AppKey("start_limit", RateLimiter)
MESSAGE_LIMIT = web.AppKey("message_limit", RateLimiter)
TYPING_GATE = web.AppKey("typing_gate", TypingGate)
SEARCH_LIMIT = web.AppKey("search_limit", RateLimiter)
ASSETS = web.AppKey("assets", Assets)
REPORTS = web.AppKey[PortalReports]("reports")
#: Why the desk cannot serve yet (database, homeserver…), or None once it can
NOT_READY = web.AppKey[Callable[[], "str | None"]]("not_ready")


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    ref: str | None = None,
    headers: LooseHeaders | None = None,
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message, "ref": ref, "field": field}},
        status=status,
        headers=headers,
    )


_BODY_HEADERS = frozenset(
    h.lower() for h in (hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH, hdrs.CONTENT_ENCODING)
)


def _kept_headers(e: web.HTTPException) -> list[tuple[str, str]]:
    """An HTTP error's own headers (Allow on a 405...), not those of its plain-text body."""
    return [(k, v) for k, v in e.headers.items() if k.lower() not in _BODY_HEADERS]


def _seconds(wait: float) -> str:
    return str(max(1, math.ceil(wait - 1e-6)))


async def _answered(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler's response, or the error as a visitor sees it: a short message and a
    reference; tracebacks stay in the log."""
    try:
        return await handler(request)
    except RateLimited as e:
        # whole seconds, rounded up (a hair over is rounding noise, not a second more)
        wait = {} if e.retry_after is None else {"Retry-After": _seconds(e.retry_after)}
        return error_response(e.status, e.code, e.message, field=e.field, headers=wait)
    except SwitchboardError as e:
        return error_response(e.status, e.code, e.message, field=e.field)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        if not request.path.startswith("/api/"):
            return web.Response(
                status=e.status, text=f"{e.status} {e.reason}", headers=_kept_headers(e)
            )
        return error_response(e.status, "http_error", e.reason, headers=_kept_headers(e))
    except Exception:
        ref = secrets.token_hex(4)
        log.exception("request %s %s failed [ref %s]", request.method, request.path, ref)
        return error_response(
            503, "internal", "Something went wrong on our side. Please try again.", ref=ref
        )


@web.middleware
def errors_middleware(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Every route's errors, worded by :func:`_answered`.

    A plain function rather than a coroutine, so that it can hand the websocket route's
    coroutine to aiohttp as it is: that route words its own errors (they all happen before the
    upgrade), and no frame of this middleware then waits under each of the thousands of
    sockets that stay open for hours."""
    if request.match_info.handler is websocket:
        return handler(request)
    return _answered(request, handler)


async def _starting() -> web.Response:
    return error_response(
        503,
        "starting",
        "The help desk is starting. Please try again in a moment.",
        headers={"Retry-After": "1"},
    )


@web.middleware
def starting_gate(request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
    """Until the desk is ready (its database open, its bot registered) the API answers 503,
    which the page retries; the page, its files and the health checks are served meanwhile.
    A plain function for the websocket's sake, as :func:`errors_middleware`."""
    if not request.path.startswith("/api/") or request.app[NOT_READY]() is None:
        return handler(request)
    return _starting()


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response (pages, API, errors, files) as it is prepared: a signal rather than
    a middleware, for the same reason as above. Not on a websocket's 101, which is no
    document, and whose headers each idle socket would keep."""
    if isinstance(response, web.WebSocketResponse):
        return
    settings = request.app[SETTINGS]
    ancestors = " ".join(["'self'", *settings.allowed_origins])
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' {ws_origin(settings.public_url)}; frame-ancestors {ancestors}; "
        "base-uri 'none'; form-action 'self'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")


def ws_origin(public_url: str) -> str:
    origin = origin_of(public_url)
    return "wss" + origin[5:] if origin.startswith("https") else "ws" + origin[4:]


# -- helpers -------------------------------------------------------------------------------


def _session(request: web.Request) -> str | None:
    return request.app[SESSIONS].token(request)


def _state_changing(request: web.Request) -> str:
    """The session token of a POST that passed the CSRF and origin checks."""
    sessions = request.app[SESSIONS]
    token = sessions.token(request)
    if token is None:
        raise NotAllowed("Your session has expired. Reload the page.")
    if not request.app[ORIGINS].ok(request, required=False) or not sessions.csrf_ok(
        request, token
    ):
        raise NotAllowed("This request was not made by the chat page. Reload the page.")
    return sessions.session_hash(token)


async def _json_body(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise InvalidInput("Send JSON (Content-Type: application/json).")
    try:
        return json.loads(await request.read())
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidInput("The request body is not valid JSON.") from None


def _since(request: web.Request) -> int:
    return inputs.since(request.query)


# -- views ---------------------------------------------------------------------------------


async def _offers_call_signs(request: web.Request) -> bool:
    """Whether the form shows the call-sign search (a desk without call signs would show a box
    that never finds anything). Not before the desk is ready, and never at the cost of the
    page: a failure to tell hides the box."""
    if request.app[NOT_READY]() is not None:
        return False
    try:
        return await request.app[CONVERSATIONS].offers_call_signs()
    except Exception:
        log.warning("could not tell whether the desk has call signs", exc_info=True)
        return False


async def portal_page(request: web.Request) -> web.Response:
    settings, sessions = request.app[SETTINGS], request.app[SESSIONS]
    token = sessions.token(request)
    context = {
        "org_name": settings.org_name,
        "topics": [{"id": k, "label": v} for k, v in settings.topics.items()],
        "asset": request.app[ASSETS].url,
        "call_signs": await _offers_call_signs(request),
    }
    response = aiohttp_jinja2.render_template("portal.html", request, context)
    if token is None:
        token = sessions.issue(response)
    response.text = aiohttp_jinja2.render_string(
        "portal.html", request, {**context, "csrf_token": sessions.csrf_token(token)}
    )
    return response


async def session(request: web.Request) -> web.Response:
    """For API clients: make sure a session exists and return its CSRF token."""
    sessions = request.app[SESSIONS]
    token = sessions.token(request)
    response = web.json_response({})
    if token is None:
        token = sessions.issue(response)
    response.text = json.dumps({"csrf_token": sessions.csrf_token(token)})
    return response


async def get_conversation(request: web.Request) -> web.Response:
    conversations = request.app[CONVERSATIONS]
    since = _since(request)
    token = _session(request)
    current = (
        await conversations.current(request.app[SESSIONS].session_hash(token)) if token else None
    )
    if current is None:
        return web.json_response({"conversation": None, "messages": []})
    history = await conversations.history(current.id, since)
    # with the messages up to `since` that were edited or removed: the page may show them older
    changed = await conversations.changes(current.id, since)
    return web.json_response(
        {
            "conversation": view_json(await conversations.view(current)),
            "messages": [message_json(m) for m in changed + history],
        }
    )


async def start_conversation(request: web.Request) -> web.Response:
    session_hash = _state_changing(request)
    form = await _json_body(request)
    if isinstance(form, dict):
        inputs.within(form, inputs.START_LIMITS)
    conversations = request.app[CONVERSATIONS]
    address = request.app[CLIENT](request)
    limiter = request.app[START_LIMIT]
    # only a conversation really being created costs a token: a retried start is free
    try:
        conversation, created = await conversations.start(
            session_hash, form, admit=lambda: limiter.wait(address)
        )
    except RateLimited:
        request.app[REPORTS].refused("start")
        raise
    if created:
        request.app[REPORTS].started()
    history = await conversations.history(conversation.id)
    return web.json_response(
        {
            "conversation": view_json(await conversations.view(conversation)),
            "messages": [message_json(m) for m in history],
        },
        status=201 if created else 200,
    )


async def find_call_signs(request: web.Request) -> web.Response:
    """The search box: the call signs matching ``q`` that someone could answer now. No
    session needed (nothing is stored); limited per client address."""
    query = inputs.search(request.query)
    address = request.app[CLIENT](request)
    limiter = request.app[SEARCH_LIMIT]
    try:
        found = await request.app[CONVERSATIONS].find_call_signs(
            query, admit=lambda: limiter.wait(address)
        )
    except RateLimited:
        request.app[REPORTS].refused("search")
        raise
    return web.json_response({"call_signs": [call_sign_json(c) for c in found]})


async def post_message(request: web.Request) -> web.Response:
    session_hash = _state_changing(request)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise InvalidInput("Expected a JSON object with client_id and body.")
    client_id = inputs.client_id(body)
    inputs.within(body, inputs.MESSAGE_LIMITS)
    limiter = request.app[MESSAGE_LIMIT]
    # only a message really being stored costs a token: a retry of a stored one is answered
    try:
        message = await request.app[CONVERSATIONS].visitor_message(
            session_hash, client_id, body.get("body"), admit=lambda: limiter.wait(session_hash)
        )
    except RateLimited:
        request.app[REPORTS].refused("message")
        raise
    return web.json_response({"message": message_json(message)}, status=201)


async def post_typing(request: web.Request) -> web.Response:
    session_hash = _state_changing(request)
    body = await _json_body(request)
    typing = body.get("typing") if isinstance(body, dict) else None
    if not isinstance(typing, bool):
        raise InvalidInput('Expected {"typing": true|false}.')
    if request.app[TYPING_GATE].passes(session_hash, typing):
        await request.app[CONVERSATIONS].visitor_typing(session_hash, typing)
    elif typing:  # (a stop without a start passed on is no refusal: there is nothing to stop)
        request.app[REPORTS].refused("typing")
    return web.Response(status=204)  # a notification over the limit is dropped silently


async def post_read(request: web.Request) -> web.Response:
    session_hash = _state_changing(request)
    body = await _json_body(request)
    up_to = body.get("up_to") if isinstance(body, dict) else None
    await request.app[CONVERSATIONS].visitor_read(session_hash, up_to)
    return web.Response(status=204)


async def end_conversation(request: web.Request) -> web.Response:
    session_hash = _state_changing(request)
    conversations = request.app[CONVERSATIONS]
    ended = await conversations.visitor_end(session_hash)
    return web.json_response({"conversation": view_json(await conversations.view(ended))})


async def _open_conversation(
    request: web.Request, ws: web.WebSocketResponse
) -> tuple[ConversationId, Subscriber] | None:
    """The visitor's conversation, subscribed and caught up, or None (the socket is closed).

    A function of its own so that the backlog is freed once sent: an idle page then costs
    the socket, its subscriber and one conversation id (thousands of them wait at once)."""
    conversations, hub = request.app[CONVERSATIONS], request.app[HUB]
    since = _since(request)
    token = _session(request)
    current = (
        await conversations.current(request.app[SESSIONS].session_hash(token)) if token else None
    )
    if current is None:
        await ws.close(code=CLOSE_NO_SESSION, message=b"no conversation")
        return None
    subscriber = Subscriber(ws)
    hub.subscribe(current.id, subscriber)  # before the backlog: nothing falls in between
    try:
        # what changed in the messages the page has (it may have missed the update), then
        # the messages it has not
        backlog = [
            {"type": "update", "message": message_json(m)}
            for m in await conversations.changes(current.id, since)
        ]
        backlog += [
            {"type": "message", "message": message_json(m)}
            for m in await conversations.history(current.id, since)
        ]
        backlog.append(
            {"type": "status", "conversation": view_json(await conversations.view(current))}
        )
    except BaseException:
        hub.unsubscribe(current.id, subscriber)
        raise
    subscriber.replay(backlog)
    return current.id, subscriber


async def _upgrade(request: web.Request) -> web.StreamResponse:
    if not request.app[ORIGINS].ok(request, required=True):
        raise web.HTTPForbidden(reason="This origin may not open the chat.")
    _since(request)  # a bad `since` is a 400 before the upgrade
    beat = request.app[SETTINGS].heartbeat
    ws = web.WebSocketResponse(heartbeat=beat, max_msg_size=MAX_WS_FRAME, receive_timeout=4 * beat)
    await ws.prepare(request)
    return ws


async def websocket(request: web.Request) -> web.StreamResponse:
    ws = await _answered(request, _upgrade)
    if not isinstance(ws, web.WebSocketResponse):
        return ws  # refused before the upgrade, worded as any other request's error
    try:
        opened = await _open_conversation(request, ws)
    except Exception:
        ref = secrets.token_hex(4)
        log.exception("websocket %s failed [ref %s]", request.path, ref)
        await ws.close(code=CLOSE_INTERNAL, message=f"ref {ref}".encode())
        return ws
    if opened is None:
        return ws
    conversation_id, subscriber = opened
    try:
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                break  # binary, oversized or broken frames end this socket only
            try:
                data = json.loads(frame.data)
            except (ValueError, RecursionError):
                break
            if isinstance(data, dict) and data.get("type") == "ping":
                subscriber.offer({"type": "pong"})
    finally:
        subscriber.stop()
        hub = request.app[HUB]
        hub.unsubscribe(conversation_id, subscriber)
        await ws.close()
        # a page the server sent away (restart, catch-up) comes back by itself
        if ws.close_code not in SERVER_SENT_AWAY and not hub.is_watching(conversation_id):
            try:
                await request.app[CONVERSATIONS].page_closed(conversation_id)
            except Exception:
                log.warning("could not note that %s was left", conversation_id, exc_info=True)
    return ws


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[SETTINGS]))


async def health(request: web.Request) -> web.Response:
    """The process lives and answers (also at /healthz)."""
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    """200 once the desk serves; until then 503 and what it waits for."""
    waiting = request.app[NOT_READY]()
    if waiting is None:
        return web.json_response({"status": "ready"})
    return web.json_response(
        {"status": "starting", "reason": waiting}, status=503, headers={"Retry-After": "1"}
    )


def create_app(
    conversations: VisitorService,
    hub: VisitorHub,
    settings: PortalSettings,
    *,
    monotonic: Callable[[], float] = time.monotonic,
    not_ready: Callable[[], str | None] = lambda: None,
    reports: PortalReports | None = None,
) -> web.Application:
    """The portal; ``monotonic`` times its rate limits (a test passes a fake clock's);
    ``not_ready`` says why the desk cannot serve yet (None once it can); ``reports`` is told
    what the rate limits refuse and which chats start (the metrics)."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[starting_gate, errors_middleware])
    app.on_response_prepare.append(security_headers)
    app[CONVERSATIONS] = conversations
    app[HUB] = hub
    app[SETTINGS] = settings
    app[SESSIONS] = Sessions.of(settings.secret, settings.public_url.startswith("https:"))
    app[ORIGINS] = Origins.of(settings.public_url, settings.allowed_origins)
    app[CLIENT] = ClientAddress.of(settings.trusted_proxies)
    app[START_LIMIT] = RateLimiter(settings.starts_per_minute, clock=monotonic)
    app[MESSAGE_LIMIT] = RateLimiter(
        settings.messages_per_minute, settings.message_burst, clock=monotonic
    )
    app[TYPING_GATE] = TypingGate(
        RateLimiter(settings.typing_per_minute, settings.typing_burst, clock=monotonic)
    )
    app[SEARCH_LIMIT] = RateLimiter(
        settings.searches_per_minute, settings.search_burst, clock=monotonic
    )
    app[ASSETS] = Assets.scan(HERE / "static")
    app[NOT_READY] = not_ready
    app[REPORTS] = reports or NoReports()
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.add_routes(
        [
            web.get("/", portal_page),
            web.get("/health", health),
            web.get("/healthz", health),
            web.get("/ready", ready),
            web.get("/api/openapi.json", openapi),
            web.get("/api/session", session),
            web.get("/api/conversation", get_conversation),
            web.post("/api/conversation", start_conversation),
            web.post("/api/conversation/messages", post_message),
            web.post("/api/conversation/typing", post_typing),
            web.post("/api/conversation/read", post_read),
            web.post("/api/conversation/end", end_conversation),
            web.get("/api/call-signs", find_call_signs),
            web.get("/api/ws", websocket),
            app[ASSETS].route(),
        ]
    )
    return app


__all__ = ["create_app", "PortalSettings", "NoOpenConversation"]
