"""Call signs: the pure rules (slugs, keywords, who the public sees), then the services on the
recording fake (assigning, asking by knock and by direct chat, asking twice, the per-server
cap, routing to the call sign's advisor or group, the lobby's handlers)."""

from __future__ import annotations

import pytest

from bridge import callsigns as rules
from bridge.callsigns import CallSign, Via
from bridge.errors import InvalidInput, NotAllowed, NotFound
from bridge.groups import Role
from bridge.model import (
    Advisor,
    AdvisorMxid,
    Conversation,
    ConversationStatus,
    Presence,
    RoomId,
    Sender,
)
from bridge.services.callsigns import CallSignSettings
from bridge.services.groups import parse_role

from .conftest import Desk, make_desk

ANA, BOB = "@ana:test", "@bob:test"
FAR = "@far:elsewhere"  # an advisor on another homeserver (see FakeMatrixGateway)
LOBBY_KNOCKER = "@kim:elsewhere"


# -- pure rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("good", ["billing-es", "a", "help24", "x-y-z"])
def test_a_call_sign_is_a_slug(good: str) -> None:
    assert rules.check_sign(good) == good


@pytest.mark.parametrize("bad", ["", "Billing", "-x", "x-", "fac_tura", "faç", "a b", "x" * 33])
def test_anything_else_is_refused_with_a_suggestion(bad: str) -> None:
    with pytest.raises(InvalidInput) as e:
        rules.check_sign(bad)
    assert "call sign" in str(e.value)


def test_the_suggestion_drops_accents_and_capitals() -> None:
    assert rules.suggest_sign("Facturación ES") == "facturacion-es"


def test_keywords_keep_accents_and_lose_control_characters() -> None:
    assert rules.check_keywords("  facturación\x00  pagos\n ") == "facturación pagos"
    with pytest.raises(InvalidInput):
        rules.check_keywords("x" * 301)


def test_a_search_matches_sign_keywords_and_target_name_by_prefix_without_accents() -> None:
    sign = CallSign("billing-es", AdvisorMxid(ANA), None, "facturación pagos")
    assert rules.matches("factura", sign, "Ana")
    assert rules.matches("FACTURACION", sign, "Ana")
    assert rules.matches("bill", sign, "Ana")
    assert rules.matches("ana pag", sign, "Ana")
    assert not rules.matches("soporte", sign, "Ana")
    assert not rules.matches("   ", sign, "Ana")  # an empty query lists nothing


def test_an_askers_name_is_one_printable_line() -> None:
    assert rules.display_name("@kim:x", "Kim\x00\u202e  Lee\n\tX") == "Kim Lee X"
    assert rules.display_name("@kim:x", "\x07\x08") == "kim"
    assert len(rules.display_name("@kim:x", "a" * 500)) == 80


def advisor(presence: Presence, available: bool = True, seen: float | None = None) -> Advisor:
    return Advisor(AdvisorMxid(ANA), available, presence, last_seen_at=seen)


def test_only_online_and_available_advisors_are_shown_never_unknown_presence() -> None:
    shown = rules.shown_to_public
    assert shown(advisor(Presence.ONLINE), 100.0, local=True, proof_of_life=60)
    assert not shown(advisor(Presence.ONLINE, False), 100.0, local=True, proof_of_life=60)
    assert not shown(advisor(Presence.UNKNOWN), 100.0, local=True, proof_of_life=60)
    assert not shown(advisor(Presence.UNAVAILABLE), 100.0, local=True, proof_of_life=60)


def test_a_federated_advisor_is_shown_only_with_a_recent_proof_of_life() -> None:
    shown = rules.shown_to_public
    assert not shown(advisor(Presence.ONLINE), 1000.0, local=False, proof_of_life=60)
    assert shown(advisor(Presence.ONLINE, seen=950.0), 1000.0, local=False, proof_of_life=60)
    assert not shown(advisor(Presence.ONLINE, seen=900.0), 1000.0, local=False, proof_of_life=60)


