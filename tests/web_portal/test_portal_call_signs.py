"""The portal's search box over HTTP: GET /api/call-signs finds the call signs someone could
answer now (accents and case aside), as documented, refusing hostile queries with a clear 400
and a flood with 429; a start naming a call sign goes to it, or is refused on its field."""

from __future__ import annotations

import re
from typing import Any

import pytest

from bridge.model import AdvisorMxid, Presence
from bridge.validation import MAX_QUERY, UNREACHABLE
from bridge.validation import call_sign as checked_call_sign
from tests.web_portal.conftest import CONTRACT, FORM, Portal, PortalFactory, Visitor, error_of
from web_portal.inputs import CALL_SIGN

ANA, BOB = "@ana:test", "@bob:test"
PATH = "/api/call-signs"


async def with_call_signs(portal: Portal) -> None:
    """Ana (online, available) is behind billing-es; Bob (available, presence unknown) behind
    billing-pt: both match "factura"."""
    for mxid, name in ((ANA, "Ana García"), (BOB, "Bob")):
        await portal.advisors.add(mxid, display_name=name, welcome=False)
        await portal.advisors.set_available(mxid, True)
    await portal.advisors.presence_changed(ANA, Presence.ONLINE)
    await portal.desk.call_signs.set("billing-es", ANA, "facturación pagos")
    await portal.desk.call_signs.set("billing-pt", BOB, "facturación Portugal")
    await portal.settle()


async def search(visitor: Visitor, raw_query: str) -> tuple[int, Any]:
    """GET the search with a query string as the browser would encode it (or worse)."""
    response = await visitor.client.get(f"{PATH}?{raw_query}")
    body = await response.json()
    CONTRACT.response(PATH, "get", response.status, body)
    return response.status, body


@pytest.mark.parametrize(
    "raw",
    [
        "q=factura",
        "q=FACTURACI%C3%93N",  # FACTURACIÓN, as encodeURIComponent sends it
        "q=Facturacio%CC%81n",  # decomposed: o + combining acute
        "q=%20%20fact%20%20pag%20",
        "q=Ana",  # the advisor's name is searched too
        "q=bill&other=ignored",
    ],
)
async def test_the_search_finds_only_call_signs_someone_can_answer_now(
    portal: Portal, raw: str
) -> None:
    await with_call_signs(portal)
    status, body = await search(await portal.visitor(), raw)
    assert status == 200
    assert body == {
        "call_signs": [
            {
                "sign": "billing-es",
                "name": "Ana García",
                "keywords": "facturación pagos",
                "alias": "#cs_billing-es:test",
            }
        ]
    }


async def test_an_advisor_coming_online_appears_and_one_going_away_disappears(
    portal: Portal,
) -> None:
    await with_call_signs(portal)
    vera = await portal.visitor()
    await portal.advisors.presence_changed(BOB, Presence.ONLINE)
    _, body = await search(vera, "q=factura")
    assert [c["sign"] for c in body["call_signs"]] == ["billing-es", "billing-pt"]
    await portal.advisors.set_available(ANA, False)
    _, body = await search(vera, "q=factura")
    assert [c["sign"] for c in body["call_signs"]] == ["billing-pt"]
    text = str(body)
    assert ANA not in text and BOB not in text  # nobody's Matrix id


async def test_the_search_needs_no_session_and_stores_nothing(portal: Portal) -> None:
    await with_call_signs(portal)
    vera = await portal.visitor()
    before = portal.snapshot()
    status, _ = await search(vera, "q=factura")
    assert status == 200 and vera.cookie is None
    assert portal.snapshot() == before


@pytest.mark.parametrize(
    "raw",
    [
        "q=",
        "q=%20%20%20",
        "q=%00",
        "q=%FF%FE",  # not UTF-8
        "q=%ED%A0%80",  # an encoded surrogate
        "q=%E2%80%AE%E2%80%AD",  # bidi overrides only
        "q=%F0%9F%99%82",  # an emoji
        "q=%3Cscript%3Ealert(1)%3C/script%3E",
        "q=%27%20OR%201=1--",
        "q=*",
        "q=.*",
        "q=%25",
        "q=" + "%EF%AC%81" * MAX_QUERY,  # the ligature fi: NFKD doubles it
        "q=" + "x" * MAX_QUERY,
        "q[]=factura",
    ],
)
async def test_an_odd_query_finds_nothing_and_is_never_a_server_error(
    portal: Portal, raw: str
) -> None:
    await with_call_signs(portal)
    status, body = await search(await portal.visitor(), raw)
    if raw.startswith("q[]"):  # no q at all
        assert status == 400 and body["error"]["field"] == "q"
    else:
        assert (status, body) == (200, {"call_signs": []})


@pytest.mark.parametrize(
    "raw, says",
    [
        ("", "?q="),
        ("x=factura", "?q="),
        ("q=factura&q=pagos", "once"),
        ("q=" + "a" * (MAX_QUERY + 1), f"at most {MAX_QUERY}"),
        ("q=" + "%C3%A9" * (MAX_QUERY + 1), f"at most {MAX_QUERY}"),
        ("q=" + "a" * 2000, f"at most {MAX_QUERY}"),
    ],
)
async def test_a_missing_repeated_or_long_query_is_a_clear_400(
    portal: Portal, raw: str, says: str
) -> None:
    vera = await portal.visitor()
    response = await vera.client.get(f"{PATH}?{raw}" if raw else PATH)
    error = await error_of(response, 400, "invalid_input")
    assert error["field"] == "q" and says in error["message"]


