"""Matrix events from the homeserver, turned into calls on the core's services.

Every field of an event is checked before use: a malformed event is ignored (and logged), never
allowed to raise, so it cannot block the homeserver's transaction queue.
"""

from __future__ import annotations

import logging
from typing import Any

from mautrix.errors import IntentError, MatrixRequestError

from bridge.callsigns import is_sign
from bridge.desk import Desk
from bridge.logcontext import about
from bridge.model import AdvisorMxid, EventId, Presence, RoomId
from bridge.services.rooms import RoomContext

from .commands import CommandContext, CommandRegistry, Role
from .config import Config
from .content import read_message

log = logging.getLogger(__name__)

# notices too: an advisor's client or bot may send them (the desk's own never echo: _ours)
RELAYED_MSGTYPES = {"m.text", "m.emote", "m.notice"}
PRESENCE = {p.value: p for p in Presence}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class MatrixEventHandler:
    def __init__(
        self,
        config: Config,
        desk: Desk,
        commands: CommandRegistry,
    ) -> None:
        self._config = config
        self._conversations = desk.rooms
        self._advisors = desk.advisors
        self._bot = desk.bot
        self._call_signs = desk.call_signs
        self._commands = commands
        self._puppet_prefix = f"@{config.appservice.user_prefix}"
        self._call_sign_prefix = f"@{config.appservice.user_prefix}cs_"

    def _ours(self, user_id: str) -> bool:
        """The bot or one of our puppets: their events are echoes of what we sent."""
        return user_id == self._config.bot_mxid or (
            user_id.startswith(self._puppet_prefix)
            and user_id.endswith(f":{self._config.homeserver.domain}")
        )

    def _call_sign_of(self, user_id: str) -> str | None:
        """The call sign whose user ``user_id`` is (``@<prefix>cs_<sign>:<domain>``), if any."""
        suffix = f":{self._config.homeserver.domain}"
        if user_id.startswith(self._call_sign_prefix) and user_id.endswith(suffix):
            sign = user_id[len(self._call_sign_prefix) : -len(suffix)]
            return sign if is_sign(sign) else None
        return None

    async def handle(self, event: Any) -> None:
        """Handle one timeline event. Transient failures raise (the homeserver retries the
        transaction); a request the homeserver refuses for good is logged and dropped, so one
        poisoned event cannot stall the desk."""
        with about(None):  # the room's conversation, once found, tags this event's lines
            try:
                await self._handle(event)
            except (MatrixRequestError, IntentError) as e:
                status = e.http_status if isinstance(e, MatrixRequestError) else 403
                if not 400 <= status < 500 or status == 429:
                    raise
                log.warning(
                    "dropping event %s: we may not react to it (%s: %s)",
                    event.get("event_id") if isinstance(event, dict) else None,
                    type(e).__name__,
                    e,
                )

    async def _handle(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind, room_id, sender = (_str(event.get(k)) for k in ("type", "room_id", "sender"))
        content = event.get("content")
        if not kind or not room_id or not sender or not isinstance(content, dict):
            log.debug("ignoring malformed event %r", event.get("event_id"))
            return
        ts = event.get("origin_server_ts")
        ts = ts / 1000 if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None
        if kind == "m.room.member":
            await self._member(RoomId(room_id), sender, _str(event.get("state_key")), content)
        elif kind == "m.room.message" and not self._ours(sender):
            event_id = _str(event.get("event_id"))
            if event_id:
                await self._message(RoomId(room_id), sender, EventId(event_id), content, ts)
        elif kind == "m.room.redaction":
            # the homeserver checked that the sender may; rooms v11+ carry the target in the
            # content, older ones at the top level
            target = _str(content.get("redacts")) or _str(event.get("redacts"))
            if target:
                await self._conversations.message_removed(
                    RoomId(room_id), EventId(target), ts or 0.0
                )

    async def _member(
        self, room_id: RoomId, sender: str, target: str | None, content: dict[str, Any]
    ) -> None:
        membership = _str(content.get("membership"))
        if not target or not membership:
            return
        if target == self._config.bot_mxid:
            if membership == "invite" and not self._ours(sender):
                await self._bot.invited(room_id, sender)
            return
        sign = self._call_sign_of(target)
        if sign is not None:
            if membership == "invite" and not self._ours(sender) and content.get("is_direct"):
                # a direct chat with a call sign's user: asking it (an invite to any other
                # room, or for a call sign that does not exist, is left unanswered)
                await self._call_signs.invited(sign, room_id, sender)
            return
        if self._ours(target):
            return
        if membership == "knock" and sender == target:
            name = _str(content.get("displayname"))
            await self._call_signs.knocked(room_id, target, name)
            return
        advisor = AdvisorMxid(target)
        if membership == "join":
            name = _str(content.get("displayname"))
            if name:
                await self._advisors.set_display_name(target, name[:100])
            await self._conversations.advisor_joined(room_id, advisor)
            # now sharing a room with the desk: its presence may be asked for, and is pushed
            await self._advisors.joined_a_room(target)
            await self._advisors.seen_alive(target)
        elif membership in ("leave", "ban"):
            await self._conversations.advisor_left(room_id, advisor)

    async def _message(
        self,
        room_id: RoomId,
        sender: str,
        event_id: EventId,
        content: dict[str, Any],
        ts: float | None,
    ) -> None:
        said = read_message(content)
        if said is None or said.msgtype not in RELAYED_MSGTYPES:
            return
        context = await self._conversations.context(room_id, sender)
        if context.conversation is None and await self._call_signs.chat_message(room_id, sender):
            return  # in a direct chat with a call sign's user: asking again
        if context.advisor is not None:
            await self._advisors.seen_alive(sender)
        emote = said.msgtype == "m.emote"
        if said.replaces is not None:
            await self._conversations.advisor_edited(
                context, AdvisorMxid(sender), said.replaces, said.body, ts or 0.0, emote=emote
            )
        elif said.msgtype == "m.text" and said.body.startswith("!"):
            await self._command(room_id, sender, said.body, context)
        else:
            await self._conversations.advisor_said(
                context,
                AdvisorMxid(sender),
                event_id,
                said.body,
                ts or 0.0,
                emote=emote,
                reply_to=said.reply_to,
            )

    async def _command(
        self, room_id: RoomId, sender: str, body: str, context: RoomContext
    ) -> None:
        advisor, conversation = context.advisor, context.conversation
        role = (
            Role.ADMIN
            if sender in self._config.admins
            else Role.ADVISOR if advisor is not None else Role.ANYONE
        )

        async def reply(text: str) -> None:
            await self._bot.say(room_id, text)

        await self._commands.run(
            body.strip(),
            CommandContext(sender, room_id, [], role, advisor, conversation, reply),
        )

    async def handle_ephemeral(self, event: Any) -> None:
        """Typing, receipts and presence: hints that are never the only record of anything."""
        with about(None):
            await self._ephemeral(event)

    async def _ephemeral(self, event: Any) -> None:
        if not isinstance(event, dict) or not isinstance(event.get("content"), dict):
            return
        kind, content = event.get("type"), event["content"]
        room_id = _str(event.get("room_id"))
        if kind == "m.typing" and room_id:
            users = content.get("user_ids")
            if isinstance(users, list):
                typing = [u for u in users if isinstance(u, str) and not self._ours(u)]
                await self._conversations.advisor_typing(RoomId(room_id), typing)
                for user in typing:
                    await self._advisors.seen_alive(user)
        elif kind == "m.receipt" and room_id:
            for event_id, receipts in content.items():
                readers = receipts.get("m.read") if isinstance(receipts, dict) else None
                if isinstance(readers, dict) and isinstance(event_id, str):
                    for reader in readers:
                        if isinstance(reader, str) and not self._ours(reader):
                            await self._conversations.advisor_read(
                                RoomId(room_id), reader, EventId(event_id)
                            )
        elif kind == "m.presence":
            sender, state = _str(event.get("sender")), PRESENCE.get(content.get("presence"))
            if sender and state and not self._ours(sender):
                await self._advisors.presence_changed(sender, state)
