"""Shared set-up for the benchmarks: a throw-away Synapse, Switchboard on SQLite, people, tables.

Each benchmark module defines ``async def bench(args, lab)`` and ends with
``sys.exit(run(bench, parser.parse_args()))``. :func:`run` makes a temporary directory, starts a
:class:`appservice.local_homeserver.LocalHomeserver` there with Switchboard's registration (in the
main thread, so Synapse dies with us even on SIGKILL), runs the benchmark, and always stops every
Switchboard, client and Synapse it started, also on Ctrl-C and SIGTERM.

The people are the ones the end-to-end tests use too (the dev-only package ``harness/``; the
benchmarks import nothing from ``tests/``): advisors and plain Matrix users are
:class:`harness.advisor.AdvisorClient` (matrix-nio), visitors are
:class:`harness.visitor.Visitor` (the portal's HTTP API and websocket).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any, Awaitable, Callable, Iterable, Sequence

from appservice.bootstrap import Switchboard
from appservice.config import Config, generate
from appservice.local_homeserver import LocalHomeserver, die_with_parent
from harness.advisor import AdvisorClient
from harness.visitor import Visitor

from .settings import configure

PASSWORD = "bench-password"

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tag() -> str:
    """A short unique marker, so a message body never matches another one by substring."""
    return uuid.uuid4().hex[:10]


# -- /proc readings ------------------------------------------------------------------------

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads) so far; ``None``: this one."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": field 3 onwards
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def rss_kib(pid: int | None = None) -> int:
    """Resident set size (VmRSS) in KiB."""
    for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class CpuMeter:
    """CPU seconds spent by named processes between ``start()`` and ``stop()``."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self._began: dict[str, float] = {}
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._began = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        self.used = {name: cpu_seconds(pid) - self._began[name] for name, pid in self.pids.items()}
        return self.used


# -- servers in their own processes -------------------------------------------------------


