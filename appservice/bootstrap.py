"""The one place that builds Switchboard: store, Matrix gateway, services, bot, web apps."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import web
from mautrix.appservice import AppServiceAPI
from mautrix.types import UserID
from mautrix.util.async_db import Database

from bridge.model import Presence, RoomId, RoutingSettings
from bridge.ports import Clock, VisitorChannel
from bridge.services.advisors import AdvisorService
from bridge.services.conversations import ConversationService
from bridge.services.presenter import Presenter
from bridge.services.queue import QueueService
from web_portal.app import PortalSettings, create_app
from web_portal.hub import VisitorHub

from .catch_up import CatchUp, HomeserverWatch
from .clock import WallClock
from .commands import CommandRegistry
from .commands import desk as desk_commands
from .config import Config
from .db import AppserviceLog, SqlStore, close_database, open_database, parse_database_url
from .db.fanout import PgFanout
from .events import MatrixEventHandler
from .matrix_gateway import MautrixGateway, MemoryASStateStore
from .transactions import AppserviceEndpoint

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
PING_SECONDS = 5.0
TXN_LOG_KEEP = 7 * 24 * 3600.0


class Switchboard:
    """Everything wired together; ``await start()``, then ``await stop()``."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or WallClock()
        self._runners: list[web.AppRunner] = []
        self._ticker: asyncio.Task[None] | None = None
        self._http: aiohttp.ClientSession | None = None
        self._db: Database | None = None
        self.hub = VisitorHub()
        self._fanout: PgFanout | None = None

    async def start(self) -> None:
        config = self.config
        self._db = await open_database(config.database_url)
        db = self._db
        self.store = SqlStore(db)
        channel: VisitorChannel = self.hub
        db_url = parse_database_url(config.database_url)
        if db_url.dialect == "postgres":
            # several processes may share this database: events reach every process's pages
            self._fanout = PgFanout(db_url, db, self.store, self.hub)
            await self._fanout.start()
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
        clock = self.clock
        topics = config.portal.topics
        presenter = Presenter(self.store, channel, topics)
        self.queue = QueueService(
            self.store,
            self.gateway,
            presenter,
            clock,
            RoutingSettings(config.routing.capacity, config.routing.invite_timeout),
        )
        self.conversations = ConversationService(
            self.store,
            self.gateway,
            channel,
            presenter,
            self.queue,
            clock,
            topics,
            abandon_after=config.routing.abandon_after,
        )
        self.advisors = AdvisorService(self.store, self.queue)
        commands = CommandRegistry()
        desk_commands.register(
            commands,
            self.advisors,
            self.conversations,
            default_capacity=config.routing.capacity,
            welcome_advisor=self.welcome_advisor,
            open_conversations=self.store.open_conversations,
        )
        events = MatrixEventHandler(
            config, self.gateway, self.conversations, self.advisors, commands
        )
        self.txn_log = AppserviceLog(db, self.clock)
        self.endpoint = AppserviceEndpoint(
            config.appservice.hs_token, self.txn_log, events, self.watch
        )
        self.catch_up = CatchUp(self.gateway.bot.api, self._served_rooms, self.endpoint)
        last_push = await self.txn_log.last_transaction_at()
        if last_push is not None:
            # the homeserver may have restarted while we were down, losing what it held for us
            self.watch.suspect_gap("Switchboard started", since=last_push)
        portal = create_app(
            self.conversations,
            self.hub,
            PortalSettings(
                public_url=config.portal.public_url,
                allowed_origins=config.portal.allowed_origins,
                org_name=config.portal.org_name,
                topics=topics,
                trusted_proxies=config.portal.trusted_proxies,
                starts_per_minute=config.portal.starts_per_minute,
                secret=config.portal.secret,
            ),
        )
        await self._serve(self.endpoint.app(), config.appservice.hostname, config.appservice.port)
        await self._serve(portal, config.portal.hostname, config.portal.port)
        await self._prepare_bot()
        self._ticker = asyncio.create_task(self._tick_forever())
        log.info(
            "Switchboard is running: portal %s, appservice endpoint %s:%d",
            config.portal.public_url,
            config.appservice.hostname,
            config.appservice.port,
        )

    async def _serve(self, app: web.Application, host: str, port: int) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        self._runners.append(runner)

    async def _prepare_bot(self) -> None:
        bot = self.gateway.bot
        await bot.ensure_registered()
        try:
            await bot.set_displayname(self.config.appservice.bot_displayname)
        except Exception:
            log.warning("could not set the bot's display name", exc_info=True)
        try:
            # resets the homeserver's back-off if earlier pushes to us failed
            await bot.appservice_ping(self.config.appservice.id)
        except Exception as e:
            log.warning("the homeserver could not reach our appservice endpoint: %s", e)

    async def welcome_advisor(self, mxid: str) -> None:
        """A direct chat with the new advisor, so they can talk to the bot (and we see their
        presence, which the homeserver only shares with users who share a room)."""
        bot = self.gateway.bot
        room_id = await bot.create_room(
            is_direct=True, invitees=[UserID(mxid)], name="Switchboard"
        )
        await bot.state_store.joined(room_id, bot.mxid)
        await self.advisors.set_control_room(mxid, room_id)  # type: ignore[arg-type]
        await bot.send_notice(
            room_id,
            "You are now a Switchboard advisor. Type !available to start receiving visitors, "
            "!away to stop, and !help for everything else. Visitors arrive as room invites.",
        )
        try:
            presence = await bot.get_presence(UserID(mxid))
            await self.advisors.presence_changed(mxid, Presence(presence.presence.value))
        except Exception:
            log.debug("presence of %s not known yet", mxid, exc_info=True)

    async def _served_rooms(self) -> list[RoomId]:
        """The rooms whose events the desk acts on: open conversations, advisors' chats."""
        rooms = [c.room_id for c in await self.store.open_conversations() if c.room_id]
        rooms += [a.control_room for a in await self.store.advisors() if a.control_room]
        return list(dict.fromkeys(rooms))

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

    async def _tick_forever(self) -> None:
        next_prune = next_ping = 0.0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            try:
                if self.clock.monotonic() >= next_ping:
                    next_ping = self.clock.monotonic() + PING_SECONDS
                    await self._ping_homeserver()
                await self._catch_up_if_needed()
                await self.conversations.tick()
                if self.clock.monotonic() >= next_prune:
                    # the homeserver gives up retrying long before a week has passed
                    await self.txn_log.prune(self.clock.now() - TXN_LOG_KEEP)
                    next_prune = self.clock.monotonic() + 3600
            except Exception:
                log.warning("housekeeping failed; retrying in %.0fs", TICK_SECONDS, exc_info=True)

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
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
