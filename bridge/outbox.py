"""Side effects, one way: a unit of work commits state and domain events together; the
dispatcher runs each event's handler from the outbox, in order per key, with retries.

- :class:`UnitOfWork` wraps a change: the new state, any system message, the mark of the
  Matrix event that caused it and the events commit in one transaction. Nothing talks to
  Matrix inside it. After the commit the dispatcher is woken in-process (and, on PostgreSQL,
  the store's NOTIFY wakes the other processes).
- :class:`Handlers` maps each event type to one handler; a duplicate fails at start-up.
- :class:`Dispatcher` claims due rows with a short lease, runs their handlers (different keys
  in parallel) and settles each row: done; retried later without counting (the homeserver is
  unavailable: :class:`~bridge.errors.TemporarilyUnavailable`, connection errors); or failed,
  retried with backoff and, after ``max_failures``, parked. A parked row holds back the later
  rows of its key (a message is never overtaken by the close of its room) until an admin
  retries or discards it.

Due times are wall-clock seconds (several processes share them). A timer also stores the delay
it was given, so when the clock steps back a row is never due further ahead than that delay
(:meth:`OutboxStore.rebase`); a forward step makes timers due early, as it would any deadline.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import TemporarilyUnavailable
from .events import EVENT_TYPES, DomainEvent, decode
from .logcontext import about
from .ports import Clock, OutboxRow, Transactions

log = logging.getLogger(__name__)

E = TypeVar("E", bound=DomainEvent)

LEASE_SECONDS = 15.0  # renewed while the handler runs; a dead process's rows wait this long
RENEW_SECONDS = 5.0
SAFETY_POLL_SECONDS = 5.0
MIN_WAIT_SECONDS = 0.05  # the in-process wake and NOTIFY are the fast path; this is the net
MAX_FAILURES = 5
TRANSIENT_BACKOFF = (0.25, 0.5, 1.0)  # capped: rows run ~1 s after the homeserver is back
FAILURE_BACKOFF = (1.0, 5.0, 30.0, 120.0)
CLOCK_STEP = 1.0  # seconds: a smaller change of wall minus monotonic time is drift, not a step
TRANSIENT = (TemporarilyUnavailable, ConnectionError, TimeoutError, asyncio.TimeoutError)


@dataclass
class Cause:
    """The Matrix event being handled, so that its handled-mark commits with its effects."""

    event_id: str
    recorded: bool = False


#: Set by the appservice endpoint around each homeserver event it hands to the core.
CAUSE: contextvars.ContextVar[Cause | None] = contextvars.ContextVar("cause", default=None)


@dataclass
class Batch:
    """What one unit of work raises."""

    events: list[DomainEvent] = field(default_factory=list)

    def raise_(self, raised: Iterable[DomainEvent]) -> None:
        self.events.extend(raised)


class UnitOfWork:
    """``async with uow() as batch:`` store calls inside commit together with ``batch.events``
    (into the outbox) and the mark of the Matrix event being handled, if any."""

    def __init__(self, store: Transactions, clock: Clock, wake: Callable[[], None]) -> None:
        self._store = store
        self._clock = clock
        self.wake = wake
        #: called with the events of each commit, right after it (fault tests crash there)
        self.after_commit: list[Callable[[list[DomainEvent]], None]] = []

    @asynccontextmanager
    async def __call__(self) -> AsyncIterator[Batch]:
        batch = Batch()
        async with self._store.transaction():
            yield batch
            if batch.events:
                await self._store.outbox.add(batch.events, self._clock.now())
            cause = CAUSE.get()
            if cause is not None and not cause.recorded:
                await self._store.mark_event_handled(cause.event_id)
                cause.recorded = True
        for hook in self.after_commit:
            hook(batch.events)
        if batch.events:
            self.wake()


@dataclass(frozen=True)
class Attempt:
    """What a handler may know of its row: ``retried`` if the handler may have run before
    (a failed try, or a claim whose process died): a send then looks for its event first."""

    row_id: int
    tries: int

    @property
    def retried(self) -> bool:
        return self.tries > 1


Handler = Callable[[Any, Attempt], Awaitable[None]]


class Handlers:
    """One handler per event type, registered like the bot's commands."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(
        self, event_type: type[E], handler: Callable[[E, Attempt], Awaitable[None]]
    ) -> None:
        name = event_type.__name__
        if name in self._handlers:
            raise ValueError(f"a second handler for {name}")
        self._handlers[name] = handler

    def check_complete(self) -> None:
        """Every event type the core raises has its handler (called at start-up)."""
        missing = sorted(set(EVENT_TYPES) - set(self._handlers))
        if missing:
            raise ValueError(f"no handler for {', '.join(missing)}")

    def __getitem__(self, kind: str) -> Handler:
        return self._handlers[kind]


