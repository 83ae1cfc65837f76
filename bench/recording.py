"""A Matrix gateway and a visitor channel that only record what they are asked (no I/O).

For benchmarks that measure the core on the real store (``routing_core``): the homeserver and
the visitors' pages are left out, everything else is the product's own code. Kept inside
``bench/`` (the benchmarks import nothing from ``tests/``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

from bridge.model import (
    AdvisorMxid,
    ConversationId,
    EventId,
    Presence,
    PuppetMxid,
    RoomId,
    Visitor,
)
from bridge.ports import SpaceState


class RecordingGateway:
    """:class:`bridge.ports.MatrixGateway` that counts calls and answers at once.

    ``until(kind, count)`` waits until ``count`` calls of ``kind`` (e.g. ``"invite"``) were made.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._waiting: list[tuple[str, int, asyncio.Future[None]]] = []

    def _record(self, kind: str) -> None:
        self.calls[kind] += 1
        for entry in list(self._waiting):
            wanted, count, future = entry
            if wanted == kind and self.calls[kind] >= count and not future.done():
                future.set_result(None)
                self._waiting.remove(entry)

    async def until(self, kind: str, count: int, timeout: float = 600.0) -> None:
        if self.calls[kind] >= count:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((kind, count, future))
        await asyncio.wait_for(future, timeout)

    async def create_puppet(self, visitor: Visitor) -> PuppetMxid:
        self._record("create_puppet")
        return PuppetMxid(f"@sb_visitor_{visitor.id}:bench")

    async def create_room(self, invitee: str | None, name: str, topic: str, key: str) -> RoomId:
        self._record("create_room")
        return RoomId(f"!made{next(self._ids)}:bench")

    async def find_room(self, key: str) -> RoomId | None:
        self._record("find_room")
        return None

    async def forget_room_key(self, key: str) -> None:
        self._record("forget_room_key")

    async def puppet_join(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        self._record("puppet_join")

    async def post_notice(self, room_id: RoomId, text: str, txn_id: str) -> EventId:
        self._record("post_notice")
        return EventId(f"$notice{next(self._ids)}")

    async def send_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, body: str, txn_id: str
    ) -> EventId:
        self._record("send_visitor_text")
        return EventId(f"$text{next(self._ids)}")

    async def find_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, txn_id: str
    ) -> EventId | None:
        self._record("find_visitor_text")
        return None

    async def invite_advisor(self, room_id: RoomId, advisor: AdvisorMxid) -> bool:
        self._record("invite")
        return False  # invited, not in the room yet: a join would follow

    async def revoke_invite(self, room_id: RoomId, advisor: AdvisorMxid, reason: str) -> None:
        self._record("revoke_invite")

    async def set_visitor_typing(self, room_id: RoomId, puppet: PuppetMxid, typing: bool) -> None:
        self._record("typing")

    async def mark_read(self, room_id: RoomId, puppet: PuppetMxid, event_id: EventId) -> None:
        self._record("mark_read")

    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        self._record("puppet_leave")

    async def bot_join(self, room_id: RoomId) -> None:
        self._record("bot_join")

    async def open_direct_chat(self, advisor: AdvisorMxid) -> RoomId:
        self._record("open_direct_chat")
        return RoomId(f"!direct{next(self._ids)}:bench")

    async def presence(self, user: AdvisorMxid) -> Presence:
        self._record("presence")
        return Presence.ONLINE

    async def create_space(self, name: str, key: str) -> RoomId:
        self._record("create_space")
        return RoomId(f"!space-{key}:bench")

    async def link_space(self, parent: RoomId, child: RoomId) -> None:
        self._record("link_space")

    async def unlink_space(self, parent: RoomId, child: RoomId) -> None:
        self._record("unlink_space")

    async def name_space(self, space: RoomId, name: str) -> None:
        self._record("name_space")

    async def invite_to_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        self._record("invite_to_space")

    async def kick_from_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        self._record("kick_from_space")

    async def leave_space(self, space: RoomId) -> None:
        self._record("leave_space")

    async def space_state(self, space: RoomId) -> SpaceState | None:
        self._record("space_state")
        return SpaceState(frozenset(), frozenset(), frozenset())

    def is_local(self, user: AdvisorMxid) -> bool:
        return True  # every advisor on the desk's homeserver: no form posted again

    async def make_lobby(self, sign: str, name: str, topic: str) -> RoomId:
        self._record("make_lobby")
        return RoomId(f"!lobby{next(self._ids)}:bench")

    async def find_lobby(self, sign: str) -> RoomId | None:
        return None

    async def describe_lobby(
        self, sign: str, lobby: RoomId, name: str, topic: str, listed: bool
    ) -> None:
        self._record("describe_lobby")

    async def close_lobby(self, sign: str, lobby: RoomId | None) -> None:
        self._record("close_lobby")

    async def reject_knock(self, lobby: RoomId, user: str, reason: str) -> None:
        self._record("reject_knock")

    async def membership(self, room_id: RoomId, user: str) -> str | None:
        self._record("membership")
        return "join"

    async def invite_asker(self, room_id: RoomId, user: str) -> None:
        self._record("invite_asker")

    async def call_sign_says(self, sign: str, room_id: RoomId, text: str, txn_id: str) -> None:
        self._record("call_sign_says")

    def call_sign_address(self, sign: str) -> tuple[str, str]:
        return f"#cs_{sign}:bench", f"@sb_cs_{sign}:bench"


class RecordingChannel:
    """:class:`bridge.ports.VisitorChannel` that counts what would reach the visitors' pages."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, conversation_id: ConversationId, event: object) -> None:
        self.published += 1

    def is_watching(self, conversation_id: ConversationId) -> bool:
        return True  # every visitor has the page open: nobody is dropped for leaving
