from __future__ import annotations

from dataclasses import dataclass

import pytest

from bridge.model import Conversation, ConversationId, RoutingSettings
from bridge.services.advisors import AdvisorService
from bridge.services.conversations import ConversationService
from bridge.services.presenter import Presenter
from bridge.services.queue import QueueService
from tests.fakes import FakeClock, FakeMatrixGateway, FakeVisitorChannel, MemoryStore

TOPICS = {"general": "General question", "billing": "Billing"}


@dataclass
class Desk:
    store: MemoryStore
    gateway: FakeMatrixGateway
    channel: FakeVisitorChannel
    clock: FakeClock
    queue: QueueService
    conversations: ConversationService
    advisors: AdvisorService

    async def visitor(
        self, session: str, name: str = "Vera", message: str = "Hello"
    ) -> ConversationId:
        self.clock.advance(1)  # arrivals one second apart, so queue order is defined
        conversation, _ = await self.conversations.start(
            session, {"name": name, "email": "", "topic": "general", "message": message}
        )
        return conversation.id

    async def advisor(
        self, mxid: str, available: bool = True, capacity: int | None = None
    ) -> None:
        await self.advisors.add(mxid)
        if capacity is not None:
            await self.advisors.set_capacity(mxid, capacity)
        if available:
            await self.advisors.set_available(mxid, True)

    async def conv(self, cid: ConversationId) -> Conversation:
        conversation = await self.store.get_conversation(cid)
        assert conversation is not None, cid
        return conversation


@pytest.fixture
def desk() -> Desk:
    store, gateway, channel, clock = (
        MemoryStore(),
        FakeMatrixGateway(),
        FakeVisitorChannel(),
        FakeClock(),
    )
    presenter = Presenter(store, channel, TOPICS)
    queue = QueueService(store, gateway, presenter, clock, RoutingSettings(3, 60.0))
    conversations = ConversationService(store, gateway, channel, presenter, queue, clock, TOPICS)
    return Desk(store, gateway, channel, clock, queue, conversations, AdvisorService(store, queue))
