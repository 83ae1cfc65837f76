"""One visitor cannot flood an advisor's room: per-session limits on messages and typing.

The buckets are tested as pure logic on a fake clock; the whole path (HTTP, the core, the store,
the outbox, the Matrix gateway) on SQLite and on PostgreSQL, the portal's limits timed by the
desk's fake clock so that "a minute later" is exact.
"""

from __future__ import annotations

from typing import Any

import pytest

from bridge.model import ConversationId, Sender
from tests.web_portal.conftest import CONTRACT, Portal, PortalFactory, Visitor, error_of
from web_portal.security import RateLimiter, TypingGate

STORES = ["sqlite", "postgres"]


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


# -- the bucket, as pure logic ---------------------------------------------------------------


def test_a_bucket_lets_a_burst_through_then_paces_at_the_rate() -> None:
    clock = Ticks()
    bucket = RateLimiter(per_minute=30, burst=3, clock=clock)
    assert [bucket.wait("vera") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.wait("vera") == pytest.approx(2.0)  # one token every 2 s
    clock.t = 1.5
    assert bucket.wait("vera") == pytest.approx(0.5)
    clock.t = 2.0
    assert bucket.wait("vera") == 0.0
    assert bucket.wait("vera") == pytest.approx(2.0)
    clock.t = 60.0  # a quiet minute fills it up to the burst, not beyond
    assert [bucket.allow("vera") for _ in range(4)] == [True, True, True, False]


def test_refused_attempts_take_nothing_so_they_do_not_push_the_wait_back() -> None:
    clock = Ticks()
    bucket = RateLimiter(per_minute=6, burst=1, clock=clock)
    assert bucket.allow("vera")
    for step in range(1, 10):
        clock.t = float(step)
        assert bucket.wait("vera") == pytest.approx(10.0 - step)
    clock.t = 10.0
    assert bucket.allow("vera")


def test_each_session_has_its_own_bucket() -> None:
    bucket = RateLimiter(per_minute=1, burst=1, clock=Ticks())
    assert bucket.allow("flooder") and not bucket.allow("flooder")
    assert bucket.allow("someone else")


def test_a_typing_flood_passes_starts_at_the_rate_and_exactly_one_stop_after_each() -> None:
    clock = Ticks()
    gate = TypingGate(RateLimiter(per_minute=6, burst=2, clock=clock))
    passed = [(typing, gate.passes("vera", typing)) for typing in [True, False] * 50]
    assert [typing for typing, ok in passed if ok] == [True, False, True, False]
    assert not gate.passes("vera", False)  # a stop after a dropped start is dropped too
    assert not gate.passes("someone", False)  # and one with no start at all
    clock.t = 10.0
    assert gate.passes("vera", True) and gate.passes("vera", False)


def test_a_page_closed_while_typing_is_forgotten_once_too_many_are() -> None:
    gate = TypingGate(RateLimiter(per_minute=60, clock=Ticks()), max_keys=2)
    for key in ("a", "b", "c"):
        assert gate.passes(key, True)
    assert not gate.passes("a", False)  # forgotten: Matrix ends that typing by itself
    assert gate.passes("c", False)


# -- the whole path, on SQLite and PostgreSQL ------------------------------------------------


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def chatting(portal: Portal) -> tuple[Visitor, ConversationId]:
    """A visitor whose chat has its Matrix room (so typing and messages reach the gateway)."""
    visitor = await portal.visitor()
    status, body = await visitor.start()
    assert status == 201, body
    await portal.settle()
    return visitor, ConversationId(body["conversation"]["id"])


def relayed(portal: Portal, kind: str) -> list[Any]:
    return [sent[2] for sent in portal.gateway.sent if sent[0] == kind]


async def test_a_message_flood_is_refused_with_429_and_retry_after_and_never_reaches_the_room(
    make_portal: PortalFactory, store: str
) -> None:
    portal = await make_portal(**{store: True}, messages_per_minute=6, message_burst=3)
    vera, conversation_id = await chatting(portal)
    for i in range(3):
        assert (await vera.say(f"m{i}"))[0] == 201
    for i in range(3, 6):
        response = await vera.post(
            "/api/conversation/messages", {"client_id": f"c-m{i}", "body": f"m{i}"}
        )
        error = await error_of(response, 429, "rate_limited")
        assert response.headers["Retry-After"] == "10"  # 6 a minute: the next in 10 s
        CONTRACT.response("/api/conversation/messages", "POST", 429, {"error": error})
    await portal.settle()
    stored = await portal.store.messages(conversation_id)
    assert [m.body for m in stored] == ["Hello", "m0", "m1", "m2"]
    assert relayed(portal, "text") == ["Hello", "m0", "m1", "m2"]

    # the page lost the answer to m1 and sends it again while limited: answered, not doubled
    status, body = await vera.say("m1")
    assert status == 201 and body["message"]["seq"] == stored[2].seq

    portal.clock.advance(10)
    assert (await vera.say("m3"))[0] == 201
    assert (await vera.say("m4"))[0] == 429
    await portal.settle()
    assert relayed(portal, "text") == ["Hello", "m0", "m1", "m2", "m3"]


async def test_one_visitors_flood_leaves_another_visitor_free_to_write(
    make_portal: PortalFactory, store: str
) -> None:
    portal = await make_portal(**{store: True}, messages_per_minute=1, message_burst=1)
    flooder, _ = await chatting(portal)
    vera, conversation_id = await chatting(portal)
    assert (await flooder.say("spam 1"))[0] == 201
    assert (await flooder.say("spam 2"))[0] == 429
    assert (await vera.say("Is anyone there?"))[0] == 201
    history = await portal.store.messages(conversation_id)
    assert [(m.sender, m.body) for m in history][-1] == (Sender.VISITOR, "Is anyone there?")


async def test_a_typing_flood_reaches_matrix_only_at_the_allowed_rate_ending_with_a_stop(
    make_portal: PortalFactory, store: str
) -> None:
    portal = await make_portal(**{store: True}, typing_per_minute=6, typing_burst=2)
    vera, _ = await chatting(portal)
    for typing in [True, False] * 20 + [True]:
        response = await vera.post("/api/conversation/typing", {"typing": typing})
        assert response.status == 204  # dropped ones too: the page has nothing to do about it
    assert relayed(portal, "typing") == [True, False, True, False]
    portal.clock.advance(10)
    assert (await vera.post("/api/conversation/typing", {"typing": True})).status == 204
    assert (await vera.post("/api/conversation/typing", {"typing": False})).status == 204
    assert relayed(portal, "typing") == [True, False, True, False, True, False]


async def test_a_new_chat_over_the_start_limit_says_when_to_try_again(
    make_portal: PortalFactory, store: str
) -> None:
    portal = await make_portal(**{store: True}, starts_per_minute=2)
    for _ in range(2):
        assert (await (await portal.visitor()).start())[0] == 201
    response = await (await portal.visitor()).post(
        "/api/conversation", {"name": "Ivo", "topic": "general", "message": "Hi"}
    )
    await error_of(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "30"
    assert len(await portal.store.open_conversations()) == 2