async def test_a_flood_of_searches_from_one_address_is_429_with_the_wait(
    make_portal: PortalFactory,
) -> None:
    portal = await make_portal(searches_per_minute=60, search_burst=3)
    await with_call_signs(portal)
    vera, other_tab = await portal.visitor(), await portal.visitor()
    for _ in range(2):
        assert (await search(vera, "q=factura"))[0] == 200
    assert (await search(other_tab, "q=factura"))[0] == 200  # one address, one bucket
    for _ in range(3):  # empty queries look nothing up and cost nothing
        assert (await search(vera, "q=%20"))[0] == 200
    response = await vera.client.get(f"{PATH}?q=factura")
    await error_of(response, 429, "rate_limited")
    assert response.headers["Retry-After"] == "1"
    CONTRACT.response(PATH, "get", 429, await response.json())
    portal.clock.advance(1.0)  # a token a second
    assert (await search(vera, "q=factura"))[0] == 200


# -- starting a chat with a call sign --------------------------------------------------------


@pytest.mark.parametrize("store", ["memory", "sqlite", "postgres"])
async def test_a_chat_started_with_a_found_call_sign_goes_to_its_advisor(
    make_portal: PortalFactory, store: str
) -> None:
    portal = await make_portal(**({store: True} if store != "memory" else {}))
    await with_call_signs(portal)
    await portal.advisors.add("@aaron:test", display_name="Aaron", welcome=False)
    await portal.advisors.set_available("@aaron:test", True)  # first by topic, not asked for
    await portal.advisors.presence_changed("@aaron:test", Presence.ONLINE)
    vera = await portal.visitor()
    _, found = await search(vera, "q=FACTURACI%C3%93N")
    [picked] = found["call_signs"]
    response = await vera.post("/api/conversation", {**FORM, "call_sign": picked["sign"]})
    body = await response.json()
    CONTRACT.response("/api/conversation", "post", response.status, body)
    assert response.status == 201
    await portal.settle()
    conversation = await portal.store.get_conversation(body["conversation"]["id"])
    assert conversation is not None
    assert conversation.call_sign == "billing-es"
    assert conversation.advisor == AdvisorMxid(ANA)
    [room] = portal.gateway.of("room")
    intro = [text for kind, room_id, text in portal.gateway.of("notice") if room_id == room[1]]
    assert "Asked for: call sign billing-es" in intro[0]


@pytest.mark.parametrize("sign", ["billing-pt", "billing-fr", "Billing-ES", " billing-es"])
async def test_a_start_with_a_call_sign_nobody_can_answer_is_refused_on_its_field(
    portal: Portal, sign: str
) -> None:
    await with_call_signs(portal)  # Bob, behind billing-pt, is not known to be online
    vera = await portal.visitor()
    await vera.session()
    before = portal.snapshot()
    response = await vera.post("/api/conversation", {**FORM, "call_sign": sign})
    error = await error_of(response, 400, "invalid_input")
    assert (error["field"], error["message"]) == ("call_sign", UNREACHABLE)
    assert portal.snapshot() == before
    status, _ = await vera.start(call_sign="")  # left empty: routed by topic
    assert status == 201


@pytest.mark.parametrize("value", [7, True, ["billing-es"], {"sign": "billing-es"}])
async def test_a_call_sign_that_is_not_text_is_refused_on_its_field(
    portal: Portal, value: Any
) -> None:
    vera = await portal.visitor()
    response = await vera.post("/api/conversation", {**FORM, "call_sign": value})
    error = await error_of(response, 400, "invalid_input")
    assert error["field"] == "call_sign"


@pytest.mark.parametrize(
    "text",
    ["", "a", "billing-es", "a-b-c", "9", "x" * 32, "x" * 33, "-a", "a-", "A", "a_b", "a b",
     " a", "a ", "é", "a--b", "a\tb", "ab\u200b"],
)  # fmt: skip
def test_the_documented_pattern_is_the_cores_rule(text: str) -> None:
    documented = len(text) <= 32 and re.search(CALL_SIGN, text) is not None
    try:
        checked_call_sign(text)
        accepted = True
    except Exception:
        accepted = False
    assert documented == accepted


async def test_the_start_page_has_a_labelled_search_box(portal: Portal) -> None:
    response = await (await portal.visitor()).client.get("/")
    page = await response.text()
    assert '<label for="callsign-search"' in page
    box = re.search(r"<input id=\"callsign-search\"[^>]*>", page)
    assert box is not None
    for attribute in (
        'role="combobox"',
        'aria-autocomplete="list"',
        'aria-controls="callsign-list"',
        'aria-expanded="false"',
        f'maxlength="{MAX_QUERY}"',
    ):
        assert attribute in box.group(0)
    assert re.search(r'<ul id="callsign-list"[^>]*role="listbox"', page)


async def test_the_form_shows_the_search_box_only_when_the_desk_has_call_signs(
    portal: Portal,
) -> None:
    """A desk without call signs would show a box that never finds anything."""
    box = re.compile(r'<div class="field callsign"( hidden)?>')
    page = await (await (await portal.visitor()).client.get("/")).text()
    match = box.search(page)
    assert match is not None and match.group(1) == " hidden"
    await with_call_signs(portal)
    page = await (await (await portal.visitor()).client.get("/")).text()
    match = box.search(page)
    assert match is not None and match.group(1) is None