def test_open_conversations_are_counted_per_asker_server() -> None:
    def conv(asker: str | None, status: ConversationStatus) -> Conversation:
        ended = 1.0 if status is ConversationStatus.ENDED else None
        return Conversation(
            id=f"c-{asker}-{status.value}",  # type: ignore[arg-type]
            visitor_id="v",  # type: ignore[arg-type]
            topic="",
            status=status,
            created_at=0,
            queued_at=0,
            asker=asker,
            ended_at=ended,
        )

    conversations = [
        conv("@a:far", ConversationStatus.WAITING),
        conv("@b:far", ConversationStatus.WAITING),
        conv("@c:far", ConversationStatus.ENDED),
        conv("@d:near", ConversationStatus.WAITING),
        conv(None, ConversationStatus.WAITING),
    ]
    assert rules.open_from(conversations, "far") == 2
    assert rules.open_from(conversations, "near") == 1


# -- through the services --------------------------------------------------------------------


async def settled(desk: Desk) -> None:
    await desk.settle()


async def with_call_sign(
    desk: Desk, target: str = ANA, sign: str = "billing-es", keywords: str = "facturación"
) -> CallSign:
    made, new = await desk.core.call_signs.set(sign, target, keywords)
    assert new
    await desk.settle()
    return made


async def test_setting_a_call_sign_makes_its_lobby_and_names_it_after_its_advisor(
    desk: Desk,
) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    stored = await desk.store.get_call_sign("billing-es")
    assert stored is not None and stored.lobby_id is not None
    assert desk.gateway.of("lobby") == [
        # no display name known yet: the sign names it (the public never sees a Matrix id)
        ("lobby", stored.lobby_id, "billing-es", "billing-es")
    ]
    assert desk.gateway.of("lobby-described")[-1][3] is False  # not listed until published
    await desk.core.call_signs.set_listed("billing-es", True)
    await desk.settle()
    assert desk.gateway.of("lobby-described")[-1][3] is True
    assert len(desk.gateway.of("lobby")) == 1  # made once


async def test_a_call_sign_reaches_an_advisor_or_a_group_and_nothing_else(desk: Desk) -> None:
    await desk.advisor(ANA)
    with pytest.raises(NotFound):
        await desk.core.call_signs.set("x", "@nobody:test")
    with pytest.raises(NotFound):
        await desk.core.call_signs.set("x", "group support/none")
    with pytest.raises(InvalidInput):
        await desk.core.call_signs.set("x", "ana")
    with pytest.raises(InvalidInput):
        await desk.core.call_signs.set("Bad_Sign", ANA)
    await desk.core.groups.create("support")
    made, _ = await desk.core.call_signs.set("support", "group support", "ayuda")
    assert made.group_id is not None and made.advisor is None


async def test_a_knock_opens_a_private_conversation_routed_to_the_call_signs_advisor(
    desk: Desk,
) -> None:
    await desk.advisor(ANA)
    await desk.advisor(BOB)
    made = await with_call_sign(desk)
    assert made is not None
    lobby = (await desk.store.get_call_sign("billing-es")).lobby_id  # type: ignore[union-attr]
    assert lobby is not None
    for _ in range(3):  # Bob sorts after Ana but is never offered: only Ana is behind it
        await desk.core.call_signs.knocked(lobby, f"@kim{_}:elsewhere", "Kim")
    await desk.settle()
    open_ = await desk.store.open_conversations()
    assert len(open_) == 3 and {c.asker for c in open_} == {f"@kim{i}:elsewhere" for i in range(3)}
    assert all(c.advisor in (None, AdvisorMxid(ANA)) for c in open_)
    rooms = desk.gateway.of("room")
    invited = {(r[1], r[2]) for r in desk.gateway.of("asker-invited")}
    assert invited == {(r[1], f"@kim{i}:elsewhere") for i, r in enumerate(rooms)}  # each own
    assert len({r[1] for r in rooms}) == 3  # a room each: nobody sees who else asked
    rejected = desk.gateway.of("knock-rejected")
    assert [r[2] for r in rejected] == [f"@kim{i}:elsewhere" for i in range(3)]
    for (_, _, _, reason), room in zip(rejected, [r[1] for r in rooms], strict=True):
        assert room in reason  # the knock's answer says where the conversation is
    assert not desk.gateway.of("puppet")  # a Matrix user is themself, no puppet


