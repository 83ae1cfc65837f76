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
from bridge.ports import MessageEvent, ReadEvent, StatusEvent, TypingEvent, VisitorEvent

from .serialize import message_json, view_json

log = logging.getLogger(__name__)

QUEUE_SIZE = 256
SEQS_REMEMBERED = 256
CLOSE_TOO_SLOW = 1013  # "try again later": the page reconnects and reads the backlog


def event_json(event: VisitorEvent) -> dict[str, Any]:
    if isinstance(event, MessageEvent):
        return {"type": "message", "message": message_json(event.message)}
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

    An idle page costs little: a small deque, and a writer task only while there is something
    to write (thousands of pages wait in a queue at once)."""

    __slots__ = ("ws", "_pending", "_held", "_sent_seqs", "_dropped", "_writer")

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._pending: deque[dict[str, Any]] = deque()
        self._held: list[dict[str, Any]] | None = []
        self._sent_seqs: set[int] = set()
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
        if frame.get("type") == "message":
            seq = frame["message"]["seq"]
            if seq in self._sent_seqs:
                return  # already sent (it was both in the backlog and live)
            self._sent_seqs.add(seq)
            if len(self._sent_seqs) > 2 * SEQS_REMEMBERED:
                # overlaps only happen near the newest messages: forget the old ones
                self._sent_seqs = set(sorted(self._sent_seqs)[-SEQS_REMEMBERED:])
        if len(self._pending) >= QUEUE_SIZE:
            self._too_slow()
            return
        self._pending.append(frame)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        while self._pending:
            await self.ws.send_json(self._pending.popleft())

    def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    def _too_slow(self) -> None:
        log.info("closing a websocket that does not keep up")
        self._dropped, self._held = True, None
        self._pending.clear()
        asyncio.ensure_future(self._close_too_slow())

    async def _close_too_slow(self) -> None:
        # stop the writer first (between frames: it waits for the socket to drain), so the
        # close frame follows whole frames
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
        await self.ws.close(code=CLOSE_TOO_SLOW, message=b"too slow")


class VisitorHub:
    def __init__(self) -> None:
        self._subscribers: dict[ConversationId, set[Subscriber]] = {}

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None:
        if self._subscribers.get(conversation_id):
            self.publish_frame(conversation_id, event_json(event))

    def publish_frame(self, conversation_id: ConversationId, frame: dict[str, Any]) -> None:
        """Hand an already serialised event to this process's pages of the conversation."""
        for subscriber in list(self._subscribers.get(conversation_id, ())):
            subscriber.offer(frame)

    def watched(self) -> list[ConversationId]:
        """The conversations open in a page of this process."""
        return list(self._subscribers)

    def is_watching(self, conversation_id: ConversationId) -> bool:
        return bool(self._subscribers.get(conversation_id))

    def subscribe(self, conversation_id: ConversationId, subscriber: Subscriber) -> None:
        self._subscribers.setdefault(conversation_id, set()).add(subscriber)

    def unsubscribe(self, conversation_id: ConversationId, subscriber: Subscriber) -> None:
        subscribers = self._subscribers.get(conversation_id)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._subscribers[conversation_id]

    async def close_all(self, code: int = 1001, reason: bytes = b"server restarting") -> None:
        """Tell every page to come back (it reconnects by itself and catches up by seq)."""
        sockets = [sub.ws for subs in self._subscribers.values() for sub in subs]
        await asyncio.gather(
            *(ws.close(code=code, message=reason) for ws in sockets), return_exceptions=True
        )

    def __len__(self) -> int:
        return sum(len(s) for s in self._subscribers.values())
