"""Idle visitor websockets on one portal process: memory per socket and CPU per minute.

The portal runs in its own process (``bench/runner.py``: a whole Switchboard, as in
production), so its RSS is its own. It gets ``--sockets`` visitors (10,000), each with a portal
session and an open conversation, inserted straight through its store (``active`` by
default: an advisor is "in" a made-up room, so nothing goes to Matrix); then this process opens
one websocket per visitor (each sends the session cookie and the portal's Origin, as the page
does, and waits for its first frame: subscribed and idle) and leaves them idle.

Measured from ``/proc/<pid>``: VmRSS before and after opening the sockets (KB = 1,000 bytes
per socket), and CPU ticks (user + system) over ``--seconds`` of idleness with the sockets open
(``--bare-seconds`` for the bare server, whose only idle work is the 30 s heartbeat: one round
is enough, and it keeps the default run near 3 minutes) and, for the portal, over
``--baseline`` seconds before they were opened (what the process costs with that many open
conversations and no socket). The direct path, in the same run: a bare aiohttp
websocket server (``bench/bare_ws.py``) with the portal's socket settings holding as many
sockets.

Target: ≤ 20 KB of RSS per idle socket.

    .venv/bin/python -m bench.idle_sockets [--sockets 10000] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from dataclasses import dataclass, field
from typing import Sequence

import aiohttp

from .common import (
    Lab,
    ServiceProcess,
    cpu_seconds,
    free_port,
    ratio,
    rss_kib,
    run,
    table,
    verdict,
)
from .settings import raise_open_files_limit

TARGET_KB = 20.0


@dataclass
class Holding:
    """What one server process cost while holding the sockets."""

    name: str
    sockets: int = 0
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    rss_end_kib: int = 0
    open_seconds: float = 0.0
    idle_seconds: float = 0.0
    idle_cpu: float = 0.0
    still_open: int = 0
    frames_after_first: int = 0
    baseline_seconds: float = 0.0
    baseline_cpu: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def kb_per_socket(self) -> float:
        return (self.rss_after_kib - self.rss_before_kib) * 1024 / 1000 / self.sockets

    @property
    def cpu_per_minute(self) -> float:
        return self.idle_cpu / self.idle_seconds * 60

    @property
    def baseline_cpu_per_minute(self) -> float:
        if not self.baseline_seconds:
            return 0.0
        return self.baseline_cpu / self.baseline_seconds * 60


class IdleSockets:
    """Websockets held open from this process, each read by its own small task (so pings
    are answered, as a browser does)."""

    def __init__(self) -> None:
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar()
        )
        self.sockets: list[aiohttp.ClientWebSocketResponse] = []
        self.readers: list[asyncio.Task[None]] = []
        self.frames = 0

    async def open(
        self,
        url: str,
        origin: str,
        cookies: Sequence[str | None],
        *,
        concurrency: int = 100,
        timeout: float = 60.0,
    ) -> None:
        gate = asyncio.Semaphore(concurrency)
        loop = asyncio.get_running_loop()

        async def read(ws: aiohttp.ClientWebSocketResponse, first: asyncio.Future[None]) -> None:
            try:
                async for message in ws:
                    if message.type is aiohttp.WSMsgType.TEXT:
                        if first.done():
                            self.frames += 1
                        else:
                            first.set_result(None)
            finally:
                if not first.done():
                    first.set_exception(RuntimeError(f"closed before a frame: {ws.close_code}"))

        async def one(cookie: str | None) -> None:
            async with gate:
                headers = {"Cookie": cookie} if cookie else {}
                ws = await self.http.ws_connect(
                    url,
                    origin=origin,
                    headers=headers,
                    timeout=aiohttp.ClientWSTimeout(ws_close=10),
                )
                self.sockets.append(ws)
                first: asyncio.Future[None] = loop.create_future()
                self.readers.append(asyncio.create_task(read(ws, first)))
                await asyncio.wait_for(first, timeout)

        await asyncio.gather(*(one(c) for c in cookies))

    def still_open(self) -> int:
        return sum(1 for ws in self.sockets if not ws.closed)

    async def close(self) -> None:
        for start in range(0, len(self.sockets), 500):
            await asyncio.gather(
                *(ws.close() for ws in self.sockets[start : start + 500]),
                return_exceptions=True,
            )
        for task in self.readers:
            task.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await self.http.close()
        self.sockets.clear()
        self.readers.clear()


async def settle(seconds: float) -> None:
    gc.collect()
    await asyncio.sleep(seconds)


async def hold(
    holding: Holding,
    server: ServiceProcess,
    url: str,
    origin: str,
    cookies: Sequence[str | None],
    seconds: float,
) -> None:
    pid = server.pid
    await settle(3)
    holding.rss_before_kib = rss_kib(pid)
    sockets = IdleSockets()
    try:
        began = time.perf_counter()
        await sockets.open(url, origin, cookies)
        holding.open_seconds = time.perf_counter() - began
        holding.sockets = len(sockets.sockets)
        await settle(5)
        holding.rss_after_kib = rss_kib(pid)
        cpu = cpu_seconds(pid)
        began = time.perf_counter()
        await asyncio.sleep(seconds)
        holding.idle_cpu = cpu_seconds(pid) - cpu
        holding.idle_seconds = time.perf_counter() - began
        holding.rss_end_kib = rss_kib(pid)
        holding.still_open = sockets.still_open()
        holding.frames_after_first = sockets.frames
    finally:
        await sockets.close()
    print(
        f"  {holding.name}: {holding.sockets:,} sockets opened in {holding.open_seconds:.1f} s, "
        f"RSS {holding.rss_before_kib / 1024:.0f} → {holding.rss_after_kib / 1024:.0f} MiB, "
        f"{holding.idle_cpu:.2f} s CPU in {holding.idle_seconds:.0f} s idle, "
        f"{holding.still_open:,} still open"
    )


async def bench(args: argparse.Namespace, lab: Lab) -> None:
    limit = raise_open_files_limit()
    if limit < args.sockets + 200:
        raise SystemExit(
            f"this process may open {limit} files; {args.sockets} sockets need more "
            "(raise the hard limit: ulimit -Hn)"
        )
    n = args.sockets

    # the direct path: a bare aiohttp websocket server
    port = free_port()
    bare = await ServiceProcess.launch(lab, "bench.bare_ws", "--port", str(port))
    direct = Holding("bare aiohttp")
    url = f"http://127.0.0.1:{port}/api/ws"
    await hold(direct, bare, url, f"http://127.0.0.1:{port}", [None] * n, args.bare_seconds)
    await bare.stop()

    # the portal: a whole Switchboard in its own process
    desk = await lab.remote_switchboard()
    seeded = await desk.call("seed_idle", count=n, state=args.state, timeout=600)
    print(
        f"  portal: {n:,} visitors with {args.state} conversations stored in "
        f"{seeded['seconds']:.1f} s"
    )
    portal = Holding("Switchboard portal")
    # with no socket open: what the process costs with that many open conversations
    await settle(2)
    cpu, began = cpu_seconds(desk.pid), time.perf_counter()
    await asyncio.sleep(args.baseline)
    portal.baseline_cpu = cpu_seconds(desk.pid) - cpu
    portal.baseline_seconds = time.perf_counter() - began
    public = desk.config.portal.public_url
    await hold(
        portal,
        desk,
        f"{public}/api/ws",
        public,
        [f"sb_session={token}" for token in seeded["tokens"]],
        args.seconds,
    )
    await desk.stop()

    print(
        f"\n{n:,} idle websockets held idle for {args.seconds:.0f} s on the portal, "
        f"{args.bare_seconds:.0f} s on the bare server (portal conversations: {args.state}). "
        "KB = 1,000 bytes; CPU in seconds per minute (60 = one core busy).\n"
    )
    rows = []
    for h in (direct, portal):
        rows.append(
            [
                h.name,
                h.sockets,
                f"{h.rss_before_kib / 1024:.0f}",
                f"{h.rss_after_kib / 1024:.0f}",
                f"{h.rss_end_kib / 1024:.0f}",
                f"{h.kb_per_socket:.1f}",
                f"{ratio(h.kb_per_socket, direct.kb_per_socket):.2f}",
                f"{h.cpu_per_minute:.2f}",
                f"{h.baseline_cpu_per_minute:.2f}" if h.baseline_seconds else "",
                h.still_open,
            ]
        )
    print(
        table(
            [
                "server",
                "sockets",
                "RSS before MiB",
                "after",
                "end",
                "KB/socket",
                "× bare",
                "CPU s/min",
                "CPU s/min, no sockets",
                "still open",
            ],
            rows,
        )
    )
    print(
        f"\nportal: {portal.kb_per_socket:.1f} KB per idle socket (target ≤ {TARGET_KB:.0f} KB) "
        f"{verdict(portal.kb_per_socket <= TARGET_KB)}; "
        f"{ratio(portal.kb_per_socket, direct.kb_per_socket):.2f}× the bare aiohttp socket; "
        f"idle CPU {portal.cpu_per_minute:.2f} s/min "
        f"({portal.baseline_cpu_per_minute:.2f} s/min of it before any socket was open) vs "
        f"{direct.cpu_per_minute:.2f} s/min bare"
    )
    for h in (direct, portal):
        if h.still_open < h.sockets:
            print(f"{h.name}: {h.sockets - h.still_open} sockets were closed during the idle time")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.idle_sockets", description=__doc__)
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="idle time measured on the portal"
    )
    parser.add_argument(
        "--bare-seconds",
        type=float,
        default=30.0,
        help="idle time measured on the bare server (≥ 30: one heartbeat round)",
    )
    parser.add_argument(
        "--baseline",
        type=float,
        default=5.0,
        help="seconds of portal CPU measured before any socket is open",
    )
    parser.add_argument(
        "--state",
        choices=("active", "ended"),
        default="active",
        help="the seeded conversations: open with an advisor, or already ended",
    )
    return run(bench, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
