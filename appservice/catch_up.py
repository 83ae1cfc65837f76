"""Events the homeserver never pushed to us, read back from the rooms once it is reachable again.

Synapse holds the events waiting to be pushed to an appservice in memory while an earlier push is
in flight; if it stops then, those events are never pushed (element-hq/synapse#11637), and an
advisor's message, join or command is lost without a trace on either side. So Switchboard
watches for signs that the homeserver went away (our own requests to it failing, a transaction
id coming back after a restart, or our own start-up) and, once it answers again, reads the
recent events of every room it serves and handles those it has not handled yet. Handling is
idempotent by event id (the endpoint's log), so an event both pushed and read back counts once.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import aiohttp
from mautrix.api import HTTPAPI, Method, Path
from mautrix.errors import MatrixConnectionError, MatrixRequestError

from bridge.model import RoomId
from bridge.ports import Clock

log = logging.getLogger(__name__)

# After a catch-up, the rooms are read again a little later: just after it comes back, Synapse
# can still store a transaction for us that it never sends (its recoverer and its sender race
# over whether we are up), with events newer than the first reading.
FOLLOW_UPS = (10.0, 60.0)
MARGIN = 60.0  # seconds before the last push: events may wait that long behind a slow push
PAGE = 100
MAX_PAGES = 20  # per room and catch-up: 2,000 events, far more than a chat has in minutes
UNAVAILABLE = {502, 503, 504}
# what the desk reacts to (not ephemerals): messages (edits and notices among them), joins and
# leaves, and removals
EVENT_TYPES = ["m.room.message", "m.room.member", "m.room.redaction"]


class HomeserverWatch:
    """Notices from our own traffic when events may have gone missing, and since when.

    ``gap_since`` is None while nothing suggests a loss; otherwise the wall-clock time (seconds)
    from which the rooms must be read again, once now and then again after each of
    ``FOLLOW_UPS``. The generation lets a catch-up clear only the gap it covered, not one noticed
    while it ran.
    """

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.last_push: float | None = None
        self.gap_since: float | None = None
        self._generation = 0
        self._follow_ups: list[float] = []
        self._due = 0.0  # monotonic time of the next reading

    def trace_config(self) -> aiohttp.TraceConfig:
        """Hooks for the HTTP session that talks to the homeserver."""
        trace = aiohttp.TraceConfig()
        trace.on_request_exception.append(self._on_exception)
        trace.on_request_end.append(self._on_end)
        return trace

    async def _on_exception(self, _session: Any, _ctx: Any, params: Any) -> None:
        if isinstance(params.exception, (aiohttp.ClientConnectionError, asyncio.TimeoutError)):
            self.suspect_gap("the homeserver could not be reached")

    async def _on_end(self, _session: Any, _ctx: Any, params: Any) -> None:
        if params.response.status in UNAVAILABLE:
            self.suspect_gap(f"the homeserver answered {params.response.status}")

    def pushed(self) -> None:
        """The homeserver delivered a transaction."""
        self.last_push = self._clock.now()

    def suspect_gap(self, why: str, since: float | None = None) -> None:
        """Events may have been lost: from ``since``, or from the last push (or now)."""
        start = self._clock.now() if since is None else since
        if self.last_push is not None:
            start = min(start, self.last_push)
        start -= MARGIN
        if self.gap_since is None:
            log.info("%s: the rooms will be read again once it answers", why)
        self.gap_since = start if self.gap_since is None else min(self.gap_since, start)
        self._generation += 1
        self._follow_ups = list(FOLLOW_UPS)
        self._due = 0.0

    def gap(self) -> tuple[float, int] | None:
        """Where a catch-up due now should start, and the generation to give
        :meth:`caught_up`; None if none is due."""
        if self.gap_since is None or self._clock.monotonic() < self._due:
            return None
        return self.gap_since, self._generation

    def caught_up(self, generation: int) -> None:
        """The catch-up given ``generation`` read every room."""
        if generation != self._generation:
            return  # a new gap was noticed meanwhile: it is due at once
        if self._follow_ups:
            self._due = self._clock.monotonic() + self._follow_ups.pop(0)
        else:
            self.gap_since = None

    @property
    def settled(self) -> bool:
        """No catch-up due now or later."""
        return self.gap_since is None


class EventReplayer(Protocol):
    async def replay(self, read: Callable[[], Awaitable[list[dict[str, Any]]]]) -> int: ...


class CatchUp:
    """Reads back the events of the desk's rooms since a time, and hands them to the endpoint.

    Args:
        api: The bot's client API (the bot is in every room the desk serves).
        rooms: The rooms to read: open conversations and advisors' direct chats with the bot.
        endpoint: Handles the events it has not handled yet, in order.
    """

    def __init__(
        self,
        api: HTTPAPI,
        rooms: Callable[[], Awaitable[Iterable[RoomId]]],
        endpoint: EventReplayer,
    ) -> None:
        self._api = api
        self._rooms = rooms
        self._endpoint = endpoint

    async def run(self, since: float) -> bool:
        """Catch up on every room; False if a room could not be read (try again later)."""
        complete, handled, rooms = True, 0, 0
        for room_id in await self._rooms():
            rooms += 1
            try:
                handled += await self._endpoint.replay(
                    functools.partial(self._events_since, room_id, int(since * 1000))
                )
            except MatrixRequestError as e:
                if e.http_status in UNAVAILABLE or e.http_status == 429:
                    complete = False
                else:  # we left, or may not read it: nothing of ours happens there any more
                    log.debug("cannot read %s to catch up: %s", room_id, e)
                continue
            except (MatrixConnectionError, asyncio.TimeoutError) as e:
                log.debug("catching up on %s failed (%s); will try again", room_id, e)
                return False  # the homeserver is still away: the next tick tries again
        if handled:
            log.warning("caught up on %d event(s) the homeserver had not pushed", handled)
        log.info("caught up on %d room(s); complete: %s", rooms, complete)
        return complete

    async def events_since(self, room_id: str, since: float) -> list[dict[str, Any]]:
        """The events of a room the desk serves at or after ``since`` (wall-clock seconds),
        oldest first; none from a room we may not read (not one of ours)."""
        try:
            return await self._events_since(RoomId(room_id), int(since * 1000))
        except MatrixRequestError as e:
            if e.http_status in UNAVAILABLE or e.http_status == 429:
                raise
            log.debug("cannot read %s back: %s", room_id, e)
            return []

    async def _events_since(self, room_id: RoomId, since_ms: int) -> list[dict[str, Any]]:
        """The room's events of ``EVENT_TYPES`` at or after ``since_ms``, oldest first."""
        found: list[dict[str, Any]] = []
        query = {"dir": "b", "limit": str(PAGE), "filter": json.dumps({"types": EVENT_TYPES})}
        for _ in range(MAX_PAGES):
            page = await self._api.request(
                Method.GET, Path.v3.rooms[room_id].messages, query_params=query
            )
            chunk = page.get("chunk") if isinstance(page, dict) else None
            if not isinstance(chunk, list) or not chunk:
                break
            older = False
            for event in chunk:
                ts = event.get("origin_server_ts") if isinstance(event, dict) else None
                if not isinstance(ts, int) or ts < since_ms:
                    older = True
                    continue
                found.append(event)
            end = page.get("end")
            if older or not isinstance(end, str):
                break
            query["from"] = end
        else:
            log.warning("%s has more than %d events to catch up on", room_id, PAGE * MAX_PAGES)
        found.reverse()
        return found
