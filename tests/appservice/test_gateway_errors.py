"""How the Matrix gateway reports the homeserver's failures to the core, against a real HTTP
server standing in for a homeserver: busy or restarting is a wait (retried without counting),
a refusal is a refusal (counted, then parked)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from aiohttp import web
from mautrix.appservice import AppServiceAPI
from mautrix.types import UserID

from appservice.config import generate
from appservice.matrix_gateway import MautrixGateway, MemoryASStateStore
from bridge.errors import TemporarilyUnavailable
from bridge.model import Visitor, VisitorId


async def _gateway_against(aiohttp_server, tmp_path: Path, answer: web.Response):
    async def busy(request: web.Request) -> web.Response:
        return answer

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", busy)
    server = await aiohttp_server(app)
    config = generate(
        tmp_path / "config.yaml",
        tmp_path / "registration.yaml",
        {"homeserver.address": str(server.make_url("")).rstrip("/")},
    )
    api = AppServiceAPI(
        base_url=config.homeserver.address,
        bot_mxid=UserID(config.bot_mxid),
        token=config.appservice.as_token,
        log=logging.getLogger("test.mau"),  # type: ignore[arg-type]
        state_store=MemoryASStateStore(),
    )
    return MautrixGateway(config, api), api


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, '{"errcode": "M_LIMIT_EXCEEDED", "error": "Too many", "retry_after_ms": 1500}'),
        (502, "<html>Bad gateway</html>"),  # the reverse proxy in front of a restarting server
        (503, '{"errcode": "M_UNKNOWN", "error": "overloaded"}'),
    ],
)
async def test_a_busy_or_restarting_homeserver_is_waited_for_not_a_refusal(
    aiohttp_server, tmp_path: Path, status: int, body: str
):
    answer = web.Response(status=status, text=body, content_type="application/json")
    gateway, api = await _gateway_against(aiohttp_server, tmp_path, answer)
    try:
        with pytest.raises(TemporarilyUnavailable):
            await gateway.create_puppet(Visitor(VisitorId("v1"), "Vera", None, 0.0))
    finally:
        await api.session.close()


async def test_a_refusal_is_not_a_wait(aiohttp_server, tmp_path: Path):
    answer = web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403)
    gateway, api = await _gateway_against(aiohttp_server, tmp_path, answer)
    try:
        with pytest.raises(Exception) as failure:
            await gateway.create_puppet(Visitor(VisitorId("v1"), "Vera", None, 0.0))
        assert not isinstance(failure.value, TemporarilyUnavailable)
    finally:
        await api.session.close()
