"""The direct path of ``bench.idle_sockets``: a bare aiohttp websocket server, nothing else.

    python -m bench.bare_ws --port 12345

Each socket gets the portal's settings (heartbeat 30 s, 8 KiB frames, 120 s receive timeout),
one JSON frame on connect (the portal sends the conversation's status) and a read loop; no
session, database, hub or writer task. Prints ``{"ready": true, "pid": …}``, then answers JSON
lines on stdin like ``bench/runner.py`` (``{"op": "stop"}`` or end of input stops it).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from aiohttp import web

from .settings import raise_open_files_limit
from .stdio import serve_requests


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=8 * 1024, receive_timeout=120)
    await ws.prepare(request)
    await ws.send_json({"type": "status", "conversation": {"status": "active"}})
    async for _ in ws:
        pass
    return ws


async def _ok(_request: dict[str, Any]) -> dict[str, Any]:
    return {"ok": True}


async def serve(port: int) -> None:
    raise_open_files_limit()
    app = web.Application()
    app.add_routes([web.get("/api/ws", websocket)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await serve_requests(_ok)
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_ws", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