async def test_asking_twice_points_to_the_open_conversation(desk: Desk) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    lobby = (await desk.store.get_call_sign("billing-es")).lobby_id  # type: ignore[union-attr]
    assert lobby is not None
    await desk.core.call_signs.knocked(lobby, LOBBY_KNOCKER, None)
    await desk.settle()
    await desk.core.call_signs.knocked(lobby, LOBBY_KNOCKER, None)
    await desk.settle()
    assert len(await desk.store.open_conversations()) == 1
    room = desk.gateway.of("room")[0][1]
    assert [r[3].count(room) > 0 for r in desk.gateway.of("knock-rejected")] == [True, True]
    assert desk.gateway.of("asker-invited")[-1] == ("asker-invited", room, LOBBY_KNOCKER)


async def test_a_direct_chat_asks_and_a_message_there_asks_again(desk: Desk) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    dm = RoomId("!dm:elsewhere")
    await desk.core.call_signs.invited("billing-es", dm, FAR)
    await desk.settle()
    [conversation] = await desk.store.open_conversations()
    assert conversation.asker == FAR and conversation.call_sign == "billing-es"
    says = desk.gateway.of("call-sign-says")
    assert len(says) == 1 and says[0][1] == dm and conversation.room_id in says[0][3]
    assert await desk.core.call_signs.chat_message(dm, FAR)
    # someone else in that chat asks nothing (and runs no command: it is the call sign's)
    assert await desk.core.call_signs.chat_message(dm, "@someone-else:elsewhere")
    assert not await desk.core.call_signs.chat_message(RoomId("!other:test"), FAR)
    await desk.settle()
    assert len(await desk.store.open_conversations()) == 1
    assert len(desk.gateway.of("call-sign-says")) == 2


async def test_a_remote_server_is_capped_and_told_so(desk: Desk) -> None:
    capped = make_desk(call_signs=rules_settings(max_open=2))
    await capped.advisor(ANA)
    await with_call_sign(capped)
    lobby = (await capped.store.get_call_sign("billing-es")).lobby_id  # type: ignore[union-attr]
    assert lobby is not None
    for i in range(3):
        await capped.core.call_signs.knocked(lobby, f"@u{i}:elsewhere", None)
    await capped.core.call_signs.knocked(lobby, "@local:test", None)  # this server: no cap
    await capped.settle()
    askers = {c.asker for c in await capped.store.open_conversations()}
    assert askers == {"@u0:elsewhere", "@u1:elsewhere", "@local:test"}
    refused = [r for r in capped.gateway.of("knock-rejected") if r[2] == "@u2:elsewhere"]
    assert len(refused) == 1 and "Too many conversations from elsewhere" in refused[0][3]


def rules_settings(max_open: int) -> CallSignSettings:
    return CallSignSettings(max_open_per_server=max_open)


async def test_a_removed_call_sign_closes_its_lobby_and_refuses_new_askers(desk: Desk) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    lobby = (await desk.store.get_call_sign("billing-es")).lobby_id  # type: ignore[union-attr]
    await desk.core.call_signs.remove("billing-es")
    await desk.settle()
    assert desk.gateway.of("lobby-closed") == [("lobby-closed", "billing-es", lobby)]
    await desk.core.call_signs.ask("billing-es", FAR, None, Via.DIRECT, RoomId("!dm:x"))
    await desk.settle()
    assert not await desk.store.open_conversations()
    assert "no call sign billing-es" in desk.gateway.of("call-sign-says")[-1][3]


