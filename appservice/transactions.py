"""The appservice endpoint the homeserver pushes to, with durable idempotency.

Unlike mautrix's default handler, a transaction is acknowledged only after its events are
handled and recorded: a failure answers 500, and the homeserver retries it. Events already
handled (by event id, recorded in the database) are skipped, whichever transaction brings them
again: transaction ids alone are not trusted (Synapse can reuse them after a restart).

Until Switchboard is ready (database open, bot registered) every transaction answers 503 for
the same reason: the homeserver keeps it and pushes it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from bridge.outbox import CAUSE, Cause

log = logging.getLogger(__name__)

MAX_TRANSACTION_BYTES = 16 * 1024 * 1024  # Synapse sends up to ~6.4 MiB


class TransactionLog(Protocol):
    async def transaction_done(self, txn_id: str) -> bool: ...
    async def mark_transaction(self, txn_id: str) -> None: ...
    async def event_handled(self, event_id: str) -> bool: ...
    async def mark_event(self, event_id: str) -> None: ...


class EventSink(Protocol):
    async def handle(self, event: Any) -> None: ...
    async def handle_ephemeral(self, event: Any) -> None: ...


class Directory(Protocol):
    """Answers the homeserver's alias and user queries (see ``appservice.call_signs``)."""

    async def alias_exists(self, alias: str) -> bool: ...
    async def user_exists(self, user_id: str) -> bool: ...


class PushWatch(Protocol):
    def pushed(self) -> None: ...
    def suspect_gap(self, why: str, since: float | None = None) -> None: ...
    @property
    def gap_since(self) -> float | None: ...


#: The events of a room at or after a time, oldest first, read back from the homeserver.
ReadBack = Callable[[str, float], Awaitable[list[Any]]]

#: Told each transaction's outcome (``ok``, ``failed``, ``not_ready``, ``forbidden``,
#: ``bad_request``) and, for one that was handled, how many seconds it took (the metrics).
Report = Callable[[str, "float | None"], None]


def _report_nothing(outcome: str, seconds: float | None) -> None:
    pass


def _error(status: int, errcode: str, error: str) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error}, status=status)


