"""The core's MatrixGateway port on mautrix: puppets, conversation rooms, invites, messages."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
from mautrix.api import Method, Path
from mautrix.appservice import AppServiceAPI, IntentAPI
from mautrix.appservice.state_store import ASStateStore
from mautrix.client import ClientAPI
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.errors import (
    MAlreadyJoined,
    MatrixConnectionError,
    MatrixRequestError,
    MForbidden,
    MNotFound,
    MRoomInUse,
)
from mautrix.types import (
    EventContent,
    EventID,
    EventType,
    MessageType,
    PaginationDirection,
    RoomAlias,
    RoomCreatePreset,
    RoomDirectoryVisibility,
    RoomID,
    TextMessageEventContent,
    UserID,
)

from bridge.errors import NotAllowed, TemporarilyUnavailable
from bridge.model import AdvisorMxid, EventId, Presence, PuppetMxid, RoomId, Visitor
from bridge.ports import SpaceState

from .config import Config

log = logging.getLogger(__name__)

TXN_KEY = "org.switchboard.txn_id"
RESEND_LOOKBACK = 100  # events: far more than a visitor sends while the homeserver is away
PRESENCES = {p.value: p for p in Presence}
SPACE_CHILD = EventType.find("m.space.child", EventType.Class.STATE)
SPACE_PARENT = EventType.find("m.space.parent", EventType.Class.STATE)
#: every room and space of ours: history readable by members from their invite on, no guests
PRIVATE_ROOM_STATE: list[Any] = [
    {
        "type": "m.room.history_visibility",
        "state_key": "",
        "content": {"history_visibility": "shared"},
    },
    {"type": "m.room.guest_access", "state_key": "", "content": {"guest_access": "forbidden"}},
]
NOT_THERE = ("not in the room", "not in room", "not invited", "not joined")

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _classified(method: F) -> F:
    """The homeserver's failures in the core's terms: what may work later (unreachable,
    timeouts, 5xx, 429) raises TemporarilyUnavailable; a refusal stays what it is."""

    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        except (MatrixConnectionError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            raise TemporarilyUnavailable(f"homeserver unreachable: {e}") from e
        except MatrixRequestError as e:
            status = getattr(e, "http_status", 0)
            if status == 429 or status >= 500:
                raise TemporarilyUnavailable(f"homeserver answered {status}: {e}") from e
            raise

    return call  # type: ignore[return-value]


def _gone(error: MatrixRequestError) -> bool:
    """The homeserver refused because the user is not there (left, declined, removed)."""
    text = str(getattr(error, "message", "") or error).lower()
    return isinstance(error, MForbidden) and any(phrase in text for phrase in NOT_THERE)


class MemoryASStateStore(ASStateStore, MemoryStateStore):
    """mautrix's caches of memberships and registrations; the database holds our real state."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


