"""Call signs: the admins' ``!callsign`` commands, Matrix users asking one (a knock on its
lobby, a direct chat with its user), the public search, and the handlers that keep each call
sign's lobby and alias in step and answer the askers."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace

from .. import callsigns as rules
from .. import groups as group_rules
from ..callsigns import CallSign, Via
from ..errors import InvalidInput, NotAllowed, NotFound, TemporarilyUnavailable
from ..events import (
    AskerAnswered,
    AskerMayNotCome,
    AskRefused,
    BotSaid,
    CallSignRemoved,
    CallSignSet,
    ConversationOpened,
    QueueChanged,
    VisitorEntered,
)
from ..groups import Group, GroupId
from ..locks import KeyedLock
from ..logcontext import working_on
from ..model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationId,
    ConversationStatus,
    RoomId,
    Sender,
    Visitor,
    parse_mxid,
)
from ..outbox import Attempt, Handlers, UnitOfWork
from ..ports import Clock, MatrixGateway, Store
from .queue import QueueService
from .visitors import new_visitor_id

log = logging.getLogger(__name__)

NO_SUCH = "There is no call sign {sign} (any more)."
UNREACHABLE_ASKER = "We could not invite you to your conversation: your homeserver refused it."
NEVER_CAME = "The visitor never joined the chat."
#: tries of an asker's invite while their homeserver is unreachable, before the chat ends
INVITE_TRIES = 8
NOT_LISTED = (
    "Allow Switchboard's bot to publish rooms in the homeserver's configuration (Synapse: "
    "room_list_publication_rules, see the README), then say !callsign publish <sign> on again."
)
TOO_MANY = "Too many conversations from {server} are open right now; please try again in a while."


#: a direct chat with a call sign's user: (room, sign, the user who opened it)
Chat = tuple[RoomId, str, str]


@dataclass(frozen=True)
class CallSignSettings:
    #: open conversations askers of one other homeserver may hold at once
    max_open_per_server: int = 20
    #: seconds since the last proof of life of another homeserver's advisor that public
    #: listings still show them
    proof_of_life: float = 900.0
    #: seconds an asker has to join their room before the conversation ends (the portal's
    #: routing.abandon_after: a visitor who never opens the chat)
    join_within: float = 300.0


@dataclass(frozen=True)
class CallSignLine:
    """A call sign with what it reaches, as listings show it."""

    call_sign: CallSign
    target: str  # "@ana:example.org" or "group support/billing"
    name: str  # the advisor's or the group's display name
    reachable: bool  # someone behind it would be shown to the public now


@dataclass(frozen=True)
class PublicCallSign:
    """What the portal's search shows of a call sign (nobody's Matrix id)."""

    sign: str
    name: str
    keywords: str
    alias: str


class CallSignService:
    def __init__(
        self,
        store: Store,
        uow: UnitOfWork,
        gateway: MatrixGateway,
        clock: Clock,
        queue: QueueService,
        settings: CallSignSettings = CallSignSettings(),
    ) -> None:
        self._store = store
        self._uow = uow
        self._gateway = gateway
        self._clock = clock
        self._queue = queue
        self._settings = settings
        self._askers = KeyedLock()

    # -- the admins' commands ----------------------------------------------------------------

    async def set(self, sign: str, target: str, keywords: str = "") -> tuple[CallSign, bool]:
        """Assign ``sign`` to an advisor (``@ana:example.org``) or a group (``group
        support/billing``); its keywords are replaced when given. True if it is new."""
        sign = rules.check_sign(sign)
        advisor, group_id = await self._target(target)
        async with self._uow() as batch:
            current = await self._store.get_call_sign(sign)
            changed = CallSign(
                sign,
                advisor,
                group_id,
                (
                    rules.check_keywords(keywords)
                    if keywords or current is None
                    else current.keywords
                ),
                current.listed if current else False,
                current.lobby_id if current else None,
            )
            if changed != current:
                await self._store.save_call_sign(changed)
                # the lobby's name follows the target; routing of waiting askers too
                batch.raise_([CallSignSet(sign), QueueChanged()])
        log.info("call sign %s now reaches %s", sign, advisor or f"group {group_id}")
        return changed, current is None

    async def _target(self, target: str) -> tuple[AdvisorMxid | None, GroupId | None]:
        words = target.split(maxsplit=1)
        if len(words) == 2 and words[0].lower() == "group":
            tree = {g.id: g for g in await self._store.groups()}
            return None, group_rules.find(tree, words[1]).id
        if target.startswith("@"):
            advisor = parse_mxid(target)
            if await self._store.get_advisor(advisor) is None:
                raise NotFound(f"{advisor} is not an advisor; add them first with !advisor add.")
            return advisor, None
        raise InvalidInput(
            "Say who the call sign reaches: an advisor (@ana:example.org) or a group "
            "(group support/billing)."
        )

    async def set_keywords(self, sign: str, keywords: str) -> CallSign:
        return await self._update(sign, keywords=rules.check_keywords(keywords))

    async def set_listed(self, sign: str, listed: bool, told: RoomId | None = None) -> CallSign:
        """Whether the public room directory lists the call sign's lobby; ``told``: where to
        say so if the homeserver refuses to list it."""
        return await self._update(sign, told, listed=listed)

    async def _update(self, sign: str, told: RoomId | None = None, **changes: object) -> CallSign:
        async with self._uow() as batch:
            current = await self._get(sign)
            changed = replace(current, **changes)  # type: ignore[arg-type]
            if changed != current:
                await self._store.save_call_sign(changed)
                batch.raise_([CallSignSet(changed.sign, told)])
        return changed

    async def _get(self, sign: str) -> CallSign:
        found = await self._store.get_call_sign(sign.strip().lower())
        if found is None:
            raise NotFound(f"There is no call sign {sign!r}; !callsign list shows them.")
        return found

    async def remove(self, sign: str) -> None:
        """The call sign goes (its alias and lobby with it); open conversations stay open."""
        async with self._uow() as batch:
            current = await self._get(sign)
            await self._store.remove_call_sign(current.sign)
            batch.raise_([CallSignRemoved(current.sign, current.lobby_id), QueueChanged()])
        log.info("call sign %s removed", current.sign)

    async def lines(self) -> list[CallSignLine]:
        """Every call sign, by sign, with what it reaches and whether it is reachable now."""
        advisors, tree, members = await self._read_people()
        shown = self._shown(advisors)
        lines = []
        for call_sign in sorted(await self._store.call_signs(), key=lambda c: c.sign):
            target, name = _describe(call_sign, advisors, tree)
            lines.append(
                CallSignLine(
                    call_sign, target, name, rules.reachable_now(call_sign, shown, members)
                )
            )
        return lines

    # -- who is shown ------------------------------------------------------------------------

    def _shown(self, advisors: Mapping[AdvisorMxid, Advisor]) -> dict[AdvisorMxid, bool]:
        now = self._clock.now()
        return {
            mxid: rules.shown_to_public(
                a,
                now,
                local=self._gateway.is_local(mxid),
                proof_of_life=self._settings.proof_of_life,
            )
            for mxid, a in advisors.items()
        }

    async def _read_people(
        self,
    ) -> tuple[
        dict[AdvisorMxid, Advisor], dict[GroupId, Group], dict[GroupId, frozenset[AdvisorMxid]]
    ]:
        """Every advisor, the tree, and each group's advisors (with those of the groups
        inside it; the root's are everyone)."""
        advisors = {a.mxid: a for a in await self._store.advisors()}
        tree = {g.id: g for g in await self._store.groups()}
        direct: dict[GroupId, set[AdvisorMxid]] = {}
        for group in tree.values():
            if not group.is_root:
                direct[group.id] = {m.advisor for m in await self._store.members_of(group.id)}
        members: dict[GroupId, frozenset[AdvisorMxid]] = {}
        for group in tree.values():
            if group.is_root:
                members[group.id] = frozenset(advisors)
                continue
            inside = {group.id} | {
                g.id
                for g in tree.values()
                if group.id in {a.id for a in group_rules.ancestors(tree, g.id)}
            }
            members[group.id] = frozenset(a for g in inside for a in direct.get(g, ()))
        return advisors, tree, members

    async def search(self, query: str, limit: int = 20) -> list[PublicCallSign]:
        """The portal's search box: call signs matching every word of ``query`` (a prefix
        of a word of their sign, keywords or target's name; accents and case do not count)
        whose advisor or group has someone the public may be shown now."""
        if not rules.keywords.words(query):
            return []
        advisors, tree, members = await self._read_people()
        shown = self._shown(advisors)
        found = []
        for call_sign in sorted(await self._store.call_signs(), key=lambda c: c.sign):
            _, name = _describe(call_sign, advisors, tree)
            if rules.matches(query, call_sign, name) and rules.reachable_now(
                call_sign, shown, members
            ):
                alias, _ = self._gateway.call_sign_address(call_sign.sign)
                found.append(PublicCallSign(call_sign.sign, name, call_sign.keywords, alias))
        return found[:limit]

    async def public(self, sign: str) -> PublicCallSign | None:
        """The call sign if the public may reach it now (someone behind it is shown)."""
        found = await self.search(sign, limit=1000)
        return next((c for c in found if c.sign == sign), None)

    # -- Matrix users asking -----------------------------------------------------------------

    async def knocked(self, lobby_id: RoomId, user: str, name: str | None) -> None:
        """``user`` knocked on a lobby: if it is a call sign's, they are asking it."""
        call_sign = await self._store.call_sign_by_lobby(lobby_id)
        if call_sign is None:
            call_sign = await self._lobby_not_stored_yet(lobby_id)
        if call_sign is not None:
            await self.ask(call_sign.sign, user, name, Via.KNOCK, lobby_id)

    async def _lobby_not_stored_yet(self, room_id: RoomId) -> CallSign | None:
        """The call sign whose alias points at ``room_id`` though its lobby is not stored
        yet: a knock can come before the handler that stores it has run (a lobby made
        before, say by a desk on a restored database, found by its alias)."""
        for call_sign in await self._store.call_signs():
            if (
                call_sign.lobby_id is None
                and await self._gateway.find_lobby(call_sign.sign) == room_id
            ):
                # on its own, not in a unit of work: that would mark the knock handled before
                # the ask is (see :meth:`ask`)
                await self._store.lobby_found(call_sign.sign, room_id)
                return call_sign
        return None

    async def invited(self, sign: str, room_id: RoomId, user: str) -> None:
        """``user`` invited the call sign's user to a direct chat: they are asking it. An
        invite for a call sign that does not exist is left unanswered: nobody's made-up name
        becomes an account or a row."""
        if await self._store.get_call_sign(sign) is None:
            log.info("ignored an invite of call sign %s, which does not exist", sign)
            return
        await self.ask(sign, user, None, Via.DIRECT, room_id, remember_chat=True)

    async def chat_message(self, room_id: RoomId, sender: str) -> bool:
        """A message in a direct chat with a call sign's user: from the user who opened it,
        it asks again (the open conversation is pointed to, or a new one opened); from
        anyone else it is ignored (no command runs there). False: not such a chat."""
        chat = await self._store.call_sign_chat(room_id)
        if chat is None:
            return False
        if chat[1] == sender:
            await self.ask(chat[0], sender, None, Via.DIRECT, room_id)
        return True

    async def ask(
        self,
        sign: str,
        user: str,
        name: str | None,
        via: str,
        room_id: RoomId,
        *,
        remember_chat: bool = False,
    ) -> None:
        """``user`` asks the call sign ``sign`` (``via`` a knock on ``room_id``, its lobby, or
        in the direct chat ``room_id``). They get a conversation of their own, routed like a
        portal visitor's to the call sign's advisor or group; asking again while it is open
        points them to it. Open conversations of one other homeserver are capped.
        ``remember_chat``: the direct chat is recorded (with whatever the ask commits, so
        that the Matrix event is marked handled only with the whole of it)."""
        key = rules.asker_key(sign, user)
        chat = (room_id, sign, user) if remember_chat else None
        async with self._askers(key):
            call_sign = await self._store.get_call_sign(sign)
            if call_sign is None:
                await self._refuse(user, via, room_id, sign, NO_SUCH.format(sign=sign), chat)
                return
            visitor = await self._store.visitor_by_session(key)
            if visitor is not None:
                current = await self._store.latest_conversation(visitor.id)
                if current is not None and current.status.is_open:
                    await self._answer(current, user, via, room_id, sign, chat)
                    return
            if not self._gateway.is_local(AdvisorMxid(user)):
                server = rules.server_of(user)
                held = rules.open_from(await self._store.open_conversations(), server)
                if held >= self._settings.max_open_per_server:
                    log.info("refused %s: %d conversations of %s are open", user, held, server)
                    reason = TOO_MANY.format(server=server)
                    await self._refuse(user, via, room_id, sign, reason, chat)
                    return
            conversation = await self._open(key, visitor, sign, user, name, via, room_id, chat)
        working_on(conversation.id)
        log.info("conversation %s opened by %s asking call sign %s", conversation.id, user, sign)

    async def _open(
        self,
        key: str,
        visitor: Visitor | None,
        sign: str,
        user: str,
        name: str | None,
        via: str,
        room_id: RoomId,
        chat: Chat | None,
    ) -> Conversation:
        now = self._clock.now()
        given = Visitor(
            visitor.id if visitor else new_visitor_id(),
            rules.display_name(user, name or (visitor.name if visitor else None)),
            None,
            now,
        )
        async with self._uow() as batch:
            await self._remember(chat)
            stored = await self._store.add_visitor(given, key)
            conversation = Conversation(
                id=ConversationId(uuid.uuid4().hex),
                visitor_id=stored.id,
                topic="",
                status=ConversationStatus.WAITING,
                created_at=now,
                queued_at=now,
                call_sign=sign,
                asker=user,
            )
            if not await self._store.add_conversation(conversation):
                current = await self._store.latest_conversation(stored.id)
                assert current is not None
                batch.raise_([AskerAnswered(current.id, user, via, room_id, sign, _txn())])
                return current
            batch.raise_(
                [
                    ConversationOpened(conversation.id),
                    VisitorEntered(conversation.id),
                    AskerAnswered(conversation.id, user, via, room_id, sign, _txn()),
                    AskerMayNotCome(conversation.id, due=now + self._settings.join_within),
                    QueueChanged(),
                ]
            )
        return conversation

    async def _answer(
        self,
        conversation: Conversation,
        user: str,
        via: str,
        room_id: RoomId,
        sign: str,
        chat: Chat | None,
    ) -> None:
        """Point the asker to their open conversation again, unless an answer to them is
        still pending (a flood of asks adds no rows)."""
        answer = AskerAnswered(conversation.id, user, via, room_id, sign, _txn())
        async with self._uow() as batch:
            await self._remember(chat)
            if not await self._store.outbox.pending(answer.key, type(answer).__name__):
                batch.raise_([answer])

    async def _refuse(
        self, user: str, via: str, room_id: RoomId, sign: str, reason: str, chat: Chat | None
    ) -> None:
        async with self._uow() as batch:
            await self._remember(chat)
            batch.raise_([AskRefused(user, via, room_id, sign, reason, _txn())])

    async def _remember(self, chat: Chat | None) -> None:
        if chat is not None:
            await self._store.add_call_sign_chat(*chat)

    # -- the homeserver's questions (alias and user queries) ---------------------------------

    async def lobby(self, sign: str) -> RoomId | None:
        """The call sign's lobby, made now if its handler has not made it yet (someone
        resolves the alias first); None if there is no such call sign."""
        call_sign = await self._store.get_call_sign(sign)
        if call_sign is None:
            return None
        if call_sign.lobby_id is not None:
            return call_sign.lobby_id
        return await self._make_lobby(call_sign)

    async def exists(self, sign: str) -> bool:
        return await self._store.get_call_sign(sign) is not None

    # -- handlers ----------------------------------------------------------------------------

    def register(self, handlers: Handlers) -> None:
        handlers.register(CallSignSet, self.shape_lobby)
        handlers.register(CallSignRemoved, self.close_lobby)
        handlers.register(AskerAnswered, self.answer)
        handlers.register(AskRefused, self.refuse)
        handlers.register(AskerMayNotCome, self.drop_if_not_come)

    async def _make_lobby(self, call_sign: CallSign) -> RoomId:
        name, topic = await self._lobby_text(call_sign)
        lobby = await self._gateway.make_lobby(call_sign.sign, name, topic)
        await self._store.lobby_found(call_sign.sign, lobby)
        return lobby

    async def _lobby_text(self, call_sign: CallSign) -> tuple[str, str]:
        advisors = {a.mxid: a for a in await self._store.advisors()}
        tree = {g.id: g for g in await self._store.groups()}
        _, name = _describe(call_sign, advisors, tree)
        alias, user = self._gateway.call_sign_address(call_sign.sign)
        topic = (
            f'Private help from {name}. Knock to ask ("Ask to join", or /knock {alias}), or '
            f"start a direct chat with {user}: either way you get a room of your own with an "
            "advisor. Nobody else sees who asked."
        )
        title = call_sign.sign if name == call_sign.sign else f"{name} ({call_sign.sign})"
        return title, topic

    async def shape_lobby(self, event: CallSignSet, attempt: Attempt) -> None:
        call_sign = await self._store.get_call_sign(event.sign)
        if call_sign is None:
            return  # removed since: its own event closes what was made
        lobby = call_sign.lobby_id or await self._make_lobby(call_sign)
        name, topic = await self._lobby_text(call_sign)
        try:
            await self._gateway.describe_lobby(
                call_sign.sign, lobby, name, topic, call_sign.listed
            )
        except NotAllowed as e:
            # the homeserver's rules (Synapse: room_list_publication_rules) keep it unlisted;
            # trying again changes nothing until an admin changes them
            log.warning("call sign %s is not listed: %s", call_sign.sign, e)
            if event.told is not None:
                async with self._uow() as batch:
                    batch.raise_([BotSaid(event.told, f"{e} {NOT_LISTED}", _txn())])

    async def close_lobby(self, event: CallSignRemoved, attempt: Attempt) -> None:
        if await self._store.get_call_sign(event.sign) is not None:
            return  # set again since: its lobby stays
        await self._gateway.close_lobby(event.sign, event.lobby_id)

    async def answer(self, event: AskerAnswered, attempt: Attempt) -> None:
        """Invite the asker to their conversation's room and tell them where it is: a knock
        is rejected with the room's id as the reason (knockers see nothing of the lobby), a
        direct chat gets a notice with a link. Asked again, they are invited again (they may
        have lost the invite). An asker whose homeserver keeps failing or refuses the invite
        cannot take part: the conversation ends, and they are told to try later."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or conversation.room_id is None:
            return  # ended before it had a room
        room = conversation.room_id
        if not conversation.status.is_open:
            text = "That conversation has ended; ask again for a new one."
        elif await self._invited(room, event.asker, attempt):
            text = (
                f"Your conversation ({event.sign}) is the room {room}: accept its invite. "
                f"https://matrix.to/#/{room}"
            )
        else:
            await self._queue.end(conversation.id, Sender.SYSTEM, UNREACHABLE_ASKER)
            text = UNREACHABLE_ASKER + " Please try again later."
        if event.via == Via.KNOCK:
            await self._gateway.reject_knock(event.room_id, event.asker, text)
        else:
            await self._gateway.call_sign_says(event.sign, event.room_id, text, event.txn_id)

    async def _invited(self, room: RoomId, asker: str, attempt: Attempt) -> bool:
        """Whether the asker could be invited (a homeserver away is waited for a while)."""
        try:
            await self._gateway.invite_asker(room, asker)
        except TemporarilyUnavailable as e:
            if attempt.tries < INVITE_TRIES:
                raise
            log.warning("could not invite %s to %s: %s", asker, room, e)
            return False
        except Exception as e:  # their homeserver refused it
            log.warning("could not invite %s to %s: %s", asker, room, e)
            return False
        return True

    async def drop_if_not_come(self, event: AskerMayNotCome, attempt: Attempt) -> None:
        """The asker had ``join_within`` seconds to join their room: one who has not (they
        ignored the invite, or their server is gone) loses the conversation."""
        conversation = await self._store.get_conversation(event.conversation_id)
        if conversation is None or not conversation.status.is_open or conversation.asker is None:
            return
        if conversation.room_id is not None:
            if await self._gateway.membership(conversation.room_id, conversation.asker) == "join":
                return
        log.info("conversation %s: %s never joined", conversation.id, conversation.asker)
        await self._queue.end(conversation.id, Sender.VISITOR, NEVER_CAME)

    async def refuse(self, event: AskRefused, attempt: Attempt) -> None:
        if event.via == Via.KNOCK:
            await self._gateway.reject_knock(event.room_id, event.asker, event.reason)
        else:
            await self._gateway.call_sign_says(
                event.sign, event.room_id, event.reason, event.txn_id
            )


def _txn() -> str:
    return f"sb-cs-{uuid.uuid4().hex}"


def _describe(
    call_sign: CallSign, advisors: Mapping[AdvisorMxid, Advisor], tree: Mapping[GroupId, Group]
) -> tuple[str, str]:
    """(target as an admin writes it, display name) of what the call sign reaches."""
    if call_sign.advisor is not None:
        # shown to the public: the display name, never a Matrix id (nor its localpart)
        advisor = advisors.get(call_sign.advisor)
        name = advisor.display_name if advisor and advisor.display_name else call_sign.sign
        return call_sign.advisor, name
    assert call_sign.group_id is not None
    group = tree.get(call_sign.group_id)
    if group is None:
        return "group (deleted)", call_sign.sign
    return f"group {group_rules.path_of(tree, group.id)}", group.name
