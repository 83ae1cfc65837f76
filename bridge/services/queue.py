"""The routing queue: every change of a conversation's status, and the routing pass.

A change is the conversation's own transition (:class:`bridge.model.Conversation`), applied
under one lock (this process's, and on PostgreSQL an advisory lock every process takes) to the
stored conversation, and committed with its system message and its events (see
:mod:`bridge.outbox`). Pages are told after the commit.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from ..errors import IllegalTransition
from ..events import InviteWithdrawn, QueueChanged
from ..logcontext import about
from ..model import (
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    Message,
    MessageId,
    RoutingSettings,
    Sender,
    Transition,
)
from ..outbox import UnitOfWork
from ..ports import Clock, DeskMetrics, NoMetrics, Store
from ..routing import RoundRobin, advisor_load, queue_order, queue_positions
from .presenter import Presenter
from .topics import read_pools

log = logging.getLogger(__name__)

CURSOR_KEY = "routing.last_assigned"
EPOCH_KEY = "routing.passes"  # counts routing passes, so a process notices the others' ones


class QueueService:
    """Owns every change of a conversation's status."""

    def __init__(
        self,
        store: Store,
        uow: UnitOfWork,
        presenter: Presenter,
        clock: Clock,
        settings: RoutingSettings,
        metrics: DeskMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics or NoMetrics()
        self._uow = uow
        self._presenter = presenter
        self._clock = clock
        self._settings = settings
        self._lock = asyncio.Lock()
        # what this process last showed each waiting conversation's pages: its place, valid
        # while no other process has run a pass since this one's (``_epoch``)
        self._shown: dict[ConversationId, int] = {}
        self._epoch = -1

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Held while a conversation's status changes, in this process and in every other
        process sharing the store."""
        async with self._lock, self._store.exclusive("conversations"):
            yield

    async def change(
        self,
        conversation_id: ConversationId,
        transition: Callable[[Conversation], Transition],
        note: str | None = None,
    ) -> Conversation | None:
        """Apply ``transition`` to the stored conversation and commit it with its events and
        the system message ``note``; None if there is no such conversation or the transition
        is not allowed in its current state (a decision taken on an older state)."""
        async with self.exclusive():
            current = await self._store.get_conversation(conversation_id)
            if current is None:
                return None
            try:
                changed, events = transition(current)
            except IllegalTransition as e:
                log.debug("not changed: %s", e)
                return None
            message = None
            async with self._uow() as batch:
                await self._store.save_conversation(changed)
                if note is not None:
                    message, _ = await self._store.add_message(
                        system_message(changed.id, note, self._clock.now())
                    )
                batch.raise_(events)
        if message is not None:
            await self._presenter.message(message)
        await self._presenter.status(changed)
        self._shown.pop(changed.id, None)  # that status showed a place too: tell it again
        return changed

    # -- the routing pass (the handler of QueueChanged) -------------------------------------

    async def route(self) -> None:
        """Offer waiting visitors to advisors who can take them, each within the group of
        their topic (:class:`bridge.routing.GroupPools`, read once per pass); then tell every
        waiting visitor whose place changed."""
        async with self.exclusive():
            conversations = await self._store.open_conversations()
            advisors = await self._store.advisors()
            cursor = await self._store.get_setting(CURSOR_KEY)
            epoch = int(await self._store.get_setting(EPOCH_KEY) or 0)
            if epoch != self._epoch:
                self._shown.clear()  # another process's pass told pages other places since
            pools = await read_pools(self._store)
            ring = RoundRobin(
                advisors,
                advisor_load(conversations),
                AdvisorMxid(cursor) if cursor else None,
                default_capacity=self._settings.default_capacity,
            )
            now = self._clock.now()
            offers: list[Conversation] = []
            async with self._uow() as batch:
                for conversation in queue_order(conversations):
                    if ring.exhausted:
                        break
                    pool = pools.for_conversation(conversation)
                    advisor = ring.next_in(pool, conversation.skipped)
                    if advisor is None or conversation.room_id is None:
                        # no room yet: offered once it is made (a pass follows), and the
                        # advisor it would get is kept for it meanwhile, so that a later
                        # visitor whose room came first does not overtake it
                        continue
                    offer, events = conversation.offer(advisor, now, self._settings.invite_timeout)
                    batch.raise_(events)
                    offers.append(offer)
                await self._store.save_conversations(offers)
                if offers and ring.last:
                    # the cursor only spreads work fairly; losing it in a crash harms nobody
                    await self._store.set_setting(CURSOR_KEY, ring.last)
                await self._store.set_setting(EPOCH_KEY, str(epoch + 1))
            self._epoch = epoch + 1
        offered = {o.id: o for o in offers}
        await self._publish(offers, [offered.get(c.id, c) for c in conversations])

    async def _publish(
        self, offers: list[Conversation], conversations: list[Conversation]
    ) -> None:
        """Tell the offered visitors, and show every waiting visitor their place where it is
        not what their pages show last (the visitors' names read in one go). Each status
        carries the conversation's version: a page shown something newer meanwhile ignores
        it."""
        positions = queue_positions(conversations)
        moved = [
            c
            for c in conversations
            if (place := positions.get(c.id)) is not None and self._shown.get(c.id) != place
        ]
        visitors = await self._store.get_visitors([c.visitor_id for c in offers + moved])
        for offer in offers:
            with about(offer.id):  # one routing pass handles many conversations
                log.info("offering conversation %s to %s", offer.id, offer.advisor)
            await self._presenter.status(offer, visitors=visitors)
        for conversation in moved:
            self._shown[conversation.id] = positions[conversation.id]
            await self._presenter.status(conversation, positions, visitors)
        for gone in [k for k in self._shown if k not in positions]:
            del self._shown[gone]

    # -- status changes ----------------------------------------------------------------------

    async def skip(
        self, conversation_id: ConversationId, advisor: AdvisorMxid, reason: str
    ) -> bool:
        """Withdraw an offer the advisor did not take; the visitor keeps their place."""
        changed = await self.change(conversation_id, lambda c: c.skip(advisor, reason))
        if changed is not None:
            with about(conversation_id):
                log.info("advisor %s skipped for conversation %s", advisor, conversation_id)
        return changed is not None

    async def accept(self, conversation_id: ConversationId, advisor: AdvisorMxid) -> bool:
        """The advisor joined the room. True if they own the conversation (now or already).

        Not a guest (someone in the room invited them), and not someone whose invite the desk
        is taking back (the withdrawal removes them)."""
        current = await self._store.get_conversation(conversation_id)
        if current is None or not current.status.is_open:
            return False
        if current.status is ConversationStatus.ACTIVE:
            return current.advisor == advisor
        stored = await self._store.get_advisor(advisor)
        if stored is None:
            return False
        withdrawal = InviteWithdrawn(conversation_id, advisor, "")
        if await self._store.outbox.pending(withdrawal.key, type(withdrawal).__name__):
            return False
        accepted = await self.change(
            conversation_id, lambda c: c.accept(advisor), f"{stored.name} joined the chat."
        )
        if accepted is None:
            return False
        self._metrics.visitor_accepted(max(0.0, self._clock.now() - accepted.queued_at))
        return True

    async def release(
        self, conversation_id: ConversationId, advisor: AdvisorMxid, note: str
    ) -> bool:
        """The owning advisor left without closing: the visitor goes back to the queue front."""
        return await self.change(conversation_id, lambda c: c.release(advisor), note) is not None

    async def end(self, conversation_id: ConversationId, by: Sender, note: str) -> Conversation:
        """Close the conversation. Idempotent: ending an ended conversation changes nothing."""
        ended = await self.change(conversation_id, lambda c: c.end(by, self._clock.now()), note)
        if ended is not None:
            with about(conversation_id):
                log.info("conversation %s ended by %s", conversation_id, by.value)
            return ended
        current = await self._store.get_conversation(conversation_id)
        if current is None:
            raise LookupError(conversation_id)
        return current

    async def release_all_of(self, advisor: AdvisorMxid, note: str) -> None:
        """The advisor is gone (offline, removed): every visitor they had goes back to the
        front of the queue; none is left stranded with nobody."""
        for conversation in await self._store.open_conversations():
            if conversation.advisor != advisor:
                continue
            if conversation.status is ConversationStatus.INVITING:
                await self.skip(conversation.id, advisor, note)
            elif conversation.status is ConversationStatus.ACTIVE:
                await self.release(conversation.id, advisor, note)

    async def requeue_offers_of(self, advisor: AdvisorMxid) -> None:
        """The advisor became unreachable: their pending offers go to someone else now."""
        for conversation in await self._store.open_conversations():
            if (
                conversation.status is ConversationStatus.INVITING
                and conversation.advisor == advisor
            ):
                await self.skip(conversation.id, advisor, "You are no longer available.")

    async def advisors_changed(self) -> None:
        """An advisor's availability, presence or capacity changed: a routing pass."""
        async with self._uow() as batch:
            batch.raise_([QueueChanged()])


def system_message(conversation_id: ConversationId, body: str, now: float) -> Message:
    return Message(
        id=MessageId(uuid.uuid4().hex),
        conversation_id=conversation_id,
        seq=0,
        sender=Sender.SYSTEM,
        author="Switchboard",
        body=body,
        ts=now,
    )
