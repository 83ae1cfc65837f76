"""The routing queue in motion: offering visitors to advisors, expiring offers, hand-overs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from contextlib import asynccontextmanager
from typing import AsyncIterator

from ..locks import KeyedLock
from ..model import (
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    Message,
    MessageId,
    RoutingSettings,
    Sender,
)
from ..ports import Clock, MatrixGateway, Store
from ..routing import RoundRobin, advisor_load, queue_order, queue_positions
from .presenter import Presenter

log = logging.getLogger(__name__)

CURSOR_KEY = "routing.last_assigned"
WITHDRAWN = "This chat is no longer offered to you."


class QueueService:
    """Owns every change of a conversation's status.

    Decisions are taken under one lock and written to the store before anything is sent to
    Matrix, so a crash between the two leaves a state that housekeeping repairs: an offer
    that runs out is skipped, and an invite that is no longer an offer (``invited``) is
    withdrawn until the homeserver has done it.
    """

    def __init__(
        self,
        store: Store,
        gateway: MatrixGateway,
        presenter: Presenter,
        clock: Clock,
        settings: RoutingSettings,
    ) -> None:
        self._store = store
        self._gateway = gateway
        self._presenter = presenter
        self._clock = clock
        self._settings = settings
        self._lock = asyncio.Lock()
        # what this process last showed each open conversation's pages: (status, place)
        self._shown: dict[ConversationId, tuple[ConversationStatus, int | None]] = {}
        # one invite or withdrawal at a time per (conversation, advisor): a withdrawal sent
        # after a newer invite of the same advisor would cancel that one
        self._invite_locks = KeyedLock()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        """Held while a conversation's status changes, in this process and in every other
        process sharing the store; other services take it to change a conversation too."""
        async with self._lock, self._store.exclusive("conversations"):
            yield

    async def dispatch(self) -> None:
        """Offer waiting visitors to advisors who can take them, and update queue positions."""
        offers: list[Conversation] = []
        async with self.exclusive():
            conversations = await self._store.open_conversations()
            advisors = await self._store.advisors()
            cursor = await self._store.get_setting(CURSOR_KEY)
            ring = RoundRobin(
                advisors,
                advisor_load(conversations),
                AdvisorMxid(cursor) if cursor else None,
                default_capacity=self._settings.default_capacity,
            )
            now = self._clock.now()
            for conversation in queue_order(conversations):
                if ring.exhausted:
                    break
                if conversation.room_id is None:
                    continue  # its room is not there yet; tick() retries
                advisor = ring.next(conversation.skipped)
                if advisor is None:
                    continue
                skipped = conversation.skipped
                if advisor in skipped:  # everybody else is busy: ring the skipped ones again
                    skipped = ()
                offer = dataclasses.replace(
                    conversation,
                    status=ConversationStatus.INVITING,
                    advisor=advisor,
                    invite_deadline=now + self._settings.invite_timeout,
                    skipped=skipped,
                    invited=_with(conversation.invited, advisor),
                )
                await self._store.save_conversation(offer)
                offers.append(offer)
            if offers and ring.last:
                # the cursor only spreads work fairly; losing it in a crash harms nobody
                await self._store.set_setting(CURSOR_KEY, ring.last)
            for offer in offers:
                await self._show(offer)
            await self._publish_places()
        # one pass may offer many visitors: the invites go out together, not one by one
        requeued = await asyncio.gather(*(self._send_offer(offer) for offer in offers))
        if any(requeued):
            async with self.exclusive():
                await self._publish_places()

    async def _send_offer(self, offer: Conversation) -> bool:
        """Invite the advisor. True if the invite failed and the visitor waits again."""
        assert offer.room_id is not None and offer.advisor is not None
        async with self._invite_locks((offer.id, offer.advisor)):
            current = await self._store.get_conversation(offer.id)
            if (
                current is None
                or current.status is not ConversationStatus.INVITING
                or current.advisor != offer.advisor
            ):
                return False  # ended or moved on meanwhile: an invite now would dangle
            log.info("offering conversation %s to %s", offer.id, offer.advisor)
            present: bool | None  # None: the invite failed
            try:
                present = await self._gateway.invite_advisor(offer.room_id, offer.advisor)
            except Exception:
                log.warning(
                    "inviting %s to %s failed", offer.advisor, offer.room_id, exc_info=True
                )
                present = None
        if present is None:
            return await self.skip(offer.id, offer.advisor, dispatch=False)
        if present:  # no join will come: they are there already
            await self.accept(offer.id, offer.advisor)
        return False

    async def _show(
        self, conversation: Conversation, positions: dict[str, int] | None = None
    ) -> None:
        """Push the conversation's status to its pages. Only under :meth:`exclusive`, with the
        conversation as stored: pages then see statuses in the order they were stored, and
        never one that changed before it was shown."""
        await self._presenter.status(conversation, positions)
        place = positions.get(conversation.id) if positions is not None else None
        self._shown[conversation.id] = (conversation.status, place)

    async def _publish_places(self) -> None:
        """Show every waiting visitor their place, read now, where it is not what their pages
        show last. Only under :meth:`exclusive` (see :meth:`_show`)."""
        conversations = await self._store.open_conversations()
        positions = queue_positions(conversations)
        for conversation in conversations:
            place = positions.get(conversation.id)
            if place is not None and self._shown.get(conversation.id) != (
                ConversationStatus.WAITING,
                place,
            ):
                await self._show(conversation, positions)
        open_ids = {c.id for c in conversations}
        for gone in [k for k in self._shown if k not in open_ids]:
            del self._shown[gone]

    async def skip(
        self,
        conversation_id: ConversationId,
        advisor: AdvisorMxid,
        *,
        reason: str = "The visitor was offered to another advisor.",
        dispatch: bool = True,
    ) -> bool:
        """Withdraw an offer the advisor did not take; the visitor keeps their place."""
        async with self.exclusive():
            conversation = await self._store.get_conversation(conversation_id)
            if (
                conversation is None
                or conversation.status is not ConversationStatus.INVITING
                or conversation.advisor != advisor
            ):
                return False
            requeued = dataclasses.replace(
                conversation,
                status=ConversationStatus.WAITING,
                advisor=None,
                invite_deadline=None,
                skipped=_with(conversation.skipped, advisor),
                # listed already, unless offered before invites were tracked
                invited=_with(conversation.invited, advisor),
            )
            await self._store.save_conversation(requeued)
        log.info("advisor %s skipped for conversation %s", advisor, conversation_id)
        await self.withdraw_invites(conversation_id, reason)
        if dispatch:
            await self.dispatch()
        return True

    async def expire_offers(self, snapshot: list[Conversation] | None = None) -> int:
        """Skip every advisor whose offer has run out. Returns how many were skipped.

        ``snapshot``: the open conversations if the caller just read them (each skip re-reads
        its conversation under the lock, so a stale snapshot does no harm)."""
        now = self._clock.now()
        if snapshot is None:
            snapshot = await self._store.open_conversations()
        await self._rebase_deadlines(now, snapshot)
        expired = [
            c
            for c in snapshot
            if c.status is ConversationStatus.INVITING
            and c.invite_deadline is not None
            and c.invite_deadline <= now
            and c.advisor is not None
        ]
        for conversation in expired:
            assert conversation.advisor is not None
            await self.skip(
                conversation.id,
                conversation.advisor,
                reason="The invitation was not accepted in time.",
                dispatch=False,
            )
        if expired:
            await self.dispatch()
        return len(expired)

    async def _rebase_deadlines(self, now: float, snapshot: list[Conversation]) -> None:
        """The clock went back: a deadline further away than a whole timeout is reset to one
        timeout from now, so an offer never waits for the clock to catch up."""
        limit = now + self._settings.invite_timeout

        def too_far(c: Conversation | None) -> bool:
            return (
                c is not None
                and c.status is ConversationStatus.INVITING
                and c.invite_deadline is not None
                and c.invite_deadline > limit
            )

        for candidate in [c for c in snapshot if too_far(c)]:  # rare: only after a clock step
            async with self.exclusive():
                c = await self._store.get_conversation(candidate.id)
                if too_far(c):
                    assert c is not None
                    await self._store.save_conversation(
                        dataclasses.replace(c, invite_deadline=limit)
                    )

    async def could_offer(self, snapshot: list[Conversation]) -> bool:
        """Whether a routing pass could offer anyone to anyone: someone waits with a room and
        some advisor has room. Cheap, so housekeeping skips pointless passes."""
        if not any(c.status is ConversationStatus.WAITING and c.room_id for c in snapshot):
            return False
        ring = RoundRobin(
            await self._store.advisors(),
            advisor_load(snapshot),
            None,
            default_capacity=self._settings.default_capacity,
        )
        return not ring.exhausted

    async def accept(self, conversation_id: ConversationId, advisor: AdvisorMxid) -> bool:
        """The advisor joined the room. True if they now own the conversation."""
        async with self.exclusive():
            conversation = await self._store.get_conversation(conversation_id)
            if conversation is None or not conversation.status.is_open:
                return False
            if conversation.status is ConversationStatus.ACTIVE:
                return conversation.advisor == advisor
            if (
                conversation.status is ConversationStatus.INVITING
                and conversation.advisor != advisor
            ):
                return False  # offered to somebody else meanwhile
            if advisor in conversation.invites_to_withdraw:
                return False  # joined on an invite taken back: the withdrawal removes them
            stored_advisor = await self._store.get_advisor(advisor)
            if stored_advisor is None:
                return False  # a guest (someone in the room invited them): owns nothing
            # a waiting visitor is taken by any advisor who joins on purpose, away or at
            # capacity: those decide whom the desk offers visitors to, not who may help
            active = dataclasses.replace(
                conversation,
                status=ConversationStatus.ACTIVE,
                advisor=advisor,
                invite_deadline=None,
                skipped=(),
                invited=_without(conversation.invited, advisor),  # taken
            )
            name = stored_advisor.name
            async with self._store.transaction():
                await self._store.save_conversation(active)
                note, _ = await self._store.add_message(
                    system_message(active.id, f"{name} joined the chat.", self._clock.now())
                )
            await self._presenter.message(note)
            await self._show(active)
        await self.dispatch()  # the queue moved: positions change
        return True

    async def release(
        self,
        conversation_id: ConversationId,
        advisor: AdvisorMxid,
        note: str,
        *,
        dispatch: bool = True,
    ) -> bool:
        """The owning advisor left without closing: the visitor goes back to the queue front."""
        async with self.exclusive():
            conversation = await self._store.get_conversation(conversation_id)
            if (
                conversation is None
                or conversation.status is not ConversationStatus.ACTIVE
                or conversation.advisor != advisor
            ):
                return False
            waiting = dataclasses.replace(
                conversation,
                status=ConversationStatus.WAITING,
                advisor=None,
                skipped=(advisor,),
            )
            async with self._store.transaction():
                await self._store.save_conversation(waiting)
                message, _ = await self._store.add_message(
                    system_message(waiting.id, note, self._clock.now())
                )
        await self._presenter.message(message)
        if dispatch:
            await self.dispatch()
        return True

    async def end(self, conversation_id: ConversationId, by: Sender, note: str) -> Conversation:
        """Close the conversation. Idempotent: ending an ended conversation changes nothing."""
        async with self.exclusive():
            conversation = await self._store.get_conversation(conversation_id)
            if conversation is None:
                raise LookupError(conversation_id)
            if not conversation.status.is_open:
                return conversation
            invited = conversation.invited
            if conversation.status is ConversationStatus.INVITING and conversation.advisor:
                invited = _with(invited, conversation.advisor)  # the offer is withdrawn
            ended = dataclasses.replace(
                conversation,
                status=ConversationStatus.ENDED,
                invite_deadline=None,
                ended_at=self._clock.now(),
                ended_by=by,
                invited=invited,
            )
            async with self._store.transaction():
                await self._store.save_conversation(ended)
                message, _ = await self._store.add_message(
                    system_message(ended.id, note, self._clock.now())
                )
            await self._presenter.message(message)
            await self._show(ended)
        log.info("conversation %s ended by %s", conversation_id, by.value)
        if ended.invites_to_withdraw:
            await self.withdraw_invites(conversation_id, "The chat has ended.")
        await self.dispatch()
        return ended

    async def withdraw_invites(
        self, conversation_id: ConversationId, reason: str = WITHDRAWN
    ) -> bool:
        """Withdraw the conversation's invites that are no longer an offer (see
        :attr:`~bridge.model.Conversation.invites_to_withdraw`); each is crossed off once the
        homeserver has done it. True if none is left; a failure is logged and left to
        :meth:`retry_withdrawals`."""
        conversation = await self._store.get_conversation(conversation_id)
        if conversation is None:
            return True
        try:
            for advisor in conversation.invites_to_withdraw:
                await self._withdraw(conversation_id, advisor, reason)
        except Exception:
            log.warning(
                "withdrawing an invite to %s failed; will retry", conversation_id, exc_info=True
            )
            return False
        return True

    async def _withdraw(
        self, conversation_id: ConversationId, advisor: AdvisorMxid, reason: str
    ) -> None:
        async with self._invite_locks((conversation_id, advisor)):
            # read again: offered to them again meanwhile, or withdrawn by another caller
            current = await self._store.get_conversation(conversation_id)
            if current is None or advisor not in current.invites_to_withdraw:
                return
            if current.room_id is not None:
                await self._gateway.revoke_invite(current.room_id, advisor, reason)
                log.info("withdrew the invite of %s to %s", advisor, conversation_id)
            async with self.exclusive():
                latest = await self._store.get_conversation(conversation_id)
                if latest is not None and advisor in latest.invites_to_withdraw:
                    await self._store.save_conversation(
                        dataclasses.replace(latest, invited=_without(latest.invited, advisor))
                    )

    async def retry_withdrawals(self) -> None:
        """Withdraw the invites a failure left behind (housekeeping runs this)."""
        for conversation in await self._store.invites_to_withdraw():
            await self.withdraw_invites(conversation.id)

    async def release_all_of(self, advisor: AdvisorMxid, note: str) -> None:
        """The advisor is gone (offline, removed): every visitor they had goes back to the
        front of the queue; none is left stranded with nobody."""
        for conversation in await self._store.open_conversations():
            if conversation.advisor != advisor:
                continue
            if conversation.status is ConversationStatus.INVITING:
                await self.skip(conversation.id, advisor, reason=note, dispatch=False)
            elif conversation.status is ConversationStatus.ACTIVE:
                await self.release(conversation.id, advisor, note, dispatch=False)
        await self.dispatch()

    async def requeue_offers_of(self, advisor: AdvisorMxid) -> None:
        """The advisor became unreachable: their pending offers go to someone else now."""
        for conversation in await self._store.open_conversations():
            if (
                conversation.status is ConversationStatus.INVITING
                and conversation.advisor == advisor
            ):
                await self.skip(
                    conversation.id,
                    advisor,
                    reason="You are no longer available.",
                    dispatch=False,
                )
        await self.dispatch()


def _with(mxids: tuple[AdvisorMxid, ...], mxid: AdvisorMxid) -> tuple[AdvisorMxid, ...]:
    return tuple(dict.fromkeys(mxids + (mxid,)))


def _without(mxids: tuple[AdvisorMxid, ...], mxid: AdvisorMxid) -> tuple[AdvisorMxid, ...]:
    return tuple(m for m in mxids if m != mxid)


def system_message(conversation_id: ConversationId, body: str, now: float) -> Message:
    return Message(
        id=MessageId(uuid.uuid4().hex),
        conversation_id=conversation_id,
        seq=0,
        sender=Sender.SYSTEM,
        author="Switchboard",
        body=body,
        ts=now,
        delivered=True,
    )
