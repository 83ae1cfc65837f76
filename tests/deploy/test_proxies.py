"""The shipped nginx site and Caddyfile, run by a real nginx and a real Caddy in front of a desk.

Each test runs twice, once per proxy (``proxied_desk``); see tests/deploy/servers.py for the
little a test changes in the shipped file (ports and certificate only).
"""

from __future__ import annotations

import re

import aiohttp

from harness.visitor import FORM
from tests.deploy.conftest import ProxiedDesk
from tests.deploy.servers import CADDYFILE, NGINX_SITE
from tests.deploy.settings import APPSERVICE_PORT, PORTAL_PORT


async def test_a_visitor_talks_with_an_advisor_through_the_proxy_and_its_websocket(
    proxied_desk: ProxiedDesk, people
):
    """The visitor's page, API and websocket all go through the proxy (the visitor knows no
    other address); the advisor answers from a real Matrix client."""
    ana = await people.advisor(proxied_desk.switchboard, "ana")
    visitor = await proxied_desk.visitor("127.0.0.2")
    await visitor.start()
    room = await ana.wait_for_invite()
    await ana.join(room)
    await visitor.connect()  # wss:// through the proxy, Origin the proxy's address
    await visitor.wait_status("active")
    await ana.wait_for_message(room, "Hello, I was charged twice.")

    await ana.send_text(room, "Hi, let me look.")
    await visitor.wait_message("Hi, let me look.")  # pushed over the proxied websocket
    await visitor.say("Order 1234.")
    await ana.wait_for_message(room, "Order 1234.")
    await ana.send_text(room, "Refunded. Anything else?")
    await visitor.wait_message("Refunded. Anything else?")
    assert [m["body"] for m in visitor.messages()][-1] == "Refunded. Anything else?"


async def test_new_chats_are_limited_per_visitor_address_the_proxy_forwards(
    proxied_desk: ProxiedDesk,
):
    """The portal allows one new chat a minute per client address (starts_per_minute: 1) and
    believes X-Forwarded-For only from 127.0.0.1, where the proxy connects from. Visitors
    connect to the proxy from 127.0.0.2 and 127.0.0.3: different client addresses on this one
    machine, as two visitors on the internet are.

    - A second visitor from 127.0.0.2 is refused (429), even though it sends an
      X-Forwarded-For of its own: the proxy replaced it with the address it came from.
    - A visitor from 127.0.0.3 still starts a chat: the limit follows the address the proxy
      passes on, not the proxy's own address (which every request shares).
    """
    first = await proxied_desk.visitor("127.0.0.2")
    await first.start()

    forged = await proxied_desk.visitor("127.0.0.2", {"X-Forwarded-For": "198.51.100.7"})
    status, body = await forged.post("/api/conversation", FORM)
    assert status == 429, body

    elsewhere = await proxied_desk.visitor("127.0.0.3")
    status, body = await elsewhere.post("/api/conversation", FORM)
    assert status == 201, body


async def test_files_keep_their_cache_headers_and_plain_http_goes_to_https(
    proxied_desk: ProxiedDesk,
):
    """Through the proxy, the page stays no-store and its versioned files cached for a year
    (the proxy adds nothing); /health answers; http:// is redirected to https://."""
    proxy = proxied_desk.proxy
    visitor = await proxied_desk.visitor("127.0.0.2")
    async with visitor.http.get(f"{proxy.url}/") as page:
        assert page.status == 200
        assert "no-store" in page.headers["Cache-Control"]
        html = await page.text()
    files = re.findall(r"/static/[\w-]+\.[0-9a-f]{16}\.\w+", html)
    assert any(f.endswith(".js") for f in files), html
    for url in set(files):
        async with visitor.http.get(f"{proxy.url}{url}") as response:
            assert response.status == 200, url
            assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            await response.read()

    async with visitor.http.get(f"{proxy.url}/health") as health:
        assert health.status == 200

    async with aiohttp.ClientSession() as plain:
        async with plain.get(f"{proxy.http_url}/?x=1", allow_redirects=False) as redirect:
            assert redirect.status in (301, 308)
            assert redirect.headers["Location"].startswith("https://127.0.0.1")
            assert redirect.headers["Location"].endswith("/?x=1")


def test_the_shipped_proxies_forward_to_the_portal_and_never_to_the_appservice_endpoint():
    """Only the homeserver may call the appservice endpoint; a public site must not reach it."""
    nginx, caddy = NGINX_SITE.read_text(), CADDYFILE.read_text()
    upstreams = re.findall(r"^\s*server\s+(\S+);", nginx, re.MULTILINE)
    upstreams += re.findall(r"^\s*reverse_proxy\s+(\S+)", caddy, re.MULTILINE)
    assert len(upstreams) == 2 and all(u == f"127.0.0.1:{PORTAL_PORT}" for u in upstreams)
    assert set(re.findall(r"proxy_pass\s+(\S+);", nginx)) == {"http://switchboard_portal"}
    assert str(APPSERVICE_PORT) in nginx and str(APPSERVICE_PORT) in caddy  # the warning