class ServiceProcess:
    """A ``python -m <module>`` child that prints one JSON line when ready, then answers one
    JSON line per JSON request line on stdin; ``{"op": "stop"}`` or end of input stops it.

    It runs in its own session (Ctrl-C reaches the benchmark only, which stops it in order) and
    gets SIGTERM from Linux if the benchmark dies (``die_with_parent``).
    """

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path
        self.ready: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def launch(
        cls, lab: Lab, module: str, *argv: str, timeout: float = 120.0
    ) -> ServiceProcess:
        lab.count += 1
        log_path = lab.root / f"{module.rsplit('.', 1)[-1]}-{lab.count}.log"
        with log_path.open("ab") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                *argv,
                cwd=REPO,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                limit=64 * 1024 * 1024,  # answers may be long lines (session tokens)
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        child = cls(process, log_path)
        lab.children.append(child)
        try:
            child.ready = await asyncio.wait_for(child._read(), timeout)
        except Exception as e:
            raise RuntimeError(f"{module} did not start: {e!r}\n{child.log_tail()}") from e
        if not child.ready.get("ready"):
            raise RuntimeError(f"{module} did not start: {child.ready}\n{child.log_tail()}")
        return child

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await self.process.stdout.readline()
        if not line:
            await self.process.wait()
            raise RuntimeError(f"the process exited with code {self.process.returncode}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def call(self, op: str, timeout: float = 300.0, **params: Any) -> dict[str, Any]:
        """Run one operation in the child and return its JSON answer."""
        assert self.process.stdin is not None
        async with self._lock:
            self.process.stdin.write(json.dumps({"op": op, **params}).encode() + b"\n")
            await self.process.stdin.drain()
            answer = await asyncio.wait_for(self._read(), timeout)
        if "error" in answer:
            raise RuntimeError(f"{op} failed in the child process: {answer['error']}")
        return answer

    async def stop(self, timeout: float = 15.0) -> None:
        """Ask it to stop, then SIGTERM, then SIGKILL. Idempotent."""
        if self.process.returncode is not None:
            return
        try:
            assert self.process.stdin is not None
            self.process.stdin.write(b'{"op": "stop"}\n')
            await self.process.stdin.drain()
            self.process.stdin.close()
            await asyncio.wait_for(self.process.wait(), timeout)
            return
        except (Exception, asyncio.CancelledError):
            pass
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.process.returncode is not None:
                return
            try:
                self.process.send_signal(sig)
                await asyncio.wait_for(self.process.wait(), timeout)
            except ProcessLookupError:
                return
            except (Exception, asyncio.CancelledError):
                continue


class RemoteSwitchboard(ServiceProcess):
    """Switchboard in its own process (``bench/runner.py``), as in production.

    The benchmark adds advisors and asks where a conversation went through the pipe;
    everything visitors and advisors do goes over HTTP and Matrix as usual.
    """

    config: Config

    @classmethod
    async def start_in(
        cls, lab: Lab, *, count_sql: bool = False, **settings: Any
    ) -> RemoteSwitchboard:
        """``count_sql``: the runner counts every SQL statement it runs (its ``sql`` op)."""
        settings.setdefault("database", str(lab.root / f"switchboard-{lab.count + 1}.db"))
        settings.setdefault("portal_port", free_port())
        config = configure(lab.config, **settings)
        child = await cls.launch(
            lab,
            "bench.runner",
            "--config",
            str(lab.root / "config.yaml"),
            "--settings",
            json.dumps(settings),
            *(["--count-sql"] if count_sql else []),
        )
        assert isinstance(child, RemoteSwitchboard)
        child.config = config
        return child

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        """Where a conversation stands: ``status``, ``room_id``, ``advisor``, ``puppet``."""
        return await self.call("conversation", id=conversation_id)


Desk = Switchboard | RemoteSwitchboard


class Lab:
    """One benchmark's world, all of it under ``root``: a Synapse, Switchboards, people."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = LocalHomeserver(
            root / "synapse", for_tests=True, appservice_registrations=[root / "registration.yaml"]
        )
        self._config: Config | None = None
        self._switchboards: list[Switchboard] = []
        self.children: list[ServiceProcess] = []
        self._clients: list[AdvisorClient] = []
        self._visitors: list[Visitor] = []
        self.count = 0

    @property
    def config(self) -> Config:
        """The Switchboard config the homeserver's registration was generated from."""
        assert self._config is not None, "start_homeserver() first"
        return self._config

    @property
    def synapse_pid(self) -> int:
        """The Synapse process: the one whose command line names our homeserver.yaml."""
        wanted = str(self.server.config_path).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if wanted in argv and b"synapse.app.homeserver" in argv:
                return int(proc.name)
        raise RuntimeError("Synapse is not running")

    def start_homeserver(self) -> None:
        """Generate Switchboard's config and registration, then start Synapse (blocking)."""
        as_port = free_port()
        self._config = generate(
            self.root / "config.yaml",
            self.root / "registration.yaml",
            {
                "homeserver.address": self.server.url,
                "homeserver.domain": self.server.server_name,
                "appservice.address": f"http://127.0.0.1:{as_port}",
                "appservice.port": as_port,
                "logging.root.level": "WARNING",
                "metrics.enabled": False,  # several desks at once: one port each otherwise
            },
        )
        self.server.start()

    async def switchboard(self, **settings: Any) -> Switchboard:
        """Start a Switchboard in this process (one at a time: they share the AS port)."""
        self.count += 1
        settings.setdefault("database", self.root / f"switchboard-{self.count}.db")
        settings.setdefault("portal_port", free_port())
        switchboard = Switchboard(configure(self.config, **settings))
        await switchboard.start()
        self._switchboards.append(switchboard)
        return switchboard

    async def remote_switchboard(
        self, *, count_sql: bool = False, **settings: Any
    ) -> RemoteSwitchboard:
        """Start a Switchboard in its own process (see :class:`RemoteSwitchboard`)."""
        return await RemoteSwitchboard.start_in(self, count_sql=count_sql, **settings)

    def new_user(self, name: str) -> str:
        localpart = f"{name}-{tag()}"
        return self.server.register_user(localpart, PASSWORD, displayname=name.capitalize())

    async def client(self, name: str) -> AdvisorClient:
        """A plain Matrix user with a syncing matrix-nio client (the direct path)."""
        client = await AdvisorClient.login(self.server.url, self.new_user(name), PASSWORD)
        self._clients.append(client)
        return client

    async def advisor(
        self, desk: Desk, name: str, *, capacity: int | None = None
    ) -> AdvisorClient:
        """A logged-in advisor of ``desk``, available, with ``capacity`` if given."""
        client = await self.client(name)
        if isinstance(desk, RemoteSwitchboard):
            await desk.call(
                "add_advisor", mxid=client.user_id, name=name.capitalize(), capacity=capacity
            )
        else:
            # no welcome chat: a one-time setup of the desk, not what any benchmark measures
            # (and its requests would land in the measured part)
            await desk.advisors.add(client.user_id, name.capitalize(), welcome=False)
            if capacity is not None:
                await desk.advisors.set_capacity(client.user_id, capacity)
            await desk.advisors.set_available(client.user_id, True)
        return client

    async def offered(
        self, desk: Desk, conversation_id: str, timeout: float = 60.0
    ) -> dict[str, Any]:
        """Where a new conversation went once it has its room and an advisor: ``status``,
        ``room_id``, ``advisor``, ``puppet``. The portal answers a visitor's start before the
        room exists (the outbox makes it), so set-up code waits here; polled, not timed."""
        deadline = time.monotonic() + timeout
        while True:
            if isinstance(desk, RemoteSwitchboard):
                stored = await desk.conversation(conversation_id)
            else:
                found = await desk.store.get_conversation(conversation_id)  # type: ignore[arg-type]
                stored = {
                    "status": found.status.value if found else None,
                    "room_id": found.room_id if found else None,
                    "advisor": found.advisor if found else None,
                    "puppet": found.puppet if found else None,
                }
            if stored.get("room_id") and stored.get("advisor"):
                return stored
            if time.monotonic() > deadline:
                raise TimeoutError(f"conversation {conversation_id} not offered: {stored}")
            await asyncio.sleep(0.05)

    async def visitor(self, desk: Desk) -> Visitor:
        """A visitor with a portal session (not started yet)."""
        visitor = await Visitor(desk.config.portal.public_url).open()
        self._visitors.append(visitor)
        return visitor

    async def close(self) -> None:
        """Stop every visitor, client and Switchboard (Synapse is stopped by :func:`run`)."""
        for visitor in self._visitors:
            try:
                await asyncio.wait_for(visitor.close(), 10)
            except (Exception, asyncio.CancelledError):
                log.debug("closing a visitor failed", exc_info=True)
        for client in self._clients:
            try:
                await asyncio.wait_for(client.close(), 10)
            except (Exception, asyncio.CancelledError):
                log.debug("closing a client failed", exc_info=True)
        while self._switchboards:
            try:
                await self._switchboards.pop().stop()
            except (Exception, asyncio.CancelledError):
                log.warning("stopping a Switchboard failed", exc_info=True)
        while self.children:
            await self.children.pop().stop()


BenchMain = Callable[[argparse.Namespace, Lab], Awaitable[None]]


def _sigterm_as_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


async def _guarded(main: BenchMain, args: argparse.Namespace, lab: Lab) -> None:
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        await main(args, lab)
    finally:
        await lab.close()


def run(main: BenchMain, args: argparse.Namespace, *, homeserver: bool = True) -> int:
    """Run one benchmark in a fresh temporary directory; always clean up. Exit status 0 unless
    it crashed or was interrupted (a missed target is printed, not an error)."""
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("mau", "aiohttp", "nio", "alembic", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    print(machine_line())
    print(load_line("start"))
    keep = os.environ.get("BENCH_KEEP_DIR")
    with tempfile.TemporaryDirectory(prefix="sb-bench-") as tmp:
        root = Path(keep) if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        lab = Lab(root)
        try:
            if homeserver:
                began = time.perf_counter()
                lab.start_homeserver()
                print(f"Synapse up at {lab.server.url} in {time.perf_counter() - began:.1f} s")
            asyncio.run(_guarded(main, args, lab))
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("\ninterrupted: everything started was stopped", file=sys.stderr)
            return 130
        finally:
            lab.server.stop()
            print(load_line("end"))
    return 0


def load_line(when: str) -> str:
    """The machine's load average: other work running beside a benchmark skews its figures."""
    one, five, _ = os.getloadavg()
    return f"load average at {when}: {one:.2f} (1 min), {five:.2f} (5 min)"


# -- numbers and tables ----------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0–100), linear between the closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = math.floor(k), math.ceil(k)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(value: float, reference: float) -> float:
    return value / reference if reference else math.inf


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A plain text table; floats get 2 decimals unless already formatted as strings."""
    rows_list = [list(row) for row in rows]
    cells = [[_cell(c) for c in row] for row in rows_list]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    for row, raw in zip(cells, rows_list, strict=True):
        lines.append(
            "  ".join(
                c.rjust(w) if i > 0 and _numeric(v) else c.ljust(w)
                for i, (c, v, w) in enumerate(zip(row, raw, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def _numeric(value: Any) -> bool:
    """Numbers (and numbers already formatted, like "1.10" or "+2") align right."""
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value).rstrip("%×x"))
    except ValueError:
        return False
    return True


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def machine_line() -> str:
    """What the figures were measured on, printed at the top of every benchmark."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import synapse

        # Synapse appends the git state of the directory it is installed under; drop it
        synapse_version = synapse.__version__.split()[0]
    except Exception:  # pragma: no cover - only for the header
        synapse_version = "?"
    return (
        f"machine: {os.cpu_count()} CPUs ({model}), Python {platform.python_version()}, "
        f"Synapse {synapse_version}"
    )
