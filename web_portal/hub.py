"""Live push to visitors' open pages: the core's VisitorChannel over websockets.

Each socket has a bounded queue and its own writer, so one slow browser never stalls the others;
a socket whose queue overflows is closed and its page catches up from the history on reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiohttp import web

from bridge.model import ConversationId
from bridge.ports import (
    MessageChangedEvent,
    MessageEvent,
    ReadEvent,
    StatusEvent,
    TypingEvent,
    VisitorEvent,
)

from .serialize import message_json, view_json

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
SEQS_REMEMBERED = 256
CLOSE_TOO_SLOW = 1013  # "try again later": the page reconnects and reads the backlog


def event_json(event: VisitorEvent) -> dict[str, Any]:
    if isinstance(event, MessageEvent):
        return {"type": "message", "message": message_json(event.message)}
    if isinstance(event, MessageChangedEvent):
        # not "message": the page has that seq already and would ignore it
        return {"type": "update", "message": message_json(event.message)}
    if isinstance(event, StatusEvent):
        return {"type": "status", "conversation": view_json(event.conversation)}
    if isinstance(event, TypingEvent):
        return {"type": "typing", "typing": event.typing, "name": event.name}
    if isinstance(event, ReadEvent):
        return {"type": "read", "up_to": event.up_to}
    raise TypeError(event)


class Subscriber:
    """One open page. Live events that arrive while its backlog is being read are held, then
    sent after the backlog; a message is never sent twice (the page orders them by seq).

    Thousands of pages wait in a queue at once, so an idle page costs little: no queue and no
    writer task until there is something to write (both go once it is written), and the seqs
    already sent are bits of one int rather than a set."""

    __slots__ = ("ws", "_pending", "_held", "_seen_from", "_seen", "_dropped", "_writer")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._pending: deque[dict[str, Any]] | None = None
        self._held: list[dict[str, Any]] | None = []
        # bit i of _seen: message _seen_from + i was sent
        self._seen_from = 0
        self._seen = 0
        self._dropped = False
        self._writer: asyncio.Future[None] | None = None

    def offer(self, frame: dict[str, Any]) -> None:
        if self._dropped:
            return
        if self._held is not None:
            self._held.append(frame)
            if len(self._held) > QUEUE_SIZE:
                self._too_slow()
        else:
            self._put(frame)

    def replay(self, backlog: list[dict[str, Any]]) -> None:
        """Send the backlog, then whatever arrived meanwhile, then go live."""
        held, self._held = self._held or [], None
        for frame in backlog + held:
            self._put(frame)

    def _put(self, frame: dict[str, Any]) -> None:
        if self._dropped:
            return
        if frame.get("type") == "message" and not self._first_time(frame["message"]["seq"]):
            return  # already sent (it was both in the backlog and live)
        if self._pending is None:
            self._pending = deque()
        if len(self._pending) >= QUEUE_SIZE:
            self._too_slow()
            return
        self._pending.append(frame)
        if self._writer is None or self._writer.done():  # done: cancelled before it ran
            self._writer = asyncio.ensure_future(self._write())

    def _first_time(self, seq: int) -> bool:
        """Whether message ``seq`` is new to this page, which is then noted. The newest
        SEQS_REMEMBERED to twice as many seqs are remembered: overlaps only happen near the
        newest messages, and an older one is sent again (the page ignores it)."""
        seen, base = self._seen, self._seen_from
        if not seen:
            base = seq
        elif seq < base:
            if base + seen.bit_length() - seq > 2 * SEQS_REMEMBERED:
                return True  # older than anything remembered
            seen, base = seen << (base - seq), seq
        elif seen >> (seq - base) & 1:
            return False
        if seq - base >= 2 * SEQS_REMEMBERED:
            forget = seq - base + 1 - SEQS_REMEMBERED
            seen, base = seen >> forget, base + forget
        self._seen, self._seen_from = seen | 1 << (seq - base), base
        return True

    async def _write(self) -> None:
        pending = self._pending
        try:
            while pending:
                await self.ws.send_json(pending.popleft())
        finally:
            # idle again: drop the queue and this task rather than keep them for the next frame
            self._writer = None
            if self._pending is pending and not pending:
                self._pending = None

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def _too_slow(self) -> None:
        log.info("closing a websocket that does not keep up")
        self._dropped, self._held = True, None
        if self._pending is not None:
            self._pending.clear()
        asyncio.ensure_future(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        # stop the writer first (between frames: it waits for the socket to drain), so the
        # close frame follows whole frames
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
        await self.ws.close(code=CLOSE_TOO_SLOW, message=b"too slow")


class VisitorHub:
    def __init__(self) -> None:
        # a tuple per conversation: almost always one page, and publishing iterates a snapshot
        self._subscribers: dict[ConversationId, tuple[Subscriber, ...]] = {}

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None:
        if conversation_id in self._subscribers:
            self.publish_frame(conversation_id, event_json(event))

    def publish_frame(self, conversation_id: ConversationId, frame: dict[str, Any]) -> None:
        """Hand an already serialised event to this process's pages of the conversation."""
        for subscriber in self._subscribers.get(conversation_id, ()):
            subscriber.offer(frame)

    def watched(self) -> list[ConversationId]:
        """The conversations open in a page of this process."""
        return list(self._subscribers)

    def is_watching(self, conversation_id: ConversationId) -> bool:
        return conversation_id in self._subscribers

    def subscribe(self, conversation_id: ConversationId, subscriber: Subscriber) -> None:
        self._subscribers[conversation_id] = (
            *self._subscribers.get(conversation_id, ()),
            subscriber,
        )

    def unsubscribe(self, conversation_id: ConversationId, subscriber: Subscriber) -> None:
        others = tuple(
            s for s in self._subscribers.get(conversation_id, ()) if s is not subscriber
        )
        if others:
            self._subscribers[conversation_id] = others
        else:
            self._subscribers.pop(conversation_id, None)

    async def close_all(self, code: int = 1001, reason: bytes = b"server restarting") -> None:
        """Tell every page to come back (it reconnects by itself and catches up by seq)."""
        sockets = [sub.ws for subs in self._subscribers.values() for sub in subs]
        await asyncio.gather(
            *(ws.close(code=code, message=reason) for ws in sockets), return_exceptions=True
        )

    def __len__(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
