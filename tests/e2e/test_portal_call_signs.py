"""The portal's search box in headless Chromium, on a real desk and the session's Synapse: an
admin gives an advisor a call sign with an accented keyword through the bot, the advisor is
online and says !available, and a visitor who types the keyword without its accent (or in
capitals, with it) finds the call sign, picks it with the keyboard and starts a chat that
goes to that advisor, a real Matrix client who gets the invite. An advisor who is away is
not listed.

Screenshots go to the test's tmp_path (run with --basetemp to keep them somewhere known).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import expect

from tests.desks import start_with_admin


async def listed(desk, query: str, signs: list[str], timeout: float = 15.0) -> None:
    """Until the desk's public search for ``query`` shows exactly ``signs`` (presence and
    !available reach it a transaction or two after the bot's answer)."""
    found: list[str] = []
    for _ in range(int(timeout / 0.2)):
        found = [c.sign for c in await desk.desk.call_signs.search(query)]
        if found == signs:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"search {query!r} shows {found}, not {signs}")


async def test_a_visitor_finds_an_available_advisor_by_keyword_and_the_chat_goes_to_them(
    browser,  # noqa: F811
    desks,
    people,
    tmp_path: Path,
):
    admin = await start_with_admin(desks, people)
    desk, bot = admin.desk, admin.bot
    # Aaron is available and sorts first: a chat routed by topic would go to him
    aaron = await people.advisor(desk, "aaron")
    ana = await people.advisor(None, "ana")
    bob = await people.advisor(None, "bob")

    await admin.tell(
        (f"!advisor add {ana.user_id}", "is now an advisor"),
        (f"!advisor add {bob.user_id}", "is now an advisor"),
        (f"!callsign set billing-es {ana.user_id} facturación pagos España", "now reaches"),
        (f"!callsign set billing-pt {bob.user_id} facturación Portugal", "now reaches"),
    )
    controls = {}
    for advisor in (ana, bob):  # sharing a room with the desk: their presence reaches it
        control = await advisor.wait_for_invite(timeout=20)
        await advisor.join(control)
        await advisor.wait_for_message(control, "You are now a Switchboard advisor", sender=bot)
        await advisor.send_text(control, "!available")
        await advisor.wait_for_message(control, "You are available", sender=bot)
        controls[advisor.user_id] = control
    await listed(desk, "factura", ["billing-es", "billing-pt"])  # both online and available
    await bob.send_text(controls[bob.user_id], "!away")
    await bob.wait_for_message(controls[bob.user_id], "You are away", sender=bot)
    await listed(desk, "factura", ["billing-es"])

    page = await browser.new_page(viewport={"width": 1100, "height": 860})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(desk.config.portal.public_url + "/")

    box = page.get_by_role("combobox", name="Ask for an advisor or team")
    options = page.locator("#callsign-list [role=option]")
    status = page.locator("#callsign-status")

    # Bob is away: his call sign matches, but nobody is shown for it
    await box.press_sequentially("portugal", delay=20)
    await expect(status).to_contain_text("Nobody matching is available", timeout=10_000)
    await expect(page.locator("#callsign-list")).to_be_hidden()
    await page.screenshot(path=str(tmp_path / "portal-call-sign-nobody.png"))

    # typed without its accent: found as the visitor types
    await box.fill("")
    await box.press_sequentially("factura", delay=40)
    await expect(options).to_have_count(1, timeout=10_000)
    await expect(box).to_have_attribute("aria-expanded", "true")
    await expect(options.first.locator(".combo-name")).to_have_text("Ana")
    await expect(options.first.locator(".combo-sign")).to_have_text("billing-es")
    await expect(options.first.locator(".combo-keywords")).to_have_text("facturación pagos España")
    await expect(page.locator("#callsign-list")).not_to_contain_text("billing-pt")
    await page.screenshot(path=str(tmp_path / "portal-call-sign-search.png"))

    # in capitals, with the accent
    await box.fill("")
    await expect(box).to_have_attribute("aria-expanded", "false")
    await box.press_sequentially("FACTURACIÓN", delay=40)
    await expect(options).to_have_count(1, timeout=10_000)
    await expect(options.first).to_have_attribute("data-sign", "billing-es")
    await page.set_viewport_size({"width": 390, "height": 760})  # a phone
    await page.screenshot(path=str(tmp_path / "portal-call-sign-phone.png"))

    # picked with the keyboard
    await box.press("ArrowDown")
    await expect(options.first).to_have_attribute("aria-selected", "true")
    await expect(box).to_have_attribute("aria-activedescendant", "callsign-option-0")
    await box.press("Enter")
    chosen = page.locator("#callsign-chosen")
    await expect(chosen).to_be_visible()
    await expect(chosen).to_contain_text("You asked for: Ana")
    await expect(page.locator("#callsign-clear")).to_be_focused()
    await expect(box).to_be_hidden()

    await page.fill("#name", "Vera")
    await page.select_option("#topic", "general")
    await page.fill("#message", "Hola, tengo una duda sobre una factura.")
    await page.screenshot(path=str(tmp_path / "portal-call-sign-chosen.png"))
    await page.click("#start")

    room = await ana.wait_for_invite(lambda r: r != controls[ana.user_id], timeout=20)
    await expect(page.locator("#notice-asked")).to_have_text("You asked for: Ana")
    await page.screenshot(path=str(tmp_path / "portal-call-sign-waiting.png"))
    await ana.join(room)
    await ana.wait_for_message(room, "Asked for: call sign billing-es", sender=bot)
    await ana.wait_for_message(room, "Hola, tengo una duda sobre una factura.")
    await expect(page.locator("#status")).to_contain_text("Ana", timeout=10_000)
    [conversation] = await desk.store.open_conversations()
    assert conversation.call_sign == "billing-es"
    assert conversation.advisor == ana.user_id
    assert aaron.invites == [] and [r for r in bob.invites if r != controls[bob.user_id]] == []
    assert not [e for e in errors if any(k in e for k in ("Content Security", "TypeError", "404"))]
