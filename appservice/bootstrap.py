"""The one place that builds Switchboard: store, Matrix gateway, services, bot, web apps."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import signal
from collections.abc import Callable

import aiohttp
from aiohttp import web
from mautrix.appservice import AppServiceAPI
from mautrix.types import UserID
from mautrix.util.async_db import Database

from bridge.desk import DeskSettings, build_desk
from bridge.errors import TemporarilyUnavailable
from bridge.events import DomainEvent
from bridge.model import RoomId, RoutingSettings
from bridge.ports import Clock, VisitorChannel
from bridge.services.callsigns import CallSignSettings
from bridge.services.directory import DirectoryService
from web_portal.app import PortalSettings, create_app
from web_portal.hub import VisitorHub

from .call_signs import CallSignQueries
from .catch_up import CatchUp, HomeserverWatch
from .clock import WallClock
from .commands import CommandRegistry
from .commands import call_signs as call_sign_commands
from .commands import desk as desk_commands
from .commands import directory as directory_commands
from .commands import groups as group_commands
from .commands import outbox as outbox_commands
from .config import Config
from .db import (
    AppserviceLog,
    SqlStore,
    close_database,
    create_database,
    parse_database_url,
    start_database,
)
from .db.fanout import PgFanout
from .db.gauges import read_counts
from .db.lockfile import SingleProcessLock
from .events import MatrixEventHandler
from .matrix_gateway import MautrixGateway, MemoryASStateStore
from .metrics import Metrics
from .startup import (
    Readiness,
    StartupError,
    check_sqlite_file,
    database_place,
    database_trouble,
    keep_trying,
    listen_error,
    lock_error,
    namespace_problem,
    ping_endpoint,
    reach_homeserver,
)
from .transactions import AppserviceEndpoint

log = logging.getLogger(__name__)

#: For fault tests only: "<EventType>:<n>" SIGKILLs the process right after the n-th commit that
#: raised that event, before any handler runs (the deterministic crash of tests/faults).
CRASH_HOOK = "SWITCHBOARD_FAULT_KILL_AFTER_COMMIT"


def _crash_after(spec: str) -> Callable[[list[DomainEvent]], None]:
    kind, _, count = spec.partition(":")
    left = [int(count or 1)]

    def hook(events: list[DomainEvent]) -> None:
        if any(type(e).__name__ == kind for e in events):
            left[0] -= 1
            if left[0] == 0:
                log.warning("%s: killed right after a commit that raised %s", CRASH_HOOK, kind)
                os.kill(os.getpid(), signal.SIGKILL)

    return hook


def _version() -> str:
    try:
        return importlib.metadata.version("switchboard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


TICK_SECONDS = 1.0
PING_SECONDS = 5.0
TXN_LOG_KEEP = 7 * 24 * 3600.0
OUTBOX_KEEP = 24 * 3600.0  # done rows: for reading what happened, then pruned


class Switchboard:
    """Everything wired together; ``await start()``, then ``await stop()``."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or WallClock()
        self._runners: list[web.AppRunner] = []
        self._ticker: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._repair: asyncio.Task[None] | None = None
        self._lock: SingleProcessLock | None = None
        self._http: aiohttp.ClientSession | None = None
        self._db: Database | None = None
        self.hub = VisitorHub()
        self._fanout: PgFanout | None = None
        self._presence_asked_at = -1  # the catch-up generation presence was last asked after
        self.readiness = Readiness()
        self.metrics = Metrics(
            _version(), self.readiness.not_ready, lambda: len(self.hub), self.clock.now
        )

    async def start(self) -> None:
        """Listen, then wait for the database, the homeserver and the bot's registration
        (retrying what may come back by itself), then serve. Returns once ready.

        Raises:
            StartupError: an operator's mistake (a port in use, a registration the homeserver
                has not loaded…); the message says what to fix.
        """
        await self.listen()
        await self.become_ready()

    async def listen(self) -> None:
        """Build everything and open both ports; ``/health`` and ``/ready`` answer from now
        on, and the rest waits (503) for :meth:`become_ready`. Nothing here waits for the
        database or the homeserver."""
        config = self.config
        if config.portal.port == config.appservice.port:
            raise StartupError(
                f"portal.port and appservice.port are both {config.portal.port}: give each "
                "listener its own port"
            )
        for section in ("portal", "appservice"):
            if config.metrics.enabled and config.metrics.port == getattr(config, section).port:
                raise StartupError(
                    f"metrics.port and {section}.port are both {config.metrics.port}: give "
                    "each listener its own port"
                )
        db_url = parse_database_url(config.database_url)
        postgres = db_url.dialect == "postgres"
        if db_url.sqlite_path is not None:
            check_sqlite_file(db_url.sqlite_path)
            # one process only: its dispatcher owns every outbox row (and clears old claims)
            self._lock = SingleProcessLock(db_url.sqlite_path)
            try:
                self._lock.acquire()
            except OSError as e:
                self._lock = None
                raise lock_error(db_url.sqlite_path, e) from None
        self._db = create_database(config.database_url)
        db = self._db
        channel_name = PgFanout.channel_name(db_url) if postgres else None
        self.store = SqlStore(db, notify_channel=channel_name)
        self.metrics.read_from(lambda: read_counts(db, self.clock.now()), self.store.advisors)
        channel: VisitorChannel = self.hub
        if postgres:
            # several processes may share this database: events reach every process's pages,
            # and new outbox rows wake every process's dispatcher
            self._fanout = PgFanout(db_url, db, self.store, self.hub, self._wake_dispatcher)
            channel = self._fanout
        self.watch = HomeserverWatch(self.clock)
        self._http = aiohttp.ClientSession(trace_configs=[self.watch.trace_config()])
        api = AppServiceAPI(
            base_url=config.homeserver.address,
            bot_mxid=UserID(config.bot_mxid),
            token=config.appservice.as_token,
            log=logging.getLogger("mau.as"),  # type: ignore[arg-type]
            state_store=MemoryASStateStore(),
            client_session=self._http,
        )
        self.gateway = MautrixGateway(config, api)
        topics = config.portal.topics
        self.desk = build_desk(
            self.store,
            self.gateway,
            channel,
            self.clock,
            DeskSettings(
                topics=topics,
                routing=RoutingSettings(config.routing.capacity, config.routing.invite_timeout),
                abandon_after=config.routing.abandon_after,
                call_signs=CallSignSettings(
                    max_open_per_server=config.directory.max_open_per_server,
                    proof_of_life=config.directory.proof_of_life,
                ),
            ),
            self.metrics,
        )
        crash_after = os.environ.get(CRASH_HOOK)
        if crash_after:
            self.desk.uow.after_commit.append(_crash_after(crash_after))
        self.queue = self.desk.queue
        self.visitors = self.desk.visitors
        self.rooms = self.desk.rooms
        self.advisors = self.desk.advisors
        commands = CommandRegistry()
        desk_commands.register(commands, self.desk, default_capacity=config.routing.capacity)
        outbox_commands.register(commands, self.store.outbox, self.clock, self._wake_dispatcher)
        group_commands.register(commands, self.desk.groups)
        call_sign_commands.register(commands, self.desk.call_signs, self.gateway)
        directory_commands.register(
            commands,
            self.desk.space_repair,
            DirectoryService(self.store, self.desk.topics, self.desk.call_signs),
        )
        self.call_sign_queries = CallSignQueries(config, self.desk.call_signs, self.gateway)
        events = MatrixEventHandler(config, self.desk, commands)
        self.txn_log = AppserviceLog(db, self.clock)
        self.endpoint = AppserviceEndpoint(
            config.appservice.hs_token,
            self.txn_log,
            events,
            self.watch,
            not_ready=self.readiness.not_ready,
            report=self.metrics.transaction,
            directory=self.call_sign_queries,
        )
        self.catch_up = CatchUp(self.gateway.bot.api, self._served_rooms, self.endpoint)
        self.endpoint.read_back = self.catch_up.events_since
        portal = create_app(
            self.visitors,
            self.hub,
            PortalSettings(
                public_url=config.portal.public_url,
                allowed_origins=config.portal.allowed_origins,
                org_name=config.portal.org_name,
                topics=topics,
                trusted_proxies=config.portal.trusted_proxies,
                starts_per_minute=config.portal.starts_per_minute,
                secret=config.portal.secret,
                messages_per_minute=config.portal.messages_per_minute,
                message_burst=config.portal.message_burst,
                typing_per_minute=config.portal.typing_per_minute,
                typing_burst=config.portal.typing_burst,
                searches_per_minute=config.portal.searches_per_minute,
                search_burst=config.portal.search_burst,
            ),
            not_ready=self.readiness.not_ready,
            reports=self.metrics,
        )
        await self._serve(
            self.endpoint.app(), config.appservice.hostname, config.appservice.port, "appservice"
        )
        await self._serve(portal, config.portal.hostname, config.portal.port, "portal")
        if config.metrics.enabled:
            await self._serve(
                self.metrics.app(), config.metrics.hostname, config.metrics.port, "metrics"
            )
            log.info(
                "metrics on http://%s:%d/metrics", config.metrics.hostname, config.metrics.port
            )
        log.info(
            "listening: portal on %s:%d, appservice endpoint on %s:%d; /ready says when "
            "Switchboard serves",
            config.portal.hostname,
            config.portal.port,
            config.appservice.hostname,
            config.appservice.port,
        )

    async def become_ready(self) -> None:
        """Wait for the database and the homeserver, start the workers, then serve."""
        config = self.config
        await self._open_database()
        self.call_sign_queries.ready()
        last_push = await self.txn_log.last_transaction_at()
        if last_push is not None:
            # the homeserver may have restarted while we were down, losing what it held for us
            self.watch.suspect_gap("Switchboard started", since=last_push)
        if self._fanout is not None:
            await self._fanout.start()
        await self._prepare_bot()
        if self._fanout is None:
            # one process only: a claim still held is from before a crash or a restart
            await self.store.outbox.release_claims()
        await self.visitors.watch_queued()
        self._dispatcher = asyncio.create_task(self.desk.outbox.run_forever())
        self._ticker = asyncio.create_task(self._tick_forever())
        # once per start, not a sweep: drift after this waits for an admin's !directory repair
        self._repair = asyncio.create_task(self._repair_spaces())
        self.readiness.set_ready()
        # after the homeserver failed to push to us (we were down or starting), it waits up to
        # minutes before trying again: a ping ends that wait now that we accept transactions
        await self._ping_after_start()
        # after the ping, which names a registration made from another config (another
        # hs_token would also make the homeserver's question below fail)
        if await self.call_sign_queries.namespace_missing():
            raise namespace_problem(config)
        log.info(
            "Switchboard is ready: portal %s, appservice endpoint %s:%d",
            config.portal.public_url,
            config.appservice.hostname,
            config.appservice.port,
        )

    async def _open_database(self) -> None:
        assert self._db is not None
        db, url = self._db, self.config.database_url
        db_url = parse_database_url(url)
        self.readiness.waiting(f"database {database_place(db_url)}")
        await keep_trying(
            f"database {database_place(db_url)}",
            lambda: start_database(db, url),
            database_trouble(db_url),
            cap=self.config.database_retry_max_delay,
            readiness=self.readiness,
        )

    async def _serve(self, app: web.Application, host: str, port: int, section: str) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        self._runners.append(runner)
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            raise listen_error(e, host, port, section) from None

    async def _prepare_bot(self) -> None:
        bot = self.gateway.bot
        await reach_homeserver(
            self.config, bot, self.readiness, self.config.homeserver.retry_max_delay
        )
        try:
            await bot.set_displayname(self.config.appservice.bot_displayname)
        except Exception:
            log.warning("could not set the bot's display name", exc_info=True)

    async def _ping_after_start(self) -> None:
        """Ask the homeserver to ping our endpoint: it ends the homeserver's back-off (a
        failure that may pass is tried again within seconds, see ``ping_endpoint``), and its
        failure tells a registration made from another config (a StartupError)."""
        await ping_endpoint(self.config, self.gateway.bot)

    async def _served_rooms(self) -> list[RoomId]:
        """The rooms whose events the desk acts on: open conversations, advisors' chats."""
        rooms = [c.room_id for c in await self.store.open_conversations() if c.room_id]
        rooms += [a.control_room for a in await self.store.advisors() if a.control_room]
        return list(dict.fromkeys(rooms))

    def _wake_dispatcher(self) -> None:
        if self._dispatcher is not None:
            self.desk.outbox.wake()

    async def _ping_homeserver(self) -> None:
        """Ask the homeserver to ping us: that also resets its back-off of pushes to us.

        After a restart or a network blip the homeserver may wait up to minutes before pushing
        again (and advisors' messages wait with it); a ping ends the wait at once."""
        try:
            await self.gateway.bot.appservice_ping(self.config.appservice.id)
        except Exception as e:
            log.debug("homeserver ping failed: %s", e)

    async def _catch_up_if_needed(self) -> None:
        gap = self.watch.gap()
        if gap is not None and await self.catch_up.run(since=gap[0]):
            self.watch.caught_up(gap[1])
            if gap[1] != self._presence_asked_at:
                # presence changed while the homeserver was away is not pushed again: asked
                # once per gap (its follow-up readings of the rooms need not ask again)
                self._presence_asked_at = gap[1]
                await self.advisors.presence_may_be_stale()

    async def _repair_spaces(self) -> None:
        """The start-up reconciliation of the groups' spaces (its repairs go through the
        outbox; each is logged, and a summary)."""
        try:
            await self.desk.space_repair.reconcile()
        except Exception as e:
            log.warning(
                "the start-up check of the groups' spaces failed (%s); an admin can run it "
                "later with !directory repair",
                e,
                exc_info=not isinstance(e, TemporarilyUnavailable),
            )

    async def _tick_forever(self) -> None:
        next_prune = next_ping = 0.0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                if self.clock.monotonic() >= next_ping:
                    next_ping = self.clock.monotonic() + PING_SECONDS
                    await self._ping_homeserver()
                await self._catch_up_if_needed()
                if self.clock.monotonic() >= next_prune:
                    # the homeserver gives up retrying long before a week has passed
                    await self.txn_log.prune(self.clock.now() - TXN_LOG_KEEP)
                    await self.store.outbox.prune(self.clock.now() - OUTBOX_KEEP)
                    next_prune = self.clock.monotonic() + 3600
            except Exception:
                log.warning("housekeeping failed; retrying in %.0fs", TICK_SECONDS, exc_info=True)

    async def stop(self) -> None:
        for task in (self._repair, self._ticker, self._dispatcher):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._repair = self._ticker = self._dispatcher = None
        if hasattr(self, "desk"):
            await self.desk.outbox.stop()
        await self.hub.close_all()
        if self._fanout is not None:
            await self._fanout.stop()
            self._fanout = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self._http is not None:
            await self._http.close()
        if self._db is not None:
            await close_database(self._db)
            self._db = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