class AppserviceEndpoint:
    def __init__(
        self,
        hs_token: str,
        log_store: TransactionLog,
        sink: EventSink,
        watch: PushWatch | None = None,
        not_ready: Callable[[], str | None] = lambda: None,
        report: Report = _report_nothing,
        directory: Directory | None = None,
    ) -> None:
        self._directory = directory
        self._hs_token = hs_token.encode()
        self._not_ready = not_ready
        self._report = report
        self._log = log_store
        self._sink = sink
        self._watch = watch
        self._repeating = False  # the last transaction's id had been seen before
        self._lock = asyncio.Lock()
        self.transactions_handled = 0
        #: set by the catch-up: how to read a room's recent events back (see :meth:`_handle`)
        self.read_back: ReadBack | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_TRANSACTION_BYTES)
        app.add_routes(
            [
                web.put("/_matrix/app/v1/transactions/{txn_id}", self.transaction),
                web.put("/transactions/{txn_id}", self.transaction),
                web.post("/_matrix/app/v1/ping", self.ping),
                web.get("/_matrix/app/v1/users/{user_id}", self.query_user),
                web.get("/users/{user_id}", self.query_user),
                web.get("/_matrix/app/v1/rooms/{alias}", self.query_alias),
                web.get("/rooms/{alias}", self.query_alias),
            ]
        )
        return app

    def _authorised(self, request: web.Request) -> bool:
        header = request.headers.get("Authorization", "")
        token = (
            header[7:] if header.startswith("Bearer ") else request.query.get("access_token", "")
        )
        return bool(token) and secrets.compare_digest(token.encode(), self._hs_token)

    async def transaction(self, request: web.Request) -> web.Response:
        arrived = time.monotonic()
        if not self._authorised(request):
            self._report("forbidden", None)
            return _error(403, "M_FORBIDDEN", "Bad or missing hs_token")
        waiting = self._not_ready()
        if waiting is not None:
            # not yet able to record it: the homeserver keeps it and retries (a ping once we
            # are ready ends its back-off)
            self._report("not_ready", None)
            return web.json_response(
                {"errcode": "M_UNKNOWN", "error": f"Switchboard is starting ({waiting})"},
                status=503,
                headers={"Retry-After": "1"},
            )
        txn_id = request.match_info["txn_id"]
        try:
            body = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._report("bad_request", None)
            return _error(400, "M_NOT_JSON", "Transaction body is not JSON")
        if not isinstance(body, dict):
            self._report("bad_request", None)
            return _error(400, "M_BAD_JSON", "Transaction body must be an object")
        async with self._lock:  # the homeserver sends one at a time; so do we
            if await self._log.transaction_done(txn_id):
                # Not skipped: Synapse on SQLite numbers transactions from the highest one it
                # still holds, so after a restart it reuses ids for new events. Each event id
                # is checked on its own instead.
                log.debug("transaction %s seen before; checking its events one by one", txn_id)
                if self._watch is not None and not self._repeating:
                    # a retry of one whose answer was lost, or the homeserver restarted
                    self._watch.suspect_gap(f"transaction {txn_id} came again")
                self._repeating = True
            else:
                self._repeating = False
            try:
                await self._handle(body)
                await self._log.mark_transaction(txn_id)
            except Exception:
                log.exception("transaction %s failed; the homeserver will retry it", txn_id)
                self._report("failed", time.monotonic() - arrived)
                return _error(500, "M_UNKNOWN", "Transaction failed; retry later")
        self.transactions_handled += 1
        self._report("ok", time.monotonic() - arrived)
        if self._watch is not None:
            self._watch.pushed()
        return web.json_response({})

    async def replay(self, read: Callable[[], Awaitable[list[Any]]]) -> int:
        """Handle the events ``read`` gets back from a room (see ``catch_up``); how many were
        new. No transaction is handled meanwhile, so none slips in between."""
        async with self._lock:
            return await self._handle_events(await read())

    async def _handle_events(self, events: list[Any]) -> int:
        handled = 0
        for event in events:
            event_id = event.get("event_id") if isinstance(event, dict) else None
            if not isinstance(event_id, str) or not event_id:
                continue
            if await self._log.event_handled(event_id):
                continue
            # a change the event causes commits with its handled-mark (see bridge.outbox)
            cause = Cause(event_id)
            token = CAUSE.set(cause)
            try:
                await self._sink.handle(event)
            finally:
                CAUSE.reset(token)
            if not cause.recorded:
                await self._log.mark_event(event_id)
            handled += 1
        return handled

    async def _handle(self, body: dict[str, Any]) -> None:
        events = body.get("events")
        events = events if isinstance(events, list) else []
        since = self._watch.gap_since if self._watch is not None else None
        if since is not None and self.read_back is not None:
            # Events may be missing (a restart, an outage): Synapse can hold back a transaction
            # and push the next one. Whatever of the same rooms came before is read back and
            # handled first, so an advisor's messages reach the page in the order they wrote.
            rooms = [e.get("room_id") for e in events if isinstance(e, dict)]
            for room_id in dict.fromkeys(r for r in rooms if isinstance(r, str)):
                await self._handle_events(await self.read_back(room_id, since))
        await self._handle_events(events)
        ephemeral = body.get("ephemeral") or body.get("de.sorunome.msc2409.ephemeral")
        for event in ephemeral if isinstance(ephemeral, list) else []:
            try:
                await self._sink.handle_ephemeral(event)
            except Exception:
                # hints only (typing, receipts, presence): never worth a retry of the batch
                log.warning("ephemeral event failed", exc_info=True)

    async def ping(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return _error(403, "M_FORBIDDEN", "Bad or missing hs_token")
        return web.json_response({})

    async def query_user(self, request: web.Request) -> web.Response:
        """A call sign's user is made on demand; puppets are made when a visitor starts,
        never on demand."""
        if not self._authorised(request):
            return _error(403, "M_FORBIDDEN", "Bad or missing hs_token")
        return await self._query(request.match_info["user_id"], "user", "No such user")

    async def query_alias(self, request: web.Request) -> web.Response:
        """A call sign's alias: its lobby (made now, if it was not yet)."""
        if not self._authorised(request):
            return _error(403, "M_FORBIDDEN", "Bad or missing hs_token")
        return await self._query(request.match_info["alias"], "alias", "No such alias")

    async def _query(self, name: str, kind: str, missing: str) -> web.Response:
        if self._directory is None:
            return _error(404, "M_NOT_FOUND", missing)
        ask = self._directory.alias_exists if kind == "alias" else self._directory.user_exists
        try:
            found = await ask(name)
        except Exception:
            # the homeserver takes anything but 200 as "no such": it may ask again later
            log.warning("the homeserver's %s query for %s failed", kind, name, exc_info=True)
            return _error(500, "M_UNKNOWN", "Try again later")
        return web.json_response({}) if found else _error(404, "M_NOT_FOUND", missing)