class MautrixGateway:
    def __init__(self, config: Config, api: AppServiceAPI) -> None:
        self._config = config
        self._api = api
        self.bot: IntentAPI = api.bot_intent()

    def puppet(self, mxid: str) -> IntentAPI:
        return self._api.intent(UserID(mxid))

    @_classified
    async def create_puppet(self, visitor: Visitor) -> PuppetMxid:
        mxid = PuppetMxid(self._config.puppet_mxid(visitor.id))
        intent = self.puppet(mxid)
        await intent.ensure_registered()
        # no GET of the current name first (mautrix's default): a new puppet has none, and
        # setting the same name again is one request either way
        await intent.set_displayname(f"{visitor.name} (visitor)", check_current=False)
        return mxid

    @_classified
    async def create_room(self, invitee: str | None, name: str, topic: str, key: str) -> RoomId:
        room_id, made = await self._create_once(
            key,
            name=name,
            topic=topic,
            invitees=[UserID(invitee)] if invitee else [],
            # the visitor may talk but not invite, kick, rename or change the room
            power_level_override={
                "invite": 50,
                "kick": 50,
                "ban": 50,
                "redact": 50,
                "state_default": 50,
                "events_default": 0,
            },
        )
        if not made and invitee:  # its invite may not have gone out before the answer was lost
            await self._invite(room_id, invitee)
        return room_id

    async def _invite(self, room_id: RoomId, user: str) -> bool:
        """Invite ``user`` as the bot; True if they were in the room already (an invite
        still open counts as done too)."""
        try:
            # ClientAPI's method, not the intent's, which hides whether they were there
            await ClientAPI.invite_user(self.bot, RoomID(room_id), UserID(user))
        except MAlreadyJoined:
            return True
        except MForbidden as e:
            # homeservers without MSC3848's error code say it in words (as mautrix checks)
            if "already in the room" in e.message or "is already joined" in e.message:
                return True
            if "already invited" in e.message:
                return False
            raise
        return False

    @_classified
    async def find_room(self, key: str) -> RoomId | None:
        alias = RoomAlias(f"#{self._room_alias(key)}:{self.bot.domain}")
        try:
            found = await self.bot.resolve_room_alias(alias)
        except MNotFound:
            return None
        return RoomId(found.room_id)

    @_classified
    async def forget_room_key(self, key: str) -> None:
        # remove_room_alias treats an alias that is gone already as done
        await self.bot.remove_room_alias(self._room_alias(key))

    def _room_alias(self, key: str) -> str:
        """The alias localpart of a room key, inside our exclusive alias namespace."""
        return f"{self._config.appservice.user_prefix}{key}"

    async def _create_once(self, key: str, **content: Any) -> tuple[RoomId, bool]:
        """An invite-only room (or space) of ours under the alias of ``key``, and whether it
        was made now: one made before under that key (its answer lost, or we died before
        storing it) is found by the alias instead of made again."""
        alias = self._room_alias(key)
        try:
            # no "users" map in the power levels: the creator's power is implied (room v12
            # refuses it listed)
            room_id = await self.bot.create_room(
                alias_localpart=alias,
                preset=RoomCreatePreset.PRIVATE,
                initial_state=PRIVATE_ROOM_STATE,
                **content,
            )
            made = True
        except MRoomInUse:
            found = await self.bot.resolve_room_alias(RoomAlias(f"#{alias}:{self.bot.domain}"))
            room_id, made = found.room_id, False
            log.info("found the room %s made before under %s", room_id, alias)
        await self.bot.state_store.joined(room_id, self.bot.mxid)
        return RoomId(room_id), made

    @_classified
    async def puppet_join(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        # the join event carries the puppet's display name, set by create_puppet before
        await self.puppet(puppet).join_room_by_id(RoomID(room_id))

    @_classified
    async def post_notice(self, room_id: RoomId, text: str, txn_id: str) -> EventId:
        content = TextMessageEventContent(msgtype=MessageType.NOTICE, body=text)
        return await _send_message(self.bot, room_id, content, txn_id)

    @_classified
    async def send_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, body: str, txn_id: str
    ) -> EventId:
        # plain text only: nothing a visitor types becomes HTML in an advisor's client
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=body)
        content[TXN_KEY] = txn_id  # lets a resend find this event (find_visitor_text)
        return await _send_message(self.puppet(puppet), room_id, content, txn_id)

    @_classified
    async def find_visitor_text(
        self, room_id: RoomId, puppet: PuppetMxid, txn_id: str
    ) -> EventId | None:
        page = await self.puppet(puppet).get_messages(
            RoomID(room_id), PaginationDirection.BACKWARD, limit=RESEND_LOOKBACK
        )
        for event in page.events:  # type: ignore[attr-defined]  # (a functional NamedTuple)
            content = getattr(event, "content", None)
            if event.sender == puppet and content is not None and content.get(TXN_KEY) == txn_id:
                return EventId(event.event_id)
        return None

    @_classified
    async def invite_advisor(self, room_id: RoomId, advisor: AdvisorMxid) -> bool:
        await self.bot.ensure_joined(RoomID(room_id))  # the cache answers, except after a restart
        # the invite itself tells us whether they are in the room (handed back and offered
        # again while still in it): no GET of their membership first
        return await self._invite(room_id, advisor)

    @_classified
    async def revoke_invite(self, room_id: RoomId, advisor: AdvisorMxid, reason: str) -> None:
        try:
            await self.bot.kick_user(RoomID(room_id), UserID(advisor), reason=reason)
        except MatrixRequestError as e:
            if not _gone(e):
                raise
            log.debug("nothing to withdraw: %s is not in %s (%s)", advisor, room_id, e)

    @_classified
    async def set_visitor_typing(self, room_id: RoomId, puppet: PuppetMxid, typing: bool) -> None:
        await self.puppet(puppet).set_typing(RoomID(room_id), timeout=6000 if typing else 0)

    @_classified
    async def mark_read(self, room_id: RoomId, puppet: PuppetMxid, event_id: EventId) -> None:
        await self.puppet(puppet).mark_read(RoomID(room_id), EventID(event_id))

    @_classified
    async def bot_join(self, room_id: RoomId) -> None:
        await self.bot.join_room_by_id(RoomID(room_id))

    @_classified
    async def open_direct_chat(self, advisor: AdvisorMxid) -> RoomId:
        room_id = await self.bot.create_room(
            is_direct=True, invitees=[UserID(advisor)], name="Switchboard"
        )
        await self.bot.state_store.joined(room_id, self.bot.mxid)
        return RoomId(room_id)

    @_classified
    async def presence(self, user: AdvisorMxid) -> Presence:
        try:
            found = await self.bot.get_presence(UserID(user))
        except MForbidden:
            return Presence.UNKNOWN  # not shared with us until they share a room with the bot
        if found.presence.value == "offline" and found.last_active_ago is None:
            # never active as far as our homeserver knows: what Synapse answers for a user of
            # another server it has heard nothing of yet (their server sends it soon, and it is
            # pushed to us then). "offline" would hand their visitors back.
            return Presence.UNKNOWN
        return PRESENCES.get(found.presence.value, Presence.UNKNOWN)

    # spaces of the advisor groups

    @_classified
    async def create_space(self, name: str, key: str) -> RoomId:
        room_id, _ = await self._create_once(
            key,
            name=name,
            creation_content={"type": "m.space"},
            # members may read the space, only the bot shapes it
            power_level_override={
                "invite": 100,
                "kick": 100,
                "ban": 100,
                "redact": 100,
                "state_default": 100,
                "events_default": 100,
            },
        )
        return room_id

    @_classified
    async def link_space(self, parent: RoomId, child: RoomId) -> None:
        # mautrix's JSON type does not take a plain dict literal
        child_link: Any = {"via": [self.bot.domain]}
        parent_link: Any = {"via": [self.bot.domain], "canonical": True}
        await self.bot.send_state_event(RoomID(parent), SPACE_CHILD, child_link, state_key=child)
        await self.bot.send_state_event(RoomID(child), SPACE_PARENT, parent_link, state_key=parent)

    @_classified
    async def unlink_space(self, parent: RoomId, child: RoomId) -> None:
        # an empty content removes a link; the bot may have left a deleted group's space
        for room, kind, key in ((parent, SPACE_CHILD, child), (child, SPACE_PARENT, parent)):
            try:
                await self.bot.send_state_event(RoomID(room), kind, {}, state_key=key)
            except MatrixRequestError as e:
                if not _gone(e):
                    raise

    @_classified
    async def name_space(self, space: RoomId, name: str) -> None:
        await self.bot.set_room_name(RoomID(space), name)

    @_classified
    async def invite_to_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        await self._invite(space, advisor)

    @_classified
    async def kick_from_space(self, space: RoomId, advisor: AdvisorMxid) -> None:
        try:
            await self.bot.kick_user(RoomID(space), UserID(advisor), reason="left the group")
        except MatrixRequestError as e:
            if not _gone(e):
                raise

    @_classified
    async def leave_space(self, space: RoomId) -> None:
        try:
            await self.bot.leave_room(RoomID(space))
        except MatrixRequestError as e:
            if not _gone(e):
                raise

    @_classified
    async def space_state(self, space: RoomId) -> SpaceState | None:
        # the raw state: mautrix would parse the space links' content into its own types.
        # A user who left may still read the state as it was when they left, so the bot's
        # own membership decides, not the answer's status alone.
        try:
            events = await self.bot.api.request(Method.GET, Path.v3.rooms[RoomID(space)].state)
        except (MForbidden, MNotFound):
            return None  # the bot was removed, or the homeserver forgot the room
        bot = self.bot.mxid
        members: set[AdvisorMxid] = set()
        links: dict[str, set[RoomId]] = {"m.space.child": set(), "m.space.parent": set()}
        bot_joined = False
        state: list[dict[str, Any]] = events if isinstance(events, list) else []
        for event in state:
            kind, key = event.get("type"), event.get("state_key")
            content = event.get("content") or {}
            if kind == "m.room.member" and isinstance(key, str):
                membership = content.get("membership")
                if key == bot:
                    bot_joined = membership == "join"
                elif membership in ("join", "invite"):
                    members.add(AdvisorMxid(key))
            elif kind in links and isinstance(key, str) and content:
                links[kind].add(RoomId(key))  # an emptied link is a removed one
        if not bot_joined:
            return None
        return SpaceState(
            children=frozenset(links["m.space.child"]),
            parents=frozenset(links["m.space.parent"]),
            members=frozenset(members),
        )

    # call signs

    def call_sign_address(self, sign: str) -> tuple[str, str]:
        return self._config.call_sign_alias(sign), self._config.call_sign_user(sign)

    def _lobby_alias(self, sign: str) -> str:
        return f"{self._config.directory.call_sign_alias_prefix}{sign}"

    @_classified
    async def make_lobby(self, sign: str, name: str, topic: str) -> RoomId:
        localpart = self._lobby_alias(sign)
        # Not resolved first: resolving an alias of our namespace that the homeserver does not
        # know makes it ask us (the alias query), which is what may have called this. Made
        # completely, then bound: the alias never points at a half-made room. No "users" map
        # in the power levels (room v12 refuses the creator listed).
        room_id = await self.bot.create_room(
            preset=RoomCreatePreset.PRIVATE,
            name=name,
            topic=topic,
            initial_state=[
                *PRIVATE_ROOM_STATE,
                {"type": "m.room.join_rules", "state_key": "", "content": {"join_rule": "knock"}},
            ],
            power_level_override={"invite": 100, "kick": 50, "state_default": 100},
        )
        await self.bot.state_store.joined(room_id, self.bot.mxid)
        try:
            await self.bot.add_room_alias(room_id, localpart)
        except MRoomInUse:
            # bound before (another process, a lost answer, a retry): that room is the lobby
            found = await self.bot.resolve_room_alias(RoomAlias(f"#{localpart}:{self.bot.domain}"))
            await self.bot.leave_room(room_id)
            log.info("call sign %s: the lobby %s was made before", sign, found.room_id)
            return RoomId(found.room_id)
        log.info("call sign %s: lobby %s made at #%s", sign, room_id, localpart)
        return RoomId(room_id)

    @_classified
    async def find_lobby(self, sign: str) -> RoomId | None:
        # an alias the homeserver does not know makes it ask us (the alias query), which
        # makes the lobby: found either way, as long as the call sign exists
        alias = RoomAlias(f"#{self._lobby_alias(sign)}:{self.bot.domain}")
        try:
            return RoomId((await self.bot.resolve_room_alias(alias)).room_id)
        except MNotFound:
            return None

    @_classified
    async def describe_lobby(
        self, sign: str, lobby: RoomId, name: str, topic: str, listed: bool
    ) -> None:
        await self.call_sign_user_made(sign, name)
        room = RoomID(lobby)
        await self.bot.set_room_name(room, name)
        await self.bot.set_room_topic(room, topic)
        visibility = RoomDirectoryVisibility.PUBLIC if listed else RoomDirectoryVisibility.PRIVATE
        try:
            await self.bot.set_room_directory_visibility(room, visibility)
        except MatrixRequestError as e:
            if e.http_status != 403:
                raise
            raise NotAllowed(
                f"The homeserver refused to list {self._config.call_sign_alias(sign)} in its "
                f"public room directory ({e.message})."
            ) from e

    @_classified
    async def close_lobby(self, sign: str, lobby: RoomId | None) -> None:
        await self.bot.remove_room_alias(self._lobby_alias(sign))  # one gone already is done
        if lobby is None:
            return
        try:
            await self.bot.set_room_directory_visibility(
                RoomID(lobby), RoomDirectoryVisibility.PRIVATE
            )
            await self.bot.leave_room(RoomID(lobby))
        except MatrixRequestError as e:
            if not _gone(e):
                raise

    @_classified
    async def call_sign_user_made(self, sign: str, name: str) -> None:
        """The call sign's user exists, named like its lobby (for a direct chat with it)."""
        intent = self.puppet(self._config.call_sign_user(sign))
        await intent.ensure_registered()
        await intent.set_displayname(name, check_current=False)

    @_classified
    async def reject_knock(self, lobby: RoomId, user: str, reason: str) -> None:
        try:
            await self.bot.kick_user(RoomID(lobby), UserID(user), reason=reason)
        except MatrixRequestError as e:
            if not _gone(e):
                raise
            log.debug("no knock of %s to reject in %s (%s)", user, lobby, e)

    @_classified
    async def membership(self, room_id: RoomId, user: str) -> str | None:
        try:
            content = await self.bot.api.request(
                Method.GET,
                Path.v3.rooms[RoomID(room_id)].state["m.room.member"][UserID(user)],
            )
        except MNotFound:
            return None
        found = content.get("membership") if isinstance(content, dict) else None
        return found if isinstance(found, str) else None

    @_classified
    async def invite_asker(self, room_id: RoomId, user: str) -> None:
        await self._invite(room_id, user)

    @_classified
    async def call_sign_says(self, sign: str, room_id: RoomId, text: str, txn_id: str) -> None:
        intent = self.puppet(self._config.call_sign_user(sign))
        await intent.ensure_registered()
        content = TextMessageEventContent(msgtype=MessageType.NOTICE, body=text)
        try:
            # joins on the invite (a direct chat); one already joined is done
            await intent.join_room_by_id(RoomID(room_id))
            await _send_message(intent, room_id, content, txn_id)
        except (MForbidden, MNotFound) as e:
            # the asker took the invite back, removed the call sign's user or left: there is
            # nobody to tell there any more
            log.info("call sign %s cannot speak in %s (%s)", sign, room_id, e)

    def is_local(self, user: AdvisorMxid) -> bool:
        return user.endswith(f":{self._config.homeserver.domain}")

    @_classified
    async def puppet_leave(self, room_id: RoomId, puppet: PuppetMxid) -> None:
        try:
            await self.puppet(puppet).leave_room(RoomID(room_id))
        except MatrixRequestError as e:
            if not _gone(e):  # gone already (a retry after a lost answer): done
                raise


async def _send_message(
    intent: IntentAPI, room_id: RoomId, content: EventContent, txn_id: str
) -> EventId:
    """Send as ``intent`` without mautrix's power-level pre-check.

    ``IntentAPI.send_message_event`` first reads ``m.room.power_levels`` and ``m.room.create``
    of every room it has not cached (two GETs before the first message of each room) to
    refuse early what the homeserver would refuse anyway. Our rooms are made by us, with
    levels that let the bot and the visitor talk; a refusal still comes, as the homeserver's
    403.
    """
    room = RoomID(room_id)
    await intent.ensure_joined(room)  # the cache answers, except after a restart
    return EventId(
        await ClientAPI.send_message_event(
            intent, room, EventType.ROOM_MESSAGE, content, txn_id=txn_id
        )
    )
