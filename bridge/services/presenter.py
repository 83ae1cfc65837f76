"""Turns stored conversations into what a visitor may see, and pushes it to their pages."""

from __future__ import annotations

from typing import Mapping, Protocol

from ..model import Conversation, ConversationStatus, Message, Visitor, VisitorId
from ..ports import (
    Advisors,
    CallSigns,
    Conversations,
    ConversationView,
    Groups,
    MessageEvent,
    StatusEvent,
    VisitorChannel,
    Visitors,
)
from ..routing import queue_positions


class PresenterStore(Visitors, Conversations, Advisors, Groups, CallSigns, Protocol):
    """What a page's view is read from."""


class Presenter:
    def __init__(
        self, store: PresenterStore, channel: VisitorChannel, topics: Mapping[str, str]
    ) -> None:
        self._store = store
        self._channel = channel
        self._topics = topics

    def topic_label(self, topic: str) -> str:
        return self._topics.get(topic, topic)

    async def view(
        self,
        conversation: Conversation,
        positions: Mapping[str, int] | None = None,
        visitors: Mapping[VisitorId, Visitor] | None = None,
    ) -> ConversationView:
        """What the visitor's page shows. ``positions`` and ``visitors``: read already (a
        routing pass tells thousands of pages at once)."""
        if positions is None and conversation.status is ConversationStatus.WAITING:
            positions = queue_positions(await self._store.open_conversations())
        if visitors is not None and conversation.visitor_id in visitors:
            visitor: Visitor | None = visitors[conversation.visitor_id]
        else:
            visitor = await self._store.get_visitor(conversation.visitor_id)
        advisor_name = None
        if conversation.advisor and conversation.status is ConversationStatus.ACTIVE:
            advisor = await self._store.get_advisor(conversation.advisor)
            advisor_name = advisor.name if advisor else conversation.advisor
        return ConversationView(
            id=conversation.id,
            status=conversation.status.value,
            queue_position=(positions or {}).get(conversation.id),
            advisor_name=advisor_name,
            topic=self.topic_label(conversation.topic),
            visitor_name=visitor.name if visitor else "",
            read_up_to=conversation.read_up_to,
            version=conversation.version,
            asked_for=await self._asked_for(conversation),
        )

    async def _asked_for(self, conversation: Conversation) -> str | None:
        """The name of what the visitor's call sign reaches (a group's name, an advisor's),
        or None if they asked none or it is gone."""
        if conversation.call_sign is None:
            return None
        call_sign = await self._store.get_call_sign(conversation.call_sign)
        if call_sign is None:
            return None
        if call_sign.advisor is not None:  # their display name, never their Matrix id
            advisor = await self._store.get_advisor(call_sign.advisor)
            return advisor.display_name if advisor and advisor.display_name else call_sign.sign
        group = await self._store.get_group(call_sign.group_id) if call_sign.group_id else None
        return group.name if group else None

    async def status(
        self,
        conversation: Conversation,
        positions: Mapping[str, int] | None = None,
        visitors: Mapping[VisitorId, Visitor] | None = None,
    ) -> None:
        await self._channel.publish(
            conversation.id, StatusEvent(await self.view(conversation, positions, visitors))
        )

    async def message(self, message: Message) -> None:
        await self._channel.publish(message.conversation_id, MessageEvent(message))
