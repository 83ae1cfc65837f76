"""Visitor events across processes sharing PostgreSQL: NOTIFY out, LISTEN in.

Every process publishes a visitor's events with NOTIFY and hands what it hears to the pages
open in it, so any portal process can serve any visitor. Messages travel as a reference (the
conversation and seq, or the message id of an edit or removal; the text is read from the
database) because NOTIFY payloads are small.
Every few seconds each process also announces which conversations are open in its pages, so a
queued visitor watching from another process is not taken for gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

import asyncpg
from mautrix.util.async_db import Database

from bridge.logcontext import working_on
from bridge.model import ConversationId, MessageId
from bridge.ports import (
    ConversationView,
    MessageChangedEvent,
    MessageEvent,
    ReadEvent,
    StatusEvent,
    Store,
    TypingEvent,
    VisitorEvent,
)

from .url import DatabaseUrl

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
WATCH_TTL = 3 * HEARTBEAT_SECONDS
IDS_PER_NOTIFY = 150  # 150 × ~40 bytes stays well under NOTIFY's 8000-byte payload limit
RECONNECT_PAUSE = 0.5
CLOSE_CATCH_UP = 1012  # "service restart": the page reconnects and reads what it missed


class LocalPages(Protocol):
    """The pages open in this process (the portal's hub)."""

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None: ...
    def is_watching(self, conversation_id: ConversationId) -> bool: ...
    def watched(self) -> list[ConversationId]: ...
    async def close_all(self, code: int = 1001, reason: bytes = b"") -> None: ...


def _hint_json(event: VisitorEvent) -> dict[str, Any]:
    """A hint as a small JSON object (messages travel as a reference instead)."""
    if isinstance(event, StatusEvent):
        return {"status": dataclasses.asdict(event.conversation)}
    if isinstance(event, TypingEvent):
        return {"typing": event.typing, "name": event.name}
    if isinstance(event, ReadEvent):
        return {"read": event.up_to}
    raise TypeError(event)


def _hint_from_json(note: dict[str, Any]) -> VisitorEvent:
    if "status" in note:
        return StatusEvent(ConversationView(**note["status"]))
    if "typing" in note:
        return TypingEvent(typing=bool(note["typing"]), name=str(note["name"]))
    return ReadEvent(up_to=int(note["read"]))


class PgFanout:
    """The core's VisitorChannel for several processes on one PostgreSQL schema."""

    def __init__(
        self,
        db_url: DatabaseUrl,
        db: Database,
        store: Store,
        hub: LocalPages,
        outbox_changed: Callable[[], None] = lambda: None,
    ) -> None:
        self._url = db_url
        self._db = db
        self._store = store
        self._hub = hub
        self._outbox_changed = outbox_changed
        self.channel = self.channel_name(db_url)
        self._conn: asyncpg.Connection | None = None
        self._remote: dict[str, float] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._lost = asyncio.Event()

    @staticmethod
    def channel_name(db_url: DatabaseUrl) -> str:
        """The NOTIFY channel of the processes sharing this schema."""
        schema = db_url.schema or "public"
        return "switchboard_" + hashlib.sha256(schema.encode()).hexdigest()[:16]

    async def start(self) -> None:
        self._runner = asyncio.create_task(self._run())
        await asyncio.wait_for(self._connected.wait(), 30)

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()

    async def _connect(self) -> asyncpg.Connection:
        conn = await asyncpg.connect(
            self._url.mautrix_url, server_settings=self._url.server_settings
        )
        self._lost.clear()
        conn.add_termination_listener(lambda _conn: self._lost.set())
        await conn.add_listener(self.channel, self._heard)
        return conn

    async def _run(self) -> None:
        """Keep a listening connection; after losing one, make every page catch up."""
        first = True
        while True:
            try:
                self._conn = await self._connect()
            except (OSError, asyncpg.PostgresError) as e:
                log.warning("cannot listen for visitor events (%s); retrying", e)
                await asyncio.sleep(RECONNECT_PAUSE)
                continue
            if not first:
                # notifications sent while we were not listening are lost: pages re-read,
                # and the dispatcher looks for outbox rows it was not told about
                await self._hub.close_all(CLOSE_CATCH_UP, b"catch up")
                self._outbox_changed()
            first = False
            self._connected.set()
            try:
                while not self._conn.is_closed() and not self._lost.is_set():
                    await self._announce_watched()
                    try:  # (asyncio.timeout: wait_for can swallow a cancellation on 3.11)
                        async with asyncio.timeout(HEARTBEAT_SECONDS):
                            await self._lost.wait()
                    except TimeoutError:
                        pass
                log.warning("lost the visitor event listener; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
                log.warning("lost the visitor event listener (%s); reconnecting", e)
            finally:
                if not self._conn.is_closed():
                    self._conn.terminate()

    async def _notify(self, payload: dict[str, Any]) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        await self._db.execute("SELECT pg_notify($1, $2)", self.channel, text)

    async def publish(self, conversation_id: ConversationId, event: VisitorEvent) -> None:
        if isinstance(event, MessageEvent):
            await self._notify({"c": conversation_id, "m": event.message.seq})
        elif isinstance(event, MessageChangedEvent):
            await self._notify({"c": conversation_id, "u": event.message.id})
        else:
            await self._notify({"c": conversation_id, "h": _hint_json(event)})

    def is_watching(self, conversation_id: ConversationId) -> bool:
        seen = self._remote.get(conversation_id)
        return self._hub.is_watching(conversation_id) or (
            seen is not None and time.monotonic() - seen < WATCH_TTL
        )

    async def _announce_watched(self) -> None:
        watched = self._hub.watched()
        for i in range(0, len(watched), IDS_PER_NOTIFY):
            await self._notify({"w": watched[i : i + IDS_PER_NOTIFY]})
        cutoff = time.monotonic() - WATCH_TTL
        for stale in [c for c, t in self._remote.items() if t < cutoff]:
            del self._remote[stale]

    def _heard(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
            if "o" in note:
                self._outbox_changed()
                return
            if "w" in note:
                now = time.monotonic()
                for conversation_id in note["w"]:
                    self._remote[conversation_id] = now
                return
            conversation_id = ConversationId(note["c"])
            if not self._hub.is_watching(conversation_id):
                return  # nobody here has that page open
            if "h" in note:
                self._spawn(self._hub.publish(conversation_id, _hint_from_json(note["h"])))
            elif "u" in note:
                self._spawn(self._relay_change(conversation_id, MessageId(str(note["u"]))))
            else:
                self._spawn(self._relay_message(conversation_id, int(note["m"])))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed visitor event notification")

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relay_change(self, conversation_id: ConversationId, message_id: MessageId) -> None:
        try:
            message = await self._store.get_message(message_id)
            if message is not None and message.conversation_id == conversation_id:
                await self._hub.publish(conversation_id, MessageChangedEvent(message))
        except Exception:
            # the page still gets it: changed messages are sent again when it reconnects
            log.warning("could not relay a change in %s", conversation_id, exc_info=True)

    async def _relay_message(self, conversation_id: ConversationId, seq: int) -> None:
        working_on(conversation_id)  # a task of its own: its lines are about this conversation
        try:
            for message in await self._store.messages(conversation_id, seq - 1):
                if message.seq == seq:
                    await self._hub.publish(conversation_id, MessageEvent(message))
                    return
        except Exception:
            # the page still gets it: from the history when it reconnects
            log.warning("could not relay message %d of %s", seq, conversation_id, exc_info=True)
