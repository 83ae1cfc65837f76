"""The real page in headless Chromium when the visitor writes faster than the limit allows.

The portal runs on SQLite with the desk's fake clock timing its limits, so the test decides
when the minute has passed; no homeserver is needed for a visitor who is still waiting.
"""

from __future__ import annotations

import socket

from playwright.async_api import Browser, expect

from tests.web_portal.conftest import PortalFactory


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_message_over_the_limit_comes_back_to_the_composer_with_a_notice(
    make_portal: PortalFactory, browser: Browser  # the browser closes first, then the portal
) -> None:
    port = free_port()
    portal = await make_portal(
        sqlite=True,
        port=port,
        public_url=f"http://127.0.0.1:{port}",
        messages_per_minute=1,
        message_burst=2,
    )
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    await page.goto(portal.settings.public_url + "/")
    await page.fill("#name", "Vera")
    await page.select_option("#topic", "general")
    await page.fill("#message", "Hello")
    await page.click("#start")
    await expect(page.locator("#status")).to_contain_text("queue")

    sent = page.locator('.msg[data-sender="visitor"]:not(.msg--pending) .msg-body')
    for text in ("one", "two"):
        await page.fill("#composer", text)
        await page.press("#composer", "Enter")
    await expect(sent).to_have_text(["Hello", "one", "two"])

    await page.fill("#composer", "three")
    await page.press("#composer", "Enter")
    # refused: the text is back in the box, a notice says why, nothing waits in the chat
    await expect(page.locator("#composer")).to_have_value("three")
    await expect(page.locator("#composer-error")).to_contain_text("too quickly")
    await expect(page.locator(".msg--pending")).to_have_count(0)

    portal.clock.advance(60)
    await page.press("#composer", "Enter")
    await expect(sent).to_have_text(["Hello", "one", "two", "three"])
    await expect(page.locator("#composer-error")).to_be_empty()
    await expect(page.locator("#composer")).to_have_value("")
    conversation = (await portal.store.open_conversations())[0]
    bodies = [m.body for m in await portal.store.messages(conversation.id)]
    assert bodies == ["Hello", "one", "two", "three"]
    assert not errors
    await page.close()
