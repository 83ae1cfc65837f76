"""One real Synapse per test run; a fresh Switchboard (fresh database) per test."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Protocol

import pytest
from mautrix.types import RoomID
from nio import RoomMessage

from appservice.bootstrap import Switchboard
from appservice.config import Config, MetricsConfig, RoutingConfig, generate
from appservice.local_homeserver import LocalHomeserver
from bridge.ports import Clock
from harness.advisor import AdvisorClient
from harness.visitor import Visitor
from tests.pg import database_url

PASSWORD = "advisor-password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Homeserver:
    server: LocalHomeserver
    config: Config  # the Switchboard config the registration was made from
    probe_room: RoomID | None = None  # the bot's room for the probes of :meth:`pushes_to`

    def new_user(self, name: str = "advisor") -> str:
        localpart = f"{name}-{uuid.uuid4().hex[:8]}"
        return self.server.register_user(localpart, PASSWORD, displayname=name.capitalize())

    async def pushes_to(self, desk: Switchboard, timeout: float = 30) -> None:
        """Return once the homeserver pushes to ``desk`` as things happen.

        Between two tests nothing listens on the appservice port: Synapse's pushes fail, it
        counts the appservice as down and tries again after a back-off (2 s up to 512 s).
        While it is down it keeps the events for later but drops typing notices and receipts
        for good (and a client that says again it is typing sends nothing new), so a test
        that began then could wait for them in vain. The desk's ping at start-up ends the
        back-off, but the retry it starts runs in the background: Synapse counts the
        appservice as up once that retry has pushed all it held. A message of the bot written
        now comes after all that: once the desk has handled it, pushes flow. Its room is not
        one the desk serves, so the desk's catch-up never reads it back: only a push marks it
        handled."""
        bot = desk.gateway.bot
        if self.probe_room is None:
            self.probe_room = await bot.create_room(name="Desk probes")
        probe = await bot.send_notice(self.probe_room, f"probe {uuid.uuid4().hex}")
        deadline = time.monotonic() + timeout
        while not await desk.txn_log.event_handled(probe):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"the homeserver did not push the probe {probe} to the desk within "
                    f"{timeout} s: see {self.server.log_path}"
                )
            await asyncio.sleep(0.02)


@pytest.fixture(scope="session")
def homeserver(tmp_path_factory: pytest.TempPathFactory) -> Homeserver:
    root = tmp_path_factory.mktemp("hs")
    server = LocalHomeserver(
        root / "synapse", for_tests=True, appservice_registrations=[root / "registration.yaml"]
    )
    as_port = free_port()
    config = generate(
        root / "config.yaml",
        root / "registration.yaml",
        {
            "homeserver.address": server.url,
            "homeserver.domain": server.server_name,
            "appservice.address": f"http://127.0.0.1:{as_port}",
            "appservice.port": as_port,
            "logging.root.level": "DEBUG",
            # processes started from this config (tests/faults, tests/install) would all
            # listen on the default metrics port; a desk of DeskFactory gets one of its own
            "metrics.enabled": False,
        },
    )
    server.start()
    yield Homeserver(server, config)
    server.stop()


class DeskFactory:
    """Starts Switchboard instances against the session's homeserver."""

    def __init__(self, homeserver: Homeserver, backend: str, tmp_path: Path) -> None:
        self.homeserver = homeserver
        self.backend = backend
        self.tmp_path = tmp_path
        self.running: list[tuple[Switchboard, object]] = []

    async def start(
        self,
        *,
        invite_timeout: float = 60,
        capacity: int = 3,
        admins: tuple[str, ...] = (),
        clock: Clock | None = None,
        homeserver_address: str | None = None,
        portal: dict[str, Any] | None = None,
        ready: bool = True,
    ) -> Switchboard:
        """A started Switchboard, to which the homeserver pushes (see
        :meth:`Homeserver.pushes_to`); with ``ready=False`` it only listens (the test then
        calls ``become_ready``)."""
        db = database_url(self.backend, self.tmp_path)
        url = await db.__aenter__()
        port = free_port()
        base = self.homeserver.config
        config = dataclasses.replace(
            base,
            database_url=url,
            # ``portal``: e.g. a limit a test goes past, or the public_url of a proxy in front
            portal=dataclasses.replace(
                base.portal,
                **{"port": port, "public_url": f"http://127.0.0.1:{port}", **(portal or {})},
            ),
            routing=RoutingConfig(
                capacity=capacity,
                invite_timeout=invite_timeout,
                abandon_after=base.routing.abandon_after,
            ),
            admins=admins,
            metrics=MetricsConfig(enabled=True, hostname="127.0.0.1", port=free_port()),
        )
        if homeserver_address is not None:  # e.g. through a proxy the test can cut
            config = dataclasses.replace(
                config,
                homeserver=dataclasses.replace(base.homeserver, address=homeserver_address),
            )
        switchboard = Switchboard(config, clock)
        self.running.append((switchboard, db))
        if ready:
            await switchboard.start()
            await self.homeserver.pushes_to(switchboard)
        else:
            await switchboard.listen()
        return switchboard

    async def stop_all(self) -> None:
        while self.running:
            switchboard, db = self.running.pop()
            await switchboard.stop()
            await db.__aexit__(None, None, None)  # type: ignore[attr-defined]


