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
import json
import os
import signal
import sys
from typing import Any

from aiohttp import web

from .settings import raise_open_files_limit


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=8 * 1024, receive_timeout=120)
    await ws.prepare(request)
    await ws.send_json({"type": "status", "conversation": {"status": "active"}})
    async for _ in ws:
        pass
    return ws


async def serve(port: int) -> None:
    raise_open_files_limit()
    app = web.Application()
    app.add_routes([web.get("/api/ws", websocket)])
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(payload: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()

    async def requests() -> None:
        while True:
            line = await reader.readline()
            if not line or json.loads(line).get("op") == "stop":
                return
            answer({"ok": True})

    try:
        answer({"ready": True, "pid": os.getpid()})
        served = asyncio.ensure_future(requests())
        stop = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({served, stop}, return_when=asyncio.FIRST_COMPLETED)
        served.cancel()
        stop.cancel()
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_ws", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
