"""A portal visitor finds call signs in the search box and starts a chat with one: only call
signs someone could answer now are found (and accepted), the conversation goes to the call
sign's advisor or group rather than by topic, and hostile input is refused on its field."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.errors import InvalidInput, RateLimited
from bridge.groups import Role
from bridge.model import AdvisorMxid, ConversationStatus, Presence
from bridge.validation import MAX_QUERY, UNREACHABLE

from .conftest import Desk

ANA, BOB = "@ana:test", "@bob:test"
FORM = {"name": "Vera", "email": "", "topic": "general", "message": "Hola"}


async def online(desk: Desk, *advisors: str) -> None:
    for mxid in advisors:
        await desk.advisor(mxid)  # added, and said !available
        await desk.advisors.presence_changed(mxid, Presence.ONLINE)


async def call_sign(desk: Desk, sign: str, target: str, keywords: str) -> None:
    await desk.core.call_signs.set(sign, target, keywords)
    await desk.settle()


async def find(desk: Desk, query: Any) -> list[str]:
    return [c.sign for c in await desk.core.visitors.find_call_signs(query)]


async def test_the_search_finds_by_accentless_prefix_only_who_can_answer_now(desk: Desk) -> None:
    await online(desk, ANA)
    await desk.advisor(BOB)  # said !available, but their presence is not known to be online
    await call_sign(desk, "billing-es", ANA, "facturación pagos")
    await call_sign(desk, "billing-pt", BOB, "facturación Portugal")
    for query in ("factura", "FACTURACIÓN", "Facturacion", "  fact  pag ", "bill"):
        assert await find(desk, query) == ["billing-es"], query
    assert await find(desk, "soporte") == []
    await desk.advisors.presence_changed(BOB, Presence.ONLINE)
    assert await find(desk, "factura") == ["billing-es", "billing-pt"]
    await desk.advisors.set_available(ANA, False)  # !away
    assert await find(desk, "factura") == ["billing-pt"]
    [found] = await desk.core.visitors.find_call_signs("portugal")
    assert (found.sign, found.name, found.keywords, found.alias) == (
        "billing-pt",
        "billing-pt",  # Bob has no display name yet: never his Matrix id, nor its localpart
        "facturación Portugal",
        "#cs_billing-pt:test",
    )
    assert BOB not in repr(found)  # nobody's Matrix id reaches the public


@pytest.mark.parametrize("query", [None, "", "   ", "\x00\u200b", "-/.", "@:"])
async def test_a_search_with_no_word_finds_nothing_and_costs_nothing(
    desk: Desk, query: Any
) -> None:
    await online(desk, ANA)
    await call_sign(desk, "billing-es", ANA, "facturación")

    def never() -> float:
        raise AssertionError("an empty search must not use up the rate limit")

    assert await desk.core.visitors.find_call_signs(query, admit=never) == []


@pytest.mark.parametrize(
    "query", [123, ["factura"], {"q": "x"}, True, "x" * (MAX_QUERY + 1), "é" * 500]
)
async def test_a_search_that_is_not_a_short_text_is_refused_on_its_field(
    desk: Desk, query: Any
) -> None:
    with pytest.raises(InvalidInput) as e:
        await desk.core.visitors.find_call_signs(query)
    assert e.value.field == "q"


async def test_odd_characters_in_a_search_are_harmless(desk: Desk) -> None:
    await online(desk, ANA)
    await call_sign(desk, "billing-es", ANA, "facturación")
    assert await find(desk, "fac\x00tura") == ["billing-es"]  # a control character is dropped
    assert await find(desk, "\u202efactura\u202c") == ["billing-es"]  # bidi controls dropped
    assert await find(desk, "factura 🙂") == []
    assert await find(desk, "ﬁ" * MAX_QUERY) == []  # NFKD grows it; still just words
    assert await find(desk, "x" * MAX_QUERY) == []


async def test_over_the_rate_limit_a_search_is_refused_with_the_wait(desk: Desk) -> None:
    await online(desk, ANA)
    await call_sign(desk, "billing-es", ANA, "facturación")
    with pytest.raises(RateLimited) as e:
        await desk.core.visitors.find_call_signs("factura", admit=lambda: 2.5)
    assert e.value.retry_after == 2.5


async def test_a_chat_started_with_a_call_sign_goes_to_its_advisor_not_by_topic(
    desk: Desk,
) -> None:
    await online(desk, ANA, BOB)
    await call_sign(desk, "billing-es", BOB, "facturación")
    conversation, created = await desk.conversations.start(
        "s1", {**FORM, "call_sign": "billing-es"}
    )
    assert created and conversation.call_sign == "billing-es"
    assert conversation.status is ConversationStatus.INVITING
    assert conversation.advisor == AdvisorMxid(BOB)  # Ana sorts first; only Bob is behind it
    intro = [s for s in desk.gateway.of("notice") if s[1] == conversation.room_id]
    assert any("Asked for: call sign billing-es" in s[2] for s in intro), intro
    # a chat started without one is routed by topic as before
    other, _ = await desk.conversations.start("s2", {**FORM, "call_sign": ""})
    assert other.call_sign is None and other.advisor == AdvisorMxid(ANA)
    third, _ = await desk.conversations.start("s3", {**FORM, "call_sign": None})
    assert third.call_sign is None


async def test_a_group_call_sign_is_found_and_routed_while_a_member_is_available(
    desk: Desk,
) -> None:
    await online(desk, ANA, BOB)
    await desk.core.groups.create("billing")
    await desk.core.groups.add_member("billing", BOB, Role.SECONDARY)
    await call_sign(desk, "facturas", "group billing", "facturación España")
    assert await find(desk, "españa") == ["facturas"]
    conversation, _ = await desk.conversations.start("s1", {**FORM, "call_sign": "facturas"})
    assert conversation.advisor == AdvisorMxid(BOB)
    await desk.advisors.set_available(BOB, False)
    assert await find(desk, "españa") == []
    with pytest.raises(InvalidInput) as e:
        await desk.conversations.start("s2", {**FORM, "call_sign": "facturas"})
    assert e.value.field == "call_sign"


@pytest.mark.parametrize("why", ["away", "presence unknown", "no such sign", "removed"])
async def test_a_call_sign_nobody_can_answer_now_is_refused_and_nothing_starts(
    desk: Desk, why: str
) -> None:
    await online(desk, ANA)
    await call_sign(desk, "billing-es", ANA, "facturación")
    sign = "billing-es"
    if why == "away":
        await desk.advisors.set_available(ANA, False)
    elif why == "presence unknown":
        await desk.advisors.presence_changed(ANA, Presence.UNKNOWN)
    elif why == "no such sign":
        sign = "billing-fr"
    else:
        await desk.core.call_signs.remove("billing-es")
        await desk.settle()
    before = (dict(desk.store.visitors), dict(desk.store.conversations), len(desk.gateway.sent))
    with pytest.raises(InvalidInput) as e:
        await desk.conversations.start("s1", {**FORM, "call_sign": sign})
    assert (e.value.field, e.value.message) == ("call_sign", UNREACHABLE)
    assert e.value.message == (
        "That advisor or team is not available right now; pick another or leave it empty."
    )
    after = (dict(desk.store.visitors), dict(desk.store.conversations), len(desk.gateway.sent))
    assert after == before


@pytest.mark.parametrize(
    "value", [7, True, ["billing-es"], {"sign": "billing-es"}, " billing-es", "Billing-ES",
              "billing-es\n", "billing_es", "x" * 33, "-billing", "factura ción"]
)  # fmt: skip
async def test_a_call_sign_that_cannot_be_one_is_refused_on_its_field(
    desk: Desk, value: Any
) -> None:
    await online(desk, ANA)
    await call_sign(desk, "billing-es", ANA, "facturación")
    with pytest.raises(InvalidInput) as e:
        await desk.conversations.start("s1", {**FORM, "call_sign": value})
    assert e.value.field == "call_sign"
    assert not desk.store.conversations


async def test_a_retried_start_returns_the_open_chat_though_the_advisor_left_since(
    desk: Desk,
) -> None:
    await online(desk, ANA)
    await call_sign(desk, "billing-es", ANA, "facturación")
    first, created = await desk.conversations.start("s1", {**FORM, "call_sign": "billing-es"})
    assert created
    await desk.advisors.set_available(ANA, False)
    again, created = await desk.conversations.start("s1", {**FORM, "call_sign": "billing-es"})
    assert not created and again.id == first.id


async def test_the_rate_limit_is_asked_only_once_the_call_sign_is_known_reachable(
    desk: Desk,
) -> None:
    asked: list[int] = []

    def admit() -> float:
        asked.append(1)
        return 0.0

    with pytest.raises(InvalidInput):
        await desk.conversations.start("s1", {**FORM, "call_sign": "billing-es"}, admit=admit)
    assert asked == []  # a refused start uses up none of the address's allowance