class Dispatcher:
    """Runs the outbox's rows through their handlers; see the module's docstring."""

    def __init__(
        self,
        store: Transactions,
        handlers: Handlers,
        clock: Clock,
        *,
        concurrency: int = 32,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        self._store = store
        self._handlers = handlers
        self._clock = clock
        self.worker = secrets.token_hex(6)
        self._concurrency = concurrency
        self._max_failures = max_failures
        self._wakeup = asyncio.Event()
        self._running: dict[asyncio.Task[None], int] = {}  # task → its row's priority
        self._outage = False  # the homeserver failed the last try: one row at a time until back
        self._offset: float | None = None  # wall minus monotonic time, to notice clock steps
        self.handled = 0

    async def stop(self) -> None:
        """Cancel the handlers still running (their rows are claimed again later)."""
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)

    def wake(self) -> None:
        """There may be work: claim now (no polling interval on the message path)."""
        self._wakeup.set()

    async def run_forever(self) -> None:
        renew_at = self._clock.monotonic() + RENEW_SECONDS
        while True:
            self._wakeup.clear()
            try:
                await self._step()
            except Exception:
                log.warning("the outbox could not be read; retrying", exc_info=True)
            if self._running and self._clock.monotonic() >= renew_at:
                renew_at = self._clock.monotonic() + RENEW_SECONDS
                try:
                    await self._store.outbox.renew(self.worker, self._lease_until())
                except Exception:
                    log.warning("could not renew the outbox leases", exc_info=True)
            await self._sleep()

    async def _sleep(self) -> None:
        timeout = SAFETY_POLL_SECONDS
        if self._running:
            timeout = min(timeout, RENEW_SECONDS)
        else:
            try:
                due = await self._store.outbox.next_due()
            except Exception:
                due = None
            if due is not None:
                # a floor: a row due now that the last claim did not get (a clock skewed
                # between processes) is not worth a busy loop
                timeout = max(MIN_WAIT_SECONDS, min(timeout, due - self._clock.now()))
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the wake-up does, and the loop would never stop
        try:
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _step(self) -> None:
        """Claim what is due, up to the free slots, and start it. Rows of the invite path
        (priority 0) go first, and the others wait while any of those runs here: in a burst
        of visitors the advisors are invited before the puppets join and the forms are
        posted, since the homeserver's CPU is what the burst waits for."""
        await self._notice_clock_step()
        free = (1 if self._outage else self._concurrency) - len(self._running)
        if free <= 0:
            return
        # read before the claim: one that finishes meanwhile may have raised urgent rows that
        # this claim did not see yet (its end wakes another step)
        urgent = self._urgent
        now, lease = self._clock.now(), self._lease_until()
        rows = await self._store.outbox.claim(self.worker, now, lease, free, max_priority=0)
        self._start(rows)
        if not urgent and not rows and free > 0:
            self._start(await self._store.outbox.claim(self.worker, now, lease, free))

    def _start(self, rows: list[OutboxRow]) -> None:
        for row in rows:
            task = asyncio.create_task(self._execute(row))
            self._running[task] = row.priority
            task.add_done_callback(self._finished)

    @property
    def _urgent(self) -> bool:
        return 0 in self._running.values()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self.wake()  # the next row of its key may be claimable now

    async def drain(self) -> int:
        """Run every row that is due until none is (tests and benchmarks; one at a time, in
        claim order). Returns how many rows ran."""
        ran = 0
        while True:
            await self._notice_clock_step()
            rows = await self._store.outbox.claim(
                self.worker, self._clock.now(), self._lease_until(), 1
            )
            if not rows:
                return ran
            await self._execute(rows[0])
            ran += 1

    async def _notice_clock_step(self) -> None:
        """The first look (a start, perhaps after the clock went back while we were down) and
        every step back bring due times and leases within their length of now."""
        offset = self._clock.now() - self._clock.monotonic()
        if self._offset is None or offset < self._offset - CLOCK_STEP:
            # seen happen: leases given before it keep what was left of them; at a first look
            # the step (if any) is unknown, and a lease is only capped at one from now
            step = 0.0 if self._offset is None else self._offset - offset
            moved = await self._store.outbox.rebase(self._clock.now(), LEASE_SECONDS, step)
            if moved and self._offset is not None:
                log.info(
                    "the clock stepped back %.0f s; %d rows moved", self._offset - offset, moved
                )
        self._offset = offset

    def _lease_until(self) -> float:
        return self._clock.now() + LEASE_SECONDS

    async def _execute(self, row: OutboxRow) -> None:
        with about(_conversation_of(row)):  # the handler's log lines carry the conversation
            try:
                await self._run(row)
            except Exception:
                # the outcome could not be written (the database went away): the lease runs
                # out and the row is claimed again, and its handler finds its work done or not
                log.warning(
                    "outbox row %d (%s): could not record the outcome",
                    row.id,
                    row.kind,
                    exc_info=True,
                )

    async def _run(self, row: OutboxRow) -> None:
        outbox = self._store.outbox
        try:
            event = decode(row.kind, row.payload)
            handler = self._handlers[row.kind]
        except Exception as e:
            log.error("outbox row %d (%s) cannot be read: %s; parked", row.id, row.kind, e)
            await outbox.park(row.id, row.failures + 1, f"unreadable: {e}")
            return
        try:
            await handler(event, Attempt(row.id, row.tries))
        except TRANSIENT as e:
            self._outage = True
            wait = getattr(e, "retry_after", None)
            if wait is None:
                wait = TRANSIENT_BACKOFF[min(row.tries, len(TRANSIENT_BACKOFF)) - 1]
            log.info("%s waits %.2f s: the homeserver is unavailable (%s)", row.kind, wait, e)
            await outbox.retry(row.id, self._clock.now() + wait, row.failures, _describe(e))
        except Exception as e:
            failures = row.failures + 1
            if failures >= self._max_failures:
                log.error(
                    "outbox row %d parked after %d failures: %s %s: %s",
                    row.id,
                    failures,
                    row.kind,
                    row.payload,
                    _describe(e),
                    exc_info=True,
                )
                await outbox.park(row.id, failures, _describe(e))
            else:
                wait = FAILURE_BACKOFF[min(failures, len(FAILURE_BACKOFF)) - 1]
                log.warning(
                    "%s failed (%d of %d), again in %.0f s: %s",
                    row.kind,
                    failures,
                    self._max_failures,
                    wait,
                    _describe(e),
                    exc_info=True,
                )
                await outbox.retry(row.id, self._clock.now() + wait, failures, _describe(e))
        else:
            self._outage = False
            self.handled += 1
            await outbox.done(row.id, self._clock.now())


def _conversation_of(row: OutboxRow) -> str | None:
    try:
        conversation = json.loads(row.payload).get("conversation_id")
    except (ValueError, AttributeError):
        return None
    return conversation if isinstance(conversation, str) else None


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:500]
