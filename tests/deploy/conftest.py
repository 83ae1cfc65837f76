"""Fixtures of the deploy tests: the e2e ones (Synapse, desks, people), the installed wheel, and
a desk behind a real nginx or Caddy."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from appservice.bootstrap import Switchboard
from harness.visitor import Visitor
from tests.deploy.servers import Proxy, free_port_v4_and_v6, need, start_caddy, start_nginx
from tests.desks import DeskFactory, free_port

PROXY = "127.0.0.1"  # the address the proxy connects to the portal from


@dataclasses.dataclass
class ProxiedDesk:
    """A Switchboard desk whose public_url is a proxy's; the only way in for visitors."""

    switchboard: Switchboard
    proxy: Proxy
    visitors: list[Visitor] = dataclasses.field(default_factory=list)

    async def visitor(self, address: str, headers: dict[str, str] | None = None) -> Visitor:
        """A visitor whose connections leave from ``address`` (any 127.x.y.z is this machine),
        sending ``headers`` with every request, over TLS checked against the proxy's CA."""
        connector = aiohttp.TCPConnector(
            local_addr=(address, 0), ssl=self.proxy.ssl_context(), force_close=False
        )
        session = aiohttp.ClientSession(
            connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True), headers=headers
        )
        visitor = Visitor(self.proxy.url, session)
        self.visitors.append(visitor)
        return await visitor.open()

    async def close(self) -> None:
        for visitor in self.visitors:
            await visitor.close()


@pytest.fixture(params=["nginx", "caddy"])
async def proxied_desk(
    request: pytest.FixtureRequest, sqlite_desks: DeskFactory, tmp_path: Path
) -> AsyncIterator[ProxiedDesk]:
    """A desk behind the shipped nginx site or Caddyfile; one new chat a minute per address."""
    need(request.param)  # before the desk starts
    https_port, portal_port = free_port_v4_and_v6(), free_port()
    switchboard = await sqlite_desks.start(
        portal={
            "port": portal_port,
            "public_url": f"https://127.0.0.1:{https_port}",
            "trusted_proxies": (PROXY,),
            "starts_per_minute": 1,
        }
    )
    start = start_nginx if request.param == "nginx" else start_caddy
    proxy = await asyncio.to_thread(start, tmp_path / request.param, portal_port, https_port)
    desk = ProxiedDesk(switchboard, proxy)
    yield desk
    await desk.close()  # before the proxy goes, so no visitor tries to reconnect meanwhile
    proxy.stop()