async def test_a_group_call_sign_routes_to_the_groups_members_only(desk: Desk) -> None:
    await desk.advisor(ANA)
    await desk.advisor(BOB)
    await desk.core.groups.create("billing")
    await desk.core.groups.add_member("billing", BOB, rules_role("secondary"))
    await with_call_sign(desk, target="group billing", sign="billing")
    await desk.core.call_signs.ask("billing", FAR, None, Via.KNOCK, RoomId("!l:test"))
    await desk.settle()
    [conversation] = await desk.store.open_conversations()
    assert conversation.advisor == AdvisorMxid(BOB)
    with pytest.raises(InvalidInput, match="call sign billing reaches"):
        await desk.core.groups.delete("billing")


def rules_role(text: str) -> Role:
    return parse_role(text)


async def test_the_askers_join_is_not_an_advisors_and_their_leaving_ends_it(desk: Desk) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    await desk.core.call_signs.ask("billing-es", FAR, "Far", Via.DIRECT, RoomId("!dm:x"))
    await desk.settle()
    [conversation] = await desk.store.open_conversations()
    assert conversation.room_id is not None and conversation.status is ConversationStatus.INVITING
    await desk.conversations.advisor_joined(conversation.room_id, AdvisorMxid(FAR))
    assert (await desk.conv(conversation.id)).advisor == AdvisorMxid(ANA)  # still Ana's offer
    await desk.conversations.advisor_left(conversation.room_id, AdvisorMxid(FAR))
    await desk.settle()
    ended = await desk.conv(conversation.id)
    assert ended.status is ConversationStatus.ENDED
    assert ("revoke", conversation.room_id, FAR) in desk.gateway.sent  # removed on close


async def test_the_public_search_shows_only_call_signs_someone_can_answer_now(
    desk: Desk,
) -> None:
    await desk.advisor(ANA)
    await desk.advisor(FAR)
    await with_call_sign(desk, ANA, "billing-es", "facturación")
    await with_call_sign(desk, FAR, "far-help", "facturas lejanas")
    search = desk.core.call_signs.search
    assert await search("factura") == []  # presence unknown: nobody is shown
    await desk.advisors.presence_changed(ANA, Presence.ONLINE)
    await desk.store.save_advisor(
        Advisor(AdvisorMxid(FAR), True, Presence.ONLINE)
    )  # "online" as their server last said, but no proof of life
    assert [c.sign for c in await search("FACTURACIÓN")] == ["billing-es"]
    assert [c.sign for c in await search("factura")] == ["billing-es"]
    await desk.advisors.presence_changed(FAR, Presence.ONLINE)  # a push: proof of life
    assert [c.sign for c in await search("factura")] == ["billing-es", "far-help"]
    desk.clock.advance(901)  # the proof of life grows old; Ana is local, still shown
    assert [c.sign for c in await search("factura")] == ["billing-es"]
    await desk.advisors.set_available(ANA, False)
    assert await search("factura") == []
    found = await search("far")
    assert found == [] and not any(ANA in repr(c) for c in found)


async def test_a_listing_the_homeserver_refuses_is_told_to_the_admin_not_retried(
    desk: Desk,
) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    admin_room = RoomId("!admin:test")
    desk.gateway.fail_next = NotAllowed("The homeserver refused to list #cs_billing-es:test.")
    await desk.core.call_signs.set_listed("billing-es", True, admin_room)
    await desk.settle()
    told = [s for s in desk.gateway.of("notice") if s[1] == admin_room]
    assert len(told) == 1 and "room_list_publication_rules" in told[0][2]
    assert not desk.store.outbox.kinds("parked")
    assert (await desk.store.get_call_sign("billing-es")).listed  # type: ignore[union-attr]


