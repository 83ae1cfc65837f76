"""Who the advisors are and whether they can take visitors now."""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

from ..errors import InvalidInput, NotFound  # noqa: F401
from ..events import AdvisorAdded, MembershipChanged, PresenceMayBeStale, PresenceUnknown
from ..model import (
    MAX_CAPACITY,
    Advisor,
    AdvisorMxid,
    AdvisorTransition,
    Presence,
    RoomId,
    parse_mxid,
)
from ..outbox import UnitOfWork
from ..ports import Clock, Store
from .groups import place_new_advisor
from .queue import QueueService

log = logging.getLogger(__name__)


#: a proof of life is written at most this often per advisor (a busy advisor sends many)
SEEN_EVERY = 60.0


class AdvisorService:
    def __init__(
        self,
        store: Store,
        uow: UnitOfWork,
        queue: QueueService,
        clock: Clock,
        is_local: Callable[[AdvisorMxid], bool],
    ) -> None:
        self._store = store
        self._uow = uow
        self._queue = queue
        self._clock = clock
        self._is_local = is_local
        self._seen: dict[AdvisorMxid, float] = {}

    async def get(self, mxid: str) -> Advisor | None:
        return await self._store.get_advisor(AdvisorMxid(mxid))

    async def list(self) -> list[Advisor]:
        return await self._store.advisors()

    async def add(
        self, mxid: str, display_name: str | None = None, *, welcome: bool = True
    ) -> tuple[Advisor, bool]:
        """Make a Matrix user an advisor (away until they say ``!available``); ``welcome``:
        the bot opens a direct chat with them, with instructions."""
        advisor_id = parse_mxid(mxid)
        existing = await self._store.get_advisor(advisor_id)
        if existing is not None:
            return existing, False
        advisor = Advisor(mxid=advisor_id, display_name=display_name)
        async with self._uow() as batch:
            await self._store.save_advisor(advisor)
            await place_new_advisor(self._store, batch, advisor_id)
            if welcome:
                batch.raise_([AdvisorAdded(advisor_id)])
        log.info("advisor %s added", advisor_id)
        return advisor, True

    async def welcome(self, mxid: str) -> None:
        """The bot opens a direct chat with the advisor (if it has none yet) and greets them."""
        async with self._uow() as batch:
            batch.raise_([AdvisorAdded(parse_mxid(mxid))])

    async def remove(self, mxid: str) -> None:
        advisor_id = parse_mxid(mxid)
        signs = [c.sign for c in await self._store.call_signs() if c.advisor == advisor_id]
        if signs:
            raise InvalidInput(
                f"The call sign {signs[0]} reaches {advisor_id}; give it another target "
                f"(!callsign set {signs[0]} …) or remove it (!callsign remove {signs[0]}) first."
            )
        async with self._uow() as batch:
            groups = await self._store.memberships_of(advisor_id)
            if not await self._store.remove_advisor(advisor_id):
                raise NotFound(f"{advisor_id} is not an advisor.")
            # out of their groups' spaces too
            batch.raise_([MembershipChanged(m.group_id, advisor_id, None) for m in groups])
        log.info("advisor %s removed", advisor_id)
        await self._queue.release_all_of(
            advisor_id, "Your advisor had to leave. We are finding you another one."
        )
        await self._queue.advisors_changed()

    async def _update(self, mxid: str, **changes: object) -> Advisor:
        advisor = await self._store.get_advisor(AdvisorMxid(mxid))
        if advisor is None:
            raise NotFound(f"{mxid} is not an advisor. An admin can add you with !advisor add.")
        updated = dataclasses.replace(advisor, **changes)  # type: ignore[arg-type]
        if updated != advisor:
            await self._store.save_advisor(updated)
        return updated

    async def _change(
        self, mxid: str, transition: Callable[[Advisor], AdvisorTransition]
    ) -> tuple[Advisor, Advisor]:
        """Apply the advisor's transition; commit it with its events. (before, after)"""
        advisor = await self._store.get_advisor(AdvisorMxid(mxid))
        if advisor is None:
            raise NotFound(f"{mxid} is not an advisor. An admin can add you with !advisor add.")
        changed, raised = transition(advisor)
        if changed != advisor:
            async with self._uow() as batch:
                await self._store.save_advisor(changed)
                batch.raise_(raised)
        return advisor, changed

    async def set_available(self, mxid: str, available: bool) -> Advisor:
        _, advisor = await self._change(mxid, lambda a: a.make_available(available))
        if not available:
            await self._queue.requeue_offers_of(advisor.mxid)
        return advisor

    async def set_capacity(self, mxid: str, capacity: int | None) -> Advisor:
        if capacity is not None and not 1 <= capacity <= MAX_CAPACITY:
            raise InvalidInput(f"Capacity must be between 1 and {MAX_CAPACITY}.")
        _, advisor = await self._change(mxid, lambda a: a.take_up_to(capacity))
        return advisor

    async def set_control_room(self, mxid: str, room_id: RoomId) -> None:
        await self._update(mxid, control_room=room_id)

    async def set_display_name(self, mxid: str, name: str | None) -> None:
        if await self._store.get_advisor(AdvisorMxid(mxid)) is not None:
            await self._update(mxid, display_name=name)

    async def joined_a_room(self, mxid: str) -> None:
        """An advisor joined a room the bot is in (their chat with it, a visitor's room): if
        their presence is still unknown, the homeserver is asked for it once (it pushes only
        changes, and only for users who share a room with the desk)."""
        advisor = await self._store.get_advisor(AdvisorMxid(mxid))
        if advisor is not None and advisor.presence is Presence.UNKNOWN:
            async with self._uow() as batch:
                batch.raise_([PresenceUnknown(advisor.mxid)])

    async def seen_alive(self, mxid: str) -> None:
        """Proof that an advisor of another homeserver is alive (a presence push, a message,
        typing, a join): public listings show them only with a recent one, since their
        server's presence outlives it by up to half an hour. Nothing for the desk's own
        homeserver's advisors, whose presence is first-hand."""
        advisor = AdvisorMxid(mxid)
        if self._is_local(advisor):
            return
        now = self._clock.now()
        last = self._seen.get(advisor)
        if last is not None and 0 <= now - last < SEEN_EVERY:
            return
        self._seen[advisor] = now
        await self._store.advisor_seen(advisor, now)

    async def presence_may_be_stale(self) -> None:
        """The homeserver was away (a catch-up read the rooms back): the presence changes it
        held for us then are not pushed again, so every advisor is asked once."""
        advisors = await self._store.advisors()
        async with self._uow() as batch:
            batch.raise_([PresenceMayBeStale(a.mxid, a.presence.value) for a in advisors])

    async def presence_changed(
        self, mxid: str, presence: Presence, *, unless_known: bool = False
    ) -> None:
        """Matrix presence: an advisor who goes offline or unavailable gets no new visitors.

        ``unless_known``: an answer to our own question, which a pushed change that came
        meanwhile is newer than."""
        if await self._store.get_advisor(AdvisorMxid(mxid)) is None:
            return  # not an advisor: their presence is nothing to the desk
        if not unless_known:  # pushed by their homeserver, not our question's answer
            await self.seen_alive(mxid)

        def seen(a: Advisor) -> AdvisorTransition:
            if unless_known and a.presence is not Presence.UNKNOWN:
                return a, []
            return a.seen_as(presence)

        before, updated = await self._change(mxid, seen)
        if before == updated:
            return
        log.debug("presence of %s is now %s", mxid, presence.value)
        if presence is Presence.OFFLINE:
            # gone (the homeserver already waited for their client): nobody stays stranded
            await self._queue.release_all_of(
                updated.mxid, "Your advisor was disconnected. We are finding you another one."
            )
        elif before.reachable and not updated.reachable:
            await self._queue.requeue_offers_of(updated.mxid)
