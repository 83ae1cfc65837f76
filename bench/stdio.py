"""The line protocol a benchmark's helper process speaks on stdin/stdout.

The benchmark writes one JSON request per line; the helper answers each with one JSON line,
after a first ``{"ready": true, "pid": …}``. ``{"op": "stop"}``, end of input, SIGTERM or SIGINT
ends it. Kept apart from ``common`` so the bare server imports nothing it does not need (its
memory is what it measures).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


def _answer(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


async def serve_requests(handle: Handler) -> None:
    """Answer requests with ``handle`` until told to stop; a failing request gets an error."""
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def requests() -> None:
        while True:
            line = await reader.readline()
            if not line:
                return  # the benchmark went away
            request = json.loads(line)
            if request.get("op") == "stop":
                return
            try:
                _answer(await handle(request))
            except Exception as e:
                log.exception("request %s failed", request.get("op"))
                _answer({"error": repr(e)})

    _answer({"ready": True, "pid": os.getpid()})
    served = asyncio.ensure_future(requests())
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({served, stop}, return_when=asyncio.FIRST_COMPLETED)
    served.cancel()
    stop.cancel()