async def test_a_knock_on_a_lobby_made_before_but_not_stored_yet_is_not_lost(
    desk: Desk,
) -> None:
    """The lobby's alias was bound before (a desk on a restored database, another process):
    a knock that comes before the handler stored the lobby finds it by the alias."""
    await desk.advisor(ANA)
    await desk.core.call_signs.set("billing-es", ANA)  # its handler has not run yet
    old = RoomId("!old-lobby:test")
    desk.gateway.room_keys["#cs_billing-es"] = old
    await desk.core.call_signs.knocked(old, LOBBY_KNOCKER, "Kim")
    await desk.core.call_signs.knocked(RoomId("!unrelated:test"), "@x:elsewhere", None)
    await desk.settle()
    [conversation] = await desk.store.open_conversations()
    assert conversation.asker == LOBBY_KNOCKER
    assert (await desk.store.get_call_sign("billing-es")).lobby_id == old  # type: ignore[union-attr]
    assert not desk.gateway.of("lobby")  # found, not made again


async def test_an_advisor_a_call_sign_reaches_cannot_be_removed_until_it_is_moved(
    desk: Desk,
) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    with pytest.raises(InvalidInput, match="call sign billing-es reaches"):
        await desk.core.advisors.remove(ANA)
    await desk.core.call_signs.remove("billing-es")
    await desk.core.advisors.remove(ANA)


async def test_an_asker_whose_homeserver_refuses_the_invite_is_told_and_the_chat_ends(
    desk: Desk,
) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    lobby = (await desk.store.get_call_sign("billing-es")).lobby_id  # type: ignore[union-attr]
    assert lobby is not None
    await desk.core.call_signs.knocked(lobby, LOBBY_KNOCKER, None)
    await desk.settle()
    [conversation] = await desk.store.open_conversations()

    async def refuse(room_id: RoomId, user: str) -> None:
        raise PermissionError("M_FORBIDDEN: their server refused the invite")

    desk.gateway.invite_asker = refuse  # type: ignore[method-assign]
    await desk.core.call_signs.knocked(lobby, LOBBY_KNOCKER, None)  # asks again: invited again
    await desk.settle()
    ended = await desk.conv(conversation.id)
    assert ended.status is ConversationStatus.ENDED
    reason = desk.gateway.of("knock-rejected")[-1][3]
    assert "could not invite you" in reason and "try again later" in reason
    assert not desk.store.outbox.kinds("parked")


async def test_a_flood_of_asks_adds_one_answer_while_one_is_pending(desk: Desk) -> None:
    await desk.advisor(ANA)
    await with_call_sign(desk)
    dm = RoomId("!dm:elsewhere")
    await desk.core.call_signs.invited("billing-es", dm, FAR)
    await desk.settle()
    for _ in range(20):
        await desk.core.call_signs.chat_message(dm, FAR)
    assert desk.store.outbox.kinds().count("AskerAnswered") == 1
    await desk.settle()
    assert len(desk.gateway.of("call-sign-says")) == 2  # the first answer, and one more


async def test_an_asker_who_never_joins_their_room_loses_it_after_abandon_after(
    desk: Desk,
) -> None:
    """They ignored the invite, or their server is gone: the conversation would hold an
    advisor's offers and a place under their server's cap for nobody."""
    await desk.advisor(ANA)
    await with_call_sign(desk)
    await desk.core.call_signs.ask("billing-es", FAR, None, Via.DIRECT, RoomId("!dm:x"))
    await desk.core.call_signs.ask("billing-es", LOBBY_KNOCKER, None, Via.DIRECT, RoomId("!dm:y"))
    await desk.settle()
    joined, absent = sorted(await desk.store.open_conversations(), key=lambda c: c.asker != FAR)
    assert joined.room_id is not None
    desk.gateway.memberships[(joined.room_id, FAR)] = "join"
    desk.clock.advance(299)
    await desk.settle()
    assert len(await desk.store.open_conversations()) == 2
    desk.clock.advance(2)
    await desk.settle()
    [left] = await desk.store.open_conversations()
    assert left.id == joined.id
    ended = await desk.conv(absent.id)
    assert ended.status is ConversationStatus.ENDED and ended.ended_by is Sender.VISITOR
