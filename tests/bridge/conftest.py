from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from bridge.desk import Desk as Core
from bridge.desk import DeskSettings, build_desk
from bridge.model import Conversation, ConversationId, RoutingSettings
from bridge.ports import DeskMetrics
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel, MemoryStore, Settled

TOPICS = {"general": "General question", "billing": "Billing"}


@dataclass
class Desk:
    store: MemoryStore
    gateway: FakeMatrixGateway
    channel: FakeVisitorChannel
    clock: FakeClock
    core: Core

    def __post_init__(self) -> None:
        outbox = self.core.outbox
        self.outbox = outbox
        self.queue = Settled(self.store, outbox, self.core.queue)
        self.conversations = Settled(self.store, outbox, self.core.visitors, self.core.rooms)
        self.advisors = Settled(self.store, outbox, self.core.advisors)

    async def settle(self) -> int:
        """Run what is due (time passed: timers); how many rows ran."""
        return await self.outbox.drain()

    async def visitor(
        self, session: str, name: str = "Vera", message: str = "Hello", topic: str = "general"
    ) -> ConversationId:
        self.clock.advance(1)  # arrivals one second apart, so queue order is defined
        conversation, _ = await self.conversations.start(
            session, {"name": name, "email": "", "topic": topic, "message": message}
        )
        return conversation.id

    async def advisor(
        self, mxid: str, available: bool = True, capacity: int | None = None
    ) -> None:
        await self.advisors.add(mxid, welcome=False)
        if capacity is not None:
            await self.advisors.set_capacity(mxid, capacity)
        if available:
            await self.advisors.set_available(mxid, True)

    async def conv(self, cid: ConversationId) -> Conversation:
        conversation = await self.store.get_conversation(cid)
        assert conversation is not None, cid
        return conversation


def make_desk(metrics: DeskMetrics | None = None, **settings: Any) -> Desk:
    store, gateway, channel, clock = (
        MemoryStore(),
        FakeMatrixGateway(),
        FakeVisitorChannel(),
        FakeClock(),
    )
    core = build_desk(
        store,
        gateway,
        channel,
        clock,
        DeskSettings(topics=TOPICS, routing=RoutingSettings(3, 60.0), **settings),
        metrics,
    )
    return Desk(store, gateway, channel, clock, core)


@pytest.fixture
def desk() -> Desk:
    return make_desk()
