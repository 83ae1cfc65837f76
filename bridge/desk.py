"""The core wired together once: for the appservice's start-up, the tests and the benchmarks."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Mapping

from .model import RoutingSettings
from .outbox import Dispatcher, Handlers, UnitOfWork
from .ports import Clock, DeskMetrics, MatrixGateway, Store, VisitorChannel
from .services.advisors import AdvisorService
from .services.bot import BotService
from .services.callsigns import CallSignService, CallSignSettings
from .services.groups import GroupService
from .services.matrix_side import MatrixSide
from .services.presenter import Presenter
from .services.queue import QueueService
from .services.rooms import RoomService
from .services.space_repair import SpaceRepair
from .services.topics import TopicService
from .services.visitors import VisitorService


@dataclass(frozen=True)
class DeskSettings:
    topics: Mapping[str, str]
    routing: RoutingSettings = RoutingSettings()
    abandon_after: float = 300.0
    call_signs: CallSignSettings = CallSignSettings()  # its join_within: abandon_after


@dataclass
class Desk:
    """The core's services by caller: ``visitors`` (the portal), ``rooms`` (Matrix events),
    ``advisors``, ``groups``, ``space_repair``, ``topics``, ``call_signs`` and ``bot`` (the bot's
    commands; ``call_signs`` also answers Matrix users asking one, and the portal's search),
    ``queue`` (routing) and the ``outbox`` dispatcher that runs every side effect."""

    store: Store
    presenter: Presenter
    queue: QueueService
    visitors: VisitorService
    rooms: RoomService
    advisors: AdvisorService
    bot: BotService
    groups: GroupService
    space_repair: SpaceRepair
    topics: TopicService
    call_signs: CallSignService
    handlers: Handlers
    outbox: Dispatcher
    uow: UnitOfWork


def build_desk(
    store: Store,
    gateway: MatrixGateway,
    channel: VisitorChannel,
    clock: Clock,
    settings: DeskSettings,
    metrics: DeskMetrics | None = None,
) -> Desk:
    """The core on these adapters; ``metrics`` is told what the operators measure."""
    handlers = Handlers()
    outbox = Dispatcher(store, handlers, clock)
    uow = UnitOfWork(store, clock, outbox.wake)
    presenter = Presenter(store, channel, settings.topics)
    queue = QueueService(store, uow, presenter, clock, settings.routing, metrics)
    call_signs = CallSignService(
        store,
        uow,
        gateway,
        clock,
        queue,
        dataclasses.replace(settings.call_signs, join_within=settings.abandon_after),
    )
    visitors = VisitorService(
        store,
        uow,
        gateway,
        channel,
        presenter,
        queue,
        clock,
        settings.topics,
        call_signs,
        abandon_after=settings.abandon_after,
    )
    rooms = RoomService(store, uow, channel, presenter, queue)
    advisors = AdvisorService(store, uow, queue, clock, gateway.is_local)
    bot = BotService(store, uow, gateway, advisors)
    bot.register(handlers)
    groups = GroupService(store, uow, gateway)
    groups.register(handlers)
    space_repair = SpaceRepair(store, uow, gateway)
    space_repair.register(handlers)
    call_signs.register(handlers)
    MatrixSide(store, gateway, queue, presenter, clock, metrics).register(handlers)
    visitors.register(handlers)
    handlers.check_complete()
    return Desk(
        store=store,
        presenter=presenter,
        queue=queue,
        visitors=visitors,
        rooms=rooms,
        advisors=advisors,
        bot=bot,
        groups=groups,
        space_repair=space_repair,
        topics=TopicService(store, uow, settings.topics),
        call_signs=call_signs,
        handlers=handlers,
        outbox=outbox,
        uow=uow,
    )
