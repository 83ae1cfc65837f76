"""A real Matrix client (matrix-nio) that plays a human advisor in the end-to-end tests
and the benchmarks.

``AdvisorClient.login`` logs in, sets presence online and runs ``sync_forever`` in
a background task. Every sync response is recorded (invites, timeline events,
membership, typing, receipts, presence) and wakes the ``wait_for_*`` methods
through an ``asyncio.Condition``: waiting is event-driven, never sleep-polling.

nio's retries are turned off, so a 429, a dropped connection or a sync error
stops the sync loop and makes every pending and later wait fail at once with
the error (``restart_sync`` resumes from the last sync token, e.g. after a
homeserver restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from nio import (
    AsyncClient,
    AsyncClientConfig,
    ErrorResponse,
    Event,
    InviteMemberEvent,
    LoginResponse,
    PresenceEvent,
    ReceiptEvent,
    RoomCreateResponse,
    RoomMemberEvent,
    RoomMessage,
    SyncError,
    SyncResponse,
    TypingNoticeEvent,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
MessagePredicate = Callable[[RoomMessage], bool]

DEFAULT_TIMEOUT = 10.0
SYNC_FILTER: dict[str, Any] = {"room": {"timeline": {"limit": 100}}}


def _no_error(response: T, what: str) -> T:
    """Return ``response`` unless it is an nio error response (then raise AssertionError)."""
    if isinstance(response, ErrorResponse):
        raise AssertionError("%s failed: %s %s" % (what, response.status_code, response.message))
    return response


def _check(response: Any, ok_type: type[T], what: str) -> T:
    """Return ``response`` if it is an ``ok_type``, else raise AssertionError describing it."""
    if not isinstance(_no_error(response, what), ok_type):
        raise AssertionError("%s failed: unexpected response %r" % (what, response))
    return cast(T, response)


def _describe(event: Event) -> str:
    content = event.source.get("content", {})
    kind = event.source.get("type", type(event).__name__)
    if kind == "m.room.message":
        return "%s %s %r" % (event.sender, content.get("msgtype"), content.get("body"))
    if kind == "m.room.member":
        return "%s member %s -> %s" % (
            event.sender,
            event.source.get("state_key"),
            content.get("membership"),
        )
    return "%s %s" % (event.sender, kind)


class AdvisorClient:
    """One logged-in advisor; create with ``await AdvisorClient.login(...)``."""

    def __init__(self, client: AsyncClient) -> None:
        """Wrap a logged-in nio client; use ``login`` rather than calling this directly."""
        self.client = client
        self.invites: list[str] = []  # room ids in the order the invites arrived
        self.invite_senders: dict[str, str] = {}
        self.timeline: dict[str, list[Event]] = {}
        self.members: dict[str, dict[str, str]] = {}  # room -> user -> current membership
        self.typing: dict[str, set[str]] = {}  # room -> users typing now
        self.typing_history: dict[str, list[list[str]]] = {}
        self.receipts: dict[str, dict[str, str]] = {}  # room -> user -> last read event id
        self.presence: dict[str, str] = {}
        # room -> (type, state_key) -> content of the newest state event seen (invites: the
        # stripped state the invite carries)
        self.state: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.errors: list[str] = []
        self._cond = asyncio.Condition()
        self._first_sync = asyncio.Event()
        self._sync_task: asyncio.Task[None] | None = None
        client.add_response_callback(self._on_sync, SyncResponse)
        client.add_response_callback(self._on_sync_error, SyncError)

    @property
    def user_id(self) -> str:
        """The advisor's full mxid."""
        return str(self.client.user_id)

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    async def login(
        cls,
        homeserver_url: str,
        user: str,
        password: str,
        *,
        device_name: str = "switchboard-e2e",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> AdvisorClient:
        """Log in (``user`` is a localpart or mxid), go online and start syncing."""
        config = AsyncClientConfig(
            max_limit_exceeded=0, max_timeouts=0, encryption_enabled=False, store_sync_tokens=False
        )
        client = AsyncClient(homeserver_url, user, config=config)
        try:
            _check(
                await client.login(password, device_name=device_name),
                LoginResponse,
                "login as %s" % user,
            )
            self = cls(client)
            await self.set_presence("online")
            self.restart_sync()
            await self._wait(lambda: self._first_sync.is_set() or None, timeout, "the first sync")
        except BaseException:
            await client.close()
            raise
        return self

    def restart_sync(self) -> None:
        """(Re)start the background sync loop from the last sync token."""
        if self._sync_task is not None and not self._sync_task.done():
            return
        self.errors.clear()
        self._sync_task = asyncio.get_running_loop().create_task(
            self.client.sync_forever(timeout=30_000, sync_filter=SYNC_FILTER),
            name="sync %s" % self.user_id,
        )
        self._sync_task.add_done_callback(self._on_sync_done)

    async def close(self) -> None:
        """Stop syncing and close the HTTP session (the device stays logged in)."""
        task, self._sync_task = self._sync_task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.close()

    async def __aenter__(self) -> AdvisorClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- recording --------------------------------------------------------------------
    def _on_sync_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        self.errors.append("sync loop ended: %r" % (exc,) if exc else "sync loop ended")
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._cond:
            self._cond.notify_all()

    async def _on_sync_error(self, response: SyncError) -> None:
        self.errors.append("sync error: %s %s" % (response.status_code, response.message))
        self.client.stop_sync_forever()
        await self._notify()

    def _record_member(self, room_id: str, event: Event) -> None:
        if isinstance(event, (RoomMemberEvent, InviteMemberEvent)):
            self.members.setdefault(room_id, {})[event.state_key] = event.membership

    def _record_state(self, room_id: str, event: Any) -> None:
        source = getattr(event, "source", None)
        if isinstance(source, dict) and "state_key" in source and "type" in source:
            key = (source["type"], source["state_key"])
            self.state.setdefault(room_id, {})[key] = source.get("content") or {}

    def _record_receipts(self, room_id: str, event: ReceiptEvent) -> None:
        for receipt in event.receipts:
            kind = getattr(receipt.receipt_type, "value", receipt.receipt_type)
            if kind == "m.read":
                self.receipts.setdefault(room_id, {})[receipt.user_id] = receipt.event_id

    async def _on_sync(self, response: SyncResponse) -> None:
        for room_id, invite in response.rooms.invite.items():
            for event in invite.invite_state:
                self._record_member(room_id, event)
                self._record_state(room_id, event)
                if isinstance(event, InviteMemberEvent) and event.state_key == self.user_id:
                    self.invite_senders[room_id] = event.sender
            if room_id not in self.invites:
                self.invites.append(room_id)
        for rooms in (response.rooms.join, response.rooms.leave):
            for room_id, info in rooms.items():
                for event in info.state:
                    self._record_member(room_id, event)
                    self._record_state(room_id, event)
                for event in info.timeline.events:
                    self._record_member(room_id, event)
                    self._record_state(room_id, event)
                    self.timeline.setdefault(room_id, []).append(event)
                for event in info.ephemeral:
                    if isinstance(event, TypingNoticeEvent):
                        self.typing[room_id] = set(event.users)
                        self.typing_history.setdefault(room_id, []).append(list(event.users))
                    elif isinstance(event, ReceiptEvent):
                        self._record_receipts(room_id, event)
        for event in response.presence_events:
            if isinstance(event, PresenceEvent):
                self.presence[event.user_id] = event.presence
        self._first_sync.set()
        await self._notify()

    # -- waiting ----------------------------------------------------------------------
    def _seen(self, room_id: str | None = None) -> str:
        lines = ["errors: %s" % (self.errors or "none"), "invites: %s" % (self.invites or "none")]
        rooms = [room_id] if room_id is not None else sorted(self.timeline)
        for rid in rooms:
            events = self.timeline.get(rid, [])
            lines.append(
                "room %s: members %s, typing %s, receipts %s"
                % (
                    rid,
                    self.members.get(rid, {}),
                    self.typing_history.get(rid, []),
                    self.receipts.get(rid, {}),
                )
            )
            lines.extend("  " + _describe(event) for event in events[-30:])
        lines.append("presence: %s" % self.presence)
        return "\n".join(lines)

    async def _wait(
        self, check: Callable[[], T | None], timeout: float, what: str, room_id: str | None = None
    ) -> T:
        """Wait until ``check()`` returns something other than None, woken by each sync."""
        found: list[T] = []

        def ready() -> bool:
            result = check()
            if result is not None:
                found.append(result)
                return True
            return bool(self.errors)

        try:
            async with self._cond:
                await asyncio.wait_for(self._cond.wait_for(ready), timeout)
        except TimeoutError:
            pass
        if found:
            return found[0]
        reason = (
            "the sync loop failed" if self.errors else "nothing matched within %.1f s" % timeout
        )
        raise AssertionError(
            "%s waited for %s but %s. Seen instead:\n%s"
            % (self.user_id, what, reason, self._seen(room_id))
        )

    async def wait_for_invite(
        self, predicate: Callable[[str], bool] | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> str:
        """Return a room we are (still) invited to, seen now or earlier, matching ``predicate``."""

        def check() -> str | None:
            for room_id in self.invites:
                if self.members.get(room_id, {}).get(self.user_id) == "invite" and (
                    predicate is None or predicate(room_id)
                ):
                    return room_id
            return None

        return await self._wait(check, timeout, "an invite")

    async def wait_for_message(
        self,
        room_id: str,
        predicate: MessagePredicate | str | None = None,
        *,
        sender: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> RoomMessage:
        """Return the first message event in the room (already seen or future) that matches.

        ``predicate`` gets the nio event (RoomMessageText, RoomMessageNotice, ...); a
        string matches any message whose body contains it.
        """
        what = "a message"
        if sender is not None:
            what += " from %s" % sender
        if isinstance(predicate, str):
            needle = predicate
            what += " containing %r" % needle
            predicate = lambda event: needle in getattr(event, "body", "")  # noqa: E731
        elif predicate is not None:
            what += " matching %s" % getattr(predicate, "__qualname__", predicate)

        def check() -> RoomMessage | None:
            for event in self.timeline.get(room_id, []):
                if isinstance(event, RoomMessage) and (sender is None or event.sender == sender):
                    if predicate is None or predicate(event):
                        return event
            return None

        return await self._wait(check, timeout, "%s in %s" % (what, room_id), room_id)

    async def wait_for_typing(
        self, room_id: str, user_id: str, typing: bool = True, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until ``user_id`` is (or is no longer) in the room's current typing list."""
        await self._wait(
            lambda: True if (user_id in self.typing.get(room_id, set())) == typing else None,
            timeout,
            "%s typing=%s in %s" % (user_id, typing, room_id),
            room_id,
        )

    async def wait_for_member(
        self, room_id: str, user_id: str, membership: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until ``user_id``'s current membership in the room is ``membership``."""
        await self._wait(
            lambda: True if self.members.get(room_id, {}).get(user_id) == membership else None,
            timeout,
            "%s to be %s in %s" % (user_id, membership, room_id),
            room_id,
        )

    async def wait_for_receipt(
        self,
        room_id: str,
        user_id: str,
        event_id: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> str:
        """Wait for an m.read receipt from ``user_id`` (on ``event_id`` if given); return it."""

        def check() -> str | None:
            seen = self.receipts.get(room_id, {}).get(user_id)
            return seen if seen is not None and event_id in (None, seen) else None

        return await self._wait(
            check, timeout, "a receipt from %s in %s" % (user_id, room_id), room_id
        )

    async def wait_for_state(
        self,
        room_id: str,
        event_type: str,
        state_key: str = "",
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> dict[str, Any]:
        """Wait until the room's state ``event_type``/``state_key`` (its content) matches
        ``predicate`` (default: it exists and is not empty); return its content."""

        def check() -> dict[str, Any] | None:
            content = self.state.get(room_id, {}).get((event_type, state_key))
            if content is None:
                return None
            ok = predicate(content) if predicate is not None else bool(content)
            return content if ok else None

        return await self._wait(
            check, timeout, "state %s %r in %s" % (event_type, state_key, room_id), room_id
        )

    async def wait_for_presence(
        self, user_id: str, presence: str, *, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        """Wait until ``user_id``'s last presence seen is ``presence``."""
        await self._wait(
            lambda: True if self.presence.get(user_id) == presence else None,
            timeout,
            "%s presence %s" % (user_id, presence),
        )

    # -- actions ----------------------------------------------------------------------
    async def create_room(self, invite: Sequence[str] = (), **kwargs: Any) -> str:
        """Create a room (nio ``room_create`` kwargs) inviting ``invite``; return its id."""
        response = await self.client.room_create(invite=list(invite), **kwargs)
        return str(_check(response, RoomCreateResponse, "createRoom").room_id)

    async def join(self, room_id: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Join the room and wait until our sync shows us joined."""
        _no_error(await self.client.join(room_id), "join %s" % room_id)
        await self.wait_for_member(room_id, self.user_id, "join", timeout=timeout)

    async def decline(self, room_id: str) -> None:
        """Reject an invite (leave while invited); also leaves a joined room."""
        _no_error(await self.client.room_leave(room_id), "leave %s" % room_id)

    leave = decline

    async def _send(self, room_id: str, content: dict[str, Any]) -> str:
        response = await self.client.room_send(
            room_id, "m.room.message", content, ignore_unverified_devices=True
        )
        return str(_no_error(response, "send to %s" % room_id).event_id)

    async def send_text(self, room_id: str, body: str) -> str:
        """Send an m.text message; return its event id."""
        return await self._send(room_id, {"msgtype": "m.text", "body": body})

    async def send_notice(self, room_id: str, body: str) -> str:
        """Send an m.notice message; return its event id."""
        return await self._send(room_id, {"msgtype": "m.notice", "body": body})

    async def edit(self, room_id: str, event_id: str, body: str) -> str:
        """Replace the text of our message ``event_id`` (as Element sends an edit)."""
        return await self._send(
            room_id,
            {
                "msgtype": "m.text",
                "body": " * " + body,
                "m.new_content": {"msgtype": "m.text", "body": body},
                "m.relates_to": {"rel_type": "m.replace", "event_id": event_id},
            },
        )

    async def reply(self, room_id: str, to: RoomMessage, body: str) -> str:
        """Answer ``to`` with ``body``, with the reply fallback clients sent before Matrix
        1.13 (a quote of ``to`` in both the plain and the HTML body)."""
        quoted = getattr(to, "body", "")
        return await self._send(
            room_id,
            {
                "msgtype": "m.text",
                "body": "> <%s> %s\n\n%s" % (to.sender, quoted.replace("\n", "\n> "), body),
                "format": "org.matrix.custom.html",
                "formatted_body": (
                    '<mx-reply><blockquote><a href="https://matrix.to/#/%s/%s">In reply to</a>'
                    ' <a href="https://matrix.to/#/%s">%s</a><br>%s</blockquote></mx-reply>%s'
                    % (room_id, to.event_id, to.sender, to.sender, quoted, body)
                ),
                "m.relates_to": {"m.in_reply_to": {"event_id": to.event_id}},
            },
        )

    async def redact(self, room_id: str, event_id: str, reason: str | None = None) -> str:
        """Remove (redact) an event; return the redaction's event id."""
        response = await self.client.room_redact(room_id, event_id, reason)
        return str(_no_error(response, "redact %s" % event_id).event_id)

    async def set_typing(self, room_id: str, typing: bool, *, timeout_ms: int = 30_000) -> None:
        """Start or stop typing in the room."""
        response = await self.client.room_typing(room_id, typing, timeout=timeout_ms)
        _no_error(response, "typing in %s" % room_id)

    async def send_read_receipt(self, room_id: str, event_id: str) -> None:
        """Send a public m.read receipt for ``event_id``."""
        response = await self.client.update_receipt_marker(room_id, event_id)
        _no_error(response, "receipt in %s" % room_id)

    async def set_presence(self, state: str, status_msg: str | None = None) -> None:
        """Set presence ("online", "unavailable", "offline"); later syncs keep it."""
        _no_error(await self.client.set_presence(state, status_msg), "presence %s" % state)

    # -- reading ----------------------------------------------------------------------
    def messages(self, room_id: str) -> list[tuple[str, str, str]]:
        """All messages seen in the room so far as ``(sender, body, msgtype)``."""
        return [
            (
                event.sender,
                event.source["content"].get("body", ""),
                event.source["content"].get("msgtype", ""),
            )
            for event in self.timeline.get(room_id, [])
            if isinstance(event, RoomMessage)
        ]