@pytest.fixture(params=["sqlite", "postgres"])
async def desks(
    request: pytest.FixtureRequest, homeserver: Homeserver, tmp_path: Path
) -> AsyncIterator[DeskFactory]:
    factory = DeskFactory(homeserver, request.param, tmp_path)
    yield factory
    await factory.stop_all()


@pytest.fixture
async def pg_desks(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[DeskFactory]:
    factory = DeskFactory(homeserver, "postgres", tmp_path)
    yield factory
    await factory.stop_all()


@pytest.fixture
async def sqlite_desks(homeserver: Homeserver, tmp_path: Path) -> AsyncIterator[DeskFactory]:
    factory = DeskFactory(homeserver, "sqlite", tmp_path)
    yield factory
    await factory.stop_all()


class Desk(Protocol):
    """A running Switchboard: in this process (``Switchboard``) or another (``tests.faults``)."""

    config: Config


@dataclasses.dataclass
class Chat:
    """A visitor chatting with an advisor: the advisor joined, the visitor's page says so."""

    advisor: AdvisorClient
    visitor: Visitor
    room: str  # the conversation's Matrix room, joined by the advisor
    started: dict[str, Any]  # the portal's answer to the start

    @property
    def conversation_id(self) -> str:
        return str(self.started["conversation"]["id"])


@pytest.fixture
async def people(homeserver: Homeserver) -> AsyncIterator["People"]:
    crowd = People(homeserver)
    yield crowd
    await crowd.close()


class People:
    """Advisors (real Matrix clients) and visitors (real HTTP/websocket clients) of one test."""

    def __init__(self, homeserver: Homeserver) -> None:
        self.homeserver = homeserver
        self.clients: list[AdvisorClient] = []
        self.visitors: list[Visitor] = []

    async def advisor(
        self, switchboard: Switchboard | None = None, name: str = "ana", available: bool = True
    ) -> AdvisorClient:
        mxid = self.homeserver.new_user(name)
        client = await AdvisorClient.login(self.homeserver.server.url, mxid, PASSWORD)
        self.clients.append(client)
        if switchboard is not None:
            # set up as the store would have them: no welcome chat (its invite would come first)
            await switchboard.advisors.add(mxid, name.capitalize(), welcome=False)
            if available:
                await switchboard.advisors.set_available(mxid, True)
        return client

    async def login(self, mxid: str) -> AdvisorClient:
        client = await AdvisorClient.login(self.homeserver.server.url, mxid, PASSWORD)
        self.clients.append(client)
        return client

    async def visitor(self, desk: Desk) -> Visitor:
        visitor = await Visitor(desk.config.portal.public_url).open()
        self.visitors.append(visitor)
        return visitor

    async def chatting(
        self, desk: Desk, advisor: AdvisorClient | None = None, **form: Any
    ) -> Chat:
        """A new visitor starts a chat (``form`` changes the pre-chat form), the advisor (a
        new available "Ana" unless given) accepts the invite, and the visitor's connected page
        shows the chat active."""
        if advisor is None:
            assert isinstance(desk, Switchboard), "give the advisor of an out-of-process desk"
            advisor = await self.advisor(desk, "ana")
        visitor = await self.visitor(desk)
        started = await visitor.start(**form)
        room = await advisor.wait_for_invite()
        await advisor.join(room)
        await visitor.connect()
        await visitor.wait_status("active")
        return Chat(advisor, visitor, room, started)

    async def close(self) -> None:
        for visitor in self.visitors:
            await visitor.close()
        for client in self.clients:
            await client.close()


async def open_bot_chat(client: AdvisorClient, bot: str) -> str:
    """``client`` opens a direct chat with the desk's bot and waits for its greeting."""
    dm = await client.create_room(invite=[bot], is_direct=True)
    await client.wait_for_message(dm, "Type !help", sender=bot)
    return dm


@dataclasses.dataclass
class AdminChat:
    """An admin of a started desk, logged in, in their direct chat with the bot (see
    :func:`start_with_admin`)."""

    desk: Switchboard
    client: AdvisorClient  # the admin's
    dm: str  # the direct chat with the bot, greeted

    @property
    def bot(self) -> str:
        return self.desk.config.bot_mxid

    async def ask(self, command: str, answer: str) -> RoomMessage:
        """Send ``command``; the first message of the bot in the chat (seen now or earlier)
        that contains ``answer``."""
        await self.client.send_text(self.dm, command)
        return await self.client.wait_for_message(self.dm, answer, sender=self.bot)

    async def tell(self, *steps: tuple[str, str]) -> None:
        """Each ``(command, answer)`` in turn, each awaited until the bot's answer contains
        its text."""
        for command, answer in steps:
            await self.ask(command, answer)


async def start_with_admin(desks: DeskFactory, people: People, **start: Any) -> AdminChat:
    """A new user of the desks' homeserver, a desk started with them as its admin (``start``:
    more arguments of :meth:`DeskFactory.start`, e.g. ``capacity=1``), their client logged
    in (one of ``people``) and their direct chat with the bot open."""
    admin_id = desks.homeserver.new_user("admin")
    desk = await desks.start(admins=(admin_id,), **start)
    client = await people.login(admin_id)
    return AdminChat(desk, client, await open_bot_chat(client, desk.config.bot_mxid))
