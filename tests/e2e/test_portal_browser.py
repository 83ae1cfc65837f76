"""The real portal page in headless Chromium, from the pre-chat form to the advisor's reply.

It also takes the screenshots shown in the README (docs/portal-*.png).
"""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import expect

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_visitor_fills_the_form_waits_then_chats_with_the_advisor(
    browser, sqlite_desks, people
):
    desk = await sqlite_desks.start()
    ana = await people.advisor(desk, "ana", available=False)
    page = await browser.new_page(viewport={"width": 1100, "height": 760})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(desk.config.portal.public_url + "/")

    # a bad email is refused with a clear message, and nothing starts
    await page.fill("#name", "Vera <b>Visitor</b>")
    await page.fill("#email", "not-an-email")
    await page.select_option("#topic", "billing")
    await page.fill("#message", "Hello, I was charged twice.\nOrder 1234.")
    await page.click("#start")
    await expect(page.locator("#email-error")).not_to_be_empty()
    assert await desk.store.open_conversations() == []

    await page.fill("#email", "vera@example.org")
    await page.click("#start")
    # nobody is available: the visitor sees their place in the queue
    await expect(page.locator("#status")).to_contain_text("number 1", timeout=10_000)
    await page.screenshot(path=str(DOCS / "portal-waiting.png"))

    await desk.advisors.set_available(ana.user_id, True)
    room = await ana.wait_for_invite()
    await ana.join(room)
    first = await ana.wait_for_message(room, "Hello, I was charged twice.\nOrder 1234.")
    assert ana.client.rooms[room].user_name(first.sender) == "Vera <b>Visitor</b> (visitor)"
    await expect(page.locator("#status")).to_contain_text("Ana", timeout=10_000)

    await ana.send_text(room, "Hi Vera! I can see the double charge; refunding it now.")
    reply = page.locator('.msg[data-sender="advisor"] .msg-body')
    await expect(reply).to_have_text("Hi Vera! I can see the double charge; refunding it now.")

    await ana.wait_for_receipt(room, first.sender)  # the page told Ana the visitor saw it

    await page.fill("#composer", "Thank you <script>alert(1)</script>")
    await page.press("#composer", "Enter")
    thanks = await ana.wait_for_message(room, "Thank you <script>alert(1)</script>")
    await ana.send_read_receipt(room, thanks.event_id)
    await expect(page.locator('.msg[data-read="true"] .msg-body')).to_have_text(
        "Thank you <script>alert(1)</script>"
    )
    await expect(page.locator('.msg[data-sender="visitor"] .msg-body').last).to_have_text(
        "Thank you <script>alert(1)</script>"
    )
    await page.screenshot(path=str(DOCS / "portal-chatting.png"))

    # the same chat on a phone-sized screen, after a reload: the history is all there, once
    await page.set_viewport_size({"width": 390, "height": 760})
    await page.reload()
    await expect(page.locator('.msg[data-sender="advisor"] .msg-body')).to_have_count(1)
    await expect(page.locator('.msg[data-sender="visitor"]')).to_have_count(2)
    await page.screenshot(path=str(DOCS / "portal-phone.png"))
    # nothing refused by the CSP, no script error, nothing missing (not even a favicon)
    assert not [e for e in errors if any(k in e for k in ("Content Security", "TypeError", "404"))]


async def test_the_page_shows_an_edit_a_reply_as_a_quote_and_drops_a_removed_message(
    browser, sqlite_desks, people
):
    desk = await sqlite_desks.start()
    ana = await people.advisor(desk, "ana")
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(desk.config.portal.public_url + "/")
    await page.fill("#name", "Vera")
    await page.select_option("#topic", "billing")
    await page.fill("#message", "Was I charged twice?")
    await page.click("#start")
    room = await ana.wait_for_invite()
    await ana.join(room)
    question = await ana.wait_for_message(room, "Was I charged twice?")
    await expect(page.locator("#status")).to_contain_text("Ana", timeout=10_000)

    typo = await ana.send_text(room, "Let me chekc.")
    wrong = await ana.send_text(room, "Card 4242 4242 4242 4242")
    advisor = page.locator('.msg[data-sender="advisor"]:visible')
    await expect(advisor).to_have_count(2)
    await ana.edit(room, typo, "Let me check.")
    await ana.reply(room, question, "Yes, twice: refunding one.")
    await ana.redact(room, wrong)

    for reloaded in (False, True):  # live, then after a reload
        await expect(advisor.locator(".msg-body")).to_have_text(
            ["Let me check.", "Yes, twice: refunding one."]
        )
        await expect(advisor.first.locator(".msg-edited")).to_have_text("(edited)")
        await expect(advisor.last.locator(".msg-quote-text")).to_have_text("Was I charged twice?")
        await expect(advisor.last.locator(".msg-quote-author")).to_have_text("You")
        # gone from the page: not shown, and its text not even in the document
        await expect(page.locator(".msg-body", has_text="4242")).to_have_count(0)
        if not reloaded:
            await page.reload()
    assert not errors
