"""The alembic migrations go up, down and up again on SQLite and PostgreSQL; 0004 turns the
work in flight in the old columns into outbox rows, and back on the way down; 0005 keeps the
edits and removals of messages, and never the text of a removed one."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import asyncpg
import pytest

from appservice.db import SqlStore, close_database, open_database, parse_database_url
from appservice.db.migrate import current_revision, downgrade, upgrade
from bridge.events import (
    ConversationEnded,
    ConversationOpened,
    DomainEvent,
    InviteWithdrawn,
    OfferExpires,
    QueueChanged,
    VisitorEntered,
    VisitorSaid,
    decode,
)
from bridge.model import (
    AdvisorMxid,
    ConversationId,
    ConversationStatus,
    Message,
    MessageId,
    Sender,
)
from tests.pg import schema_tables

SWITCHBOARD_TABLES = {
    "visitors",
    "visitor_sessions",
    "conversations",
    "messages",
    "advisors",
    "settings",
    "as_transactions",
    "as_events",
    "outbox",
    "groups",
    "group_members",
    "call_signs",
    "call_sign_chats",
}
HEAD = "0007"


@pytest.fixture
def url(database_url: str) -> str:
    return database_url


async def tables(url: str) -> set[str]:
    db_url = parse_database_url(url)
    if db_url.sqlite_path is not None:
        with sqlite3.connect(db_url.sqlite_path) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {name for (name,) in rows}
    return await schema_tables(url)


async def fetch(url: str, sql: str) -> list[tuple]:
    """Run one statement on the database at ``url`` without migrating it; its rows."""
    db_url = parse_database_url(url)
    if db_url.sqlite_path is not None:
        with sqlite3.connect(db_url.sqlite_path) as conn:
            return conn.execute(sql).fetchall()
    conn = await asyncpg.connect(db_url.mautrix_url, server_settings=db_url.server_settings)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def test_0003_keeps_conversations_both_ways_and_lists_no_invites_for_old_ones(
    url: str,
) -> None:
    await upgrade(url, "0002")
    await fetch(url, "INSERT INTO visitors (id, name, created_at) VALUES ('v1', 'V', 1.5)")
    await fetch(
        url,
        "INSERT INTO conversations (id, visitor_id, topic, status, created_at, queued_at, "
        "room_id, advisor, invite_deadline) "
        "VALUES ('c1', 'v1', 't', 'inviting', 1.5, 1.5, '!r:hs', '@ann:hs', 61.5)",
    )
    await upgrade(url, "0003")
    assert await fetch(url, "SELECT id, invited FROM conversations") == [("c1", "[]")]
    await fetch(url, """UPDATE conversations SET invited = '["@ann:hs"]'""")
    await downgrade(url, "0002")
    assert await current_revision(url) == "0002"
    assert await fetch(url, "SELECT id, advisor FROM conversations") == [("c1", "@ann:hs")]
    await upgrade(url, "0003")
    assert await fetch(url, "SELECT invited FROM conversations") == [("[]",)]


async def columns(url: str, table: str) -> set[str]:
    db_url = parse_database_url(url)
    if db_url.sqlite_path is not None:
        return {row[1] for row in await fetch(url, f"PRAGMA table_info({table})")}
    rows = await fetch(
        url,
        "SELECT column_name FROM information_schema.columns "
        f"WHERE table_schema = current_schema() AND table_name = '{table}'",
    )
    return {name for (name,) in rows}


# In-flight work at revision 0003, as the old columns held it, and what 0004 makes of it.

C = ConversationId
ANN, BOB, CY, DAN = (AdvisorMxid(f"@{n}:hs") for n in ("ann", "bob", "cy", "dan"))
OFFER_DEADLINE = 1064.5
LAST_CREATED = 1009.0  # the newest conversation's created_at (the upgrade runs later)


def _conversation(
    cid: str,
    status: str,
    created_at: float,
    *,
    room: bool = True,
    advisor: str | None = None,
    deadline: float | None = None,
    announced: bool = True,
    room_closed: bool = False,
    invited: str = "[]",
) -> str:
    def sql(value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "TRUE" if value else "FALSE"
        return f"'{value}'" if isinstance(value, str) else repr(value)

    ended_at = created_at + 1 if status == "ended" else None
    values = [
        cid,
        f"v{cid[1:]}",
        "general",
        status,
        created_at,
        created_at,
        f"@sb_{cid}:hs" if room else None,
        f"!{cid}:hs" if room else None,
        advisor,
        deadline,
        ended_at,
        "visitor" if ended_at else None,
        announced,
        room_closed,
        invited,
    ]
    return (
        "INSERT INTO conversations (id, visitor_id, topic, status, created_at, queued_at, "
        "puppet, room_id, advisor, invite_deadline, ended_at, ended_by, announced, "
        f"room_closed, invited) VALUES ({', '.join(sql(v) for v in values)})"
    )


def _message(mid: str, cid: str, seq: int, delivered: bool, sender: str = "visitor") -> str:
    return (
        "INSERT INTO messages (id, conversation_id, seq, sender, author, body, ts, delivered) "
        f"VALUES ('{mid}', '{cid}', {seq}, '{sender}', 'A', 'text', {1000 + seq}, "
        f"{'TRUE' if delivered else 'FALSE'})"
    )


IN_FLIGHT_AT_0003 = [
    *(
        f"INSERT INTO visitors (id, name, created_at) VALUES ('v{n}', 'V{n}', 1000)"
        for n in range(10)
    ),
    # finished: the visitor's earlier chat, closed and delivered
    _conversation("c0", "ended", 1000.0, room_closed=True),
    _message("m0", "c0", 1, delivered=True),
    # open, no room yet: the room is made, the form posted, the first message sent
    _conversation("c1", "waiting", 1001.0, room=False, announced=False),
    _message("m1-form", "c1", 1, delivered=False),
    # a room, but the form not posted, and two messages on their way (ids not in seq order)
    _conversation("c2", "waiting", 1002.0, announced=False),
    _message("m2-y", "c2", 1, delivered=True),
    _message("m2-x", "c2", 2, delivered=False),
    _message("m2-w", "c2", 3, delivered=False),
    # ended, its room not closed yet, a last message still to send first
    _conversation("c3", "ended", 1003.0),
    _message("m3", "c3", 1, delivered=False),
    # offered to ann now; bob's earlier offer not withdrawn yet
    _conversation(
        "c4",
        "inviting",
        1004.0,
        advisor=ANN,
        deadline=OFFER_DEADLINE,
        invited=f'["{BOB}", "{ANN}"]',
    ),
    # finished: ended and closed; active with its advisor; waiting with its room ready; ended
    # before its room was made
    _conversation("c5", "ended", 1005.0, advisor=CY, room_closed=True),
    _message("m5-v", "c5", 1, delivered=True),
    _message("m5-a", "c5", 2, delivered=True, sender="advisor"),
    _conversation("c6", "active", 1006.0, advisor=CY),
    _message("m6", "c6", 1, delivered=True),
    _conversation("c7", "waiting", 1007.0),
    _conversation("c8", "ended", 1008.0, room=False, announced=False),
    # ended and closed, but dan's invite still to withdraw
    _conversation("c9", "ended", 1009.0, room_closed=True, invited=f'["{DAN}"]'),
]
EXPECTED_OUTBOX = [
    ConversationOpened(C("c1")),
    VisitorEntered(C("c1")),
    VisitorSaid(C("c1"), MessageId("m1-form")),
    VisitorEntered(C("c2")),
    VisitorSaid(C("c2"), MessageId("m2-x")),
    VisitorSaid(C("c2"), MessageId("m2-w")),
    VisitorSaid(C("c3"), MessageId("m3")),
    ConversationEnded(C("c3")),
    InviteWithdrawn(C("c4"), BOB, "(any reason)"),
    OfferExpires(C("c4"), ANN, 0, OFFER_DEADLINE),
    InviteWithdrawn(C("c9"), DAN, "(any reason)"),
    QueueChanged(),
]


async def at_0003_with_work_in_flight(url: str) -> None:
    await upgrade(url, "0003")
    for statement in IN_FLIGHT_AT_0003:
        await fetch(url, statement)


def same_event(found: DomainEvent, expected: DomainEvent) -> bool:
    if isinstance(found, InviteWithdrawn) and isinstance(expected, InviteWithdrawn):
        return bool(found.reason) and (found.conversation_id, found.advisor) == (
            expected.conversation_id,
            expected.advisor,
        )
    return found == expected


async def test_0004_turns_work_in_flight_into_outbox_rows_in_order(url: str) -> None:
    await at_0003_with_work_in_flight(url)
    messages_before = await fetch(url, "SELECT id, seq, body FROM messages ORDER BY id")

    await upgrade(url)

    rows = await fetch(
        url,
        "SELECT key, kind, payload, state, due_at, priority, tries, failures, claimed_by, "
        "created_at FROM outbox ORDER BY id",
    )
    found = [decode(kind, payload) for _, kind, payload, *_ in rows]
    assert len(found) == len(EXPECTED_OUTBOX), found
    for event, expected in zip(found, EXPECTED_OUTBOX, strict=True):
        assert same_event(event, expected), (event, expected)
    for (
        key,
        kind,
        _,
        state,
        due_at,
        priority,
        tries,
        failures,
        claimed_by,
        created,
    ), event in zip(rows, found, strict=True):
        # each row is what UnitOfWork would have stored for its event
        assert (key, kind, priority) == (event.key, type(event).__name__, type(event).priority)
        assert (state, tries, failures, claimed_by) == ("pending", 0, 0, None)
        assert created > LAST_CREATED  # the time of the upgrade
        if event.due_at is None:
            assert due_at <= LAST_CREATED  # at once
        else:
            assert due_at == event.due_at

    assert "version" in await columns(url, "conversations")
    assert not {"announced", "room_closed", "invited"} & await columns(url, "conversations")
    assert "delivered" not in await columns(url, "messages")
    assert await fetch(url, "SELECT DISTINCT version FROM conversations") == [(0,)]
    assert await fetch(url, "SELECT id, seq, body FROM messages ORDER BY id") == messages_before

    # the runtime reads the upgraded database: the head of each key, the invite path first
    db = await open_database(url)
    try:
        store = SqlStore(db)
        offered = await store.get_conversation(C("c4"))
        assert offered is not None and offered.version == 0
        assert (offered.status, offered.advisor) == (ConversationStatus.INVITING, ANN)
        claimed = await store.outbox.claim("w", LAST_CREATED, LAST_CREATED + 15, 100)
        assert [(r.key, r.kind) for r in claimed] == [
            ("c:c1", "ConversationOpened"),
            ("queue", "QueueChanged"),
            ("c:c2", "VisitorEntered"),
            ("c:c3", "VisitorSaid"),
            (f"c:c4:{BOB}", "InviteWithdrawn"),
            (f"c:c9:{DAN}", "InviteWithdrawn"),
        ]  # the offer's timer is not due before its deadline
    finally:
        await close_database(db)


async def downgraded_after_some_work(url: str) -> None:
    """Up to 0004, some rows run by the new code and one new row raised, down to 0003."""
    await at_0003_with_work_in_flight(url)
    db = await open_database(url)
    try:
        store = SqlStore(db)
        await db.execute(
            "UPDATE outbox SET state = 'done' WHERE key = 'c:c3' AND kind = $1", "VisitorSaid"
        )
        await db.execute("UPDATE outbox SET state = 'parked' WHERE kind = $1", "ConversationEnded")
        sent, _ = await store.add_message(
            Message(MessageId("m6-new"), C("c6"), 0, Sender.VISITOR, "V6", "more", 2000.0)
        )
        eve = AdvisorMxid("@eve:hs")
        await store.outbox.add(
            [VisitorSaid(C("c6"), sent.id), InviteWithdrawn(C("c6"), eve, "x")], 2000.0
        )
    finally:
        await close_database(db)
    await downgrade(url, "0003")
    assert await current_revision(url) == "0003"


async def conversation_columns(url: str) -> dict[str, tuple[bool, bool, str]]:
    rows = await fetch(url, "SELECT id, announced, room_closed, invited FROM conversations")
    return {cid: (bool(a), bool(r), invited) for cid, a, r, invited in rows}


async def test_downgrading_0004_puts_what_is_still_pending_back_into_the_columns(
    url: str,
) -> None:
    await downgraded_after_some_work(url)

    assert "outbox" not in await tables(url)
    undelivered = await fetch(url, "SELECT id FROM messages WHERE NOT delivered ORDER BY id")
    # m3's row ran after the upgrade; m6-new was raised by the new code
    assert undelivered == [("m1-form",), ("m2-w",), ("m2-x",), ("m6-new",)]
    found = await conversation_columns(url)
    assert found["c1"][0] is False  # its room and form are still to come
    assert found["c3"][1] is False  # the parked end is still to do
    assert found["c4"][2] == f'["{BOB}"]'  # 0003's code adds the offer's advisor on withdrawal
    assert found["c6"][2] == '["@eve:hs"]'
    assert found["c9"][2] == f'["{DAN}"]'
    for finished in ("c0", "c5", "c9"):
        assert found[finished][:2] == (True, True), finished
    for cid in ("c0", "c1", "c2", "c3", "c5", "c7", "c8"):
        assert found[cid][2] == "[]", cid


async def test_downgrading_0004_keeps_a_form_not_posted_yet_unannounced(url: str) -> None:
    await downgraded_after_some_work(url)

    announced = {cid: a for cid, (a, _, _) in (await conversation_columns(url)).items()}
    assert announced["c2"] is False  # its VisitorEntered row was pending


async def test_downgrading_0004_leaves_the_rooms_of_open_conversations_to_close(url: str) -> None:
    await downgraded_after_some_work(url)

    closed = {cid: r for cid, (_, r, _) in (await conversation_columns(url)).items()}
    assert [cid for cid in ("c1", "c2", "c4", "c6", "c7") if closed[cid]] == []


async def test_0005_keeps_messages_and_a_removed_one_keeps_no_text_either_way(url: str) -> None:
    await upgrade(url, "0004")
    await fetch(url, "INSERT INTO visitors (id, name, created_at) VALUES ('v1', 'V', 1.5)")
    await fetch(
        url,
        "INSERT INTO conversations (id, visitor_id, topic, status, created_at, queued_at, "
        "room_id, advisor) VALUES ('c1', 'v1', 't', 'active', 1.5, 1.5, '!r:hs', '@ann:hs')",
    )
    for seq, body in ((1, "hello"), (2, "typo"), (3, "my card is 4242")):
        await fetch(
            url,
            "INSERT INTO messages (id, conversation_id, seq, sender, author, body, ts) "
            f"VALUES ('m{seq}', 'c1', {seq}, 'advisor', 'Ann', '{body}', {1000 + seq})",
        )
    await upgrade(url, "0005")
    assert await fetch(
        url,
        "SELECT id, body, author_id, reply_to, edited_at, removed_at FROM messages "
        "ORDER BY seq",
    ) == [
        (f"m{n}", b, None, None, None, None)
        for n, b in ((1, "hello"), (2, "typo"), (3, "my card is 4242"))
    ]
    await fetch(url, "UPDATE messages SET body = 'fixed', edited_at = 1010.5 WHERE id = 'm2'")
    await fetch(url, "UPDATE messages SET body = '', removed_at = 1011.5 WHERE id = 'm3'")
    with pytest.raises(Exception, match="(?i)check"):  # a removed message keeps no text
        await fetch(url, "UPDATE messages SET body = 'back' WHERE id = 'm3'")

    await downgrade(url, "0004")
    assert "removed_at" not in await columns(url, "messages")
    assert await fetch(url, "SELECT id, body FROM messages ORDER BY seq") == [
        ("m1", "hello"),
        ("m2", "fixed"),
        ("m3", "(message removed)"),
    ]
    await upgrade(url, "0005")
    assert await fetch(url, "SELECT COUNT(*) FROM messages WHERE removed_at IS NOT NULL") == [(0,)]


async def test_0006_makes_the_root_group_with_every_advisor_as_a_primary_member(
    url: str,
) -> None:
    await upgrade(url, "0005")
    await fetch(url, "INSERT INTO advisors (mxid, presence) VALUES ('@ann:hs', 'online')")
    await fetch(url, "INSERT INTO advisors (mxid, presence) VALUES ('@bob:hs', 'online')")
    await upgrade(url, "0006")
    assert await fetch(url, "SELECT id, slug, name, parent_id FROM groups") == [
        ("root", "desk", "All advisors", None)
    ]
    assert await fetch(
        url, "SELECT group_id, advisor, role FROM group_members ORDER BY advisor"
    ) == [("root", "@ann:hs", "primary"), ("root", "@bob:hs", "primary")]
    await downgrade(url, "0005")
    assert not {"groups", "group_members"} & await tables(url)
    assert await fetch(url, "SELECT mxid FROM advisors ORDER BY mxid") == [
        ("@ann:hs",),
        ("@bob:hs",),
    ]
    await upgrade(url, "0006")
    assert len(await fetch(url, "SELECT * FROM group_members")) == 2


async def test_migrations_go_up_down_and_up_again(url: str) -> None:
    await upgrade(url)
    assert await tables(url) == SWITCHBOARD_TABLES | {"alembic_version"}
    assert await current_revision(url) == HEAD

    await downgrade(url)
    assert await tables(url) == {"alembic_version"}  # alembic keeps its (empty) table
    assert await current_revision(url) is None

    await upgrade(url)
    assert await tables(url) >= SWITCHBOARD_TABLES
    await upgrade(url)  # already at head: nothing to do
    assert await current_revision(url) == HEAD


async def test_open_database_migrates_and_the_schema_refuses_a_second_open_conversation(
    url: str,
) -> None:
    db = await open_database(url)
    try:
        assert await current_revision(url) == HEAD
        await db.execute(
            "INSERT INTO visitors (id, name, email, created_at) VALUES ('v1', 'V', NULL, 1.5)"
        )
        insert = (
            "INSERT INTO conversations (id, visitor_id, topic, status, created_at, queued_at) "
            "VALUES ($1, 'v1', 't', $2, 1.5, 1.5)"
        )
        await db.execute(insert, "c1", "ended")
        await db.execute(insert, "c2", "waiting")
        # The partial unique index, not just the store's query, keeps one open per visitor.
        with pytest.raises(Exception, match="(?i)unique"):
            await db.execute(insert, "c3", "active")
        assert await db.fetchval("SELECT COUNT(*) FROM conversations") == 2
        db_url = parse_database_url(url)
        if db_url.dialect == "postgres":  # the runtime pool lives in the migrated schema too
            assert await db.fetchval("SELECT current_schema()") == db_url.schema
    finally:
        await close_database(db)


async def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    db = await open_database(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        assert await db.fetchval("PRAGMA journal_mode") == "wal"
        assert await db.fetchval("PRAGMA busy_timeout") >= 1000
        assert await db.fetchval("PRAGMA foreign_keys") == 1
    finally:
        await close_database(db)


async def test_relative_sqlite_url_is_the_same_file_for_migrations_and_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    db = await open_database("sqlite:relative.db")
    try:
        await db.execute("INSERT INTO settings (key, value) VALUES ('k', 'v')")
    finally:
        await close_database(db)
    with sqlite3.connect(tmp_path / "relative.db") as conn:
        assert conn.execute("SELECT value FROM settings").fetchall() == [("v",)]
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [(HEAD,)]


def test_postgres_url_gives_search_path_to_both_drivers_and_keeps_the_rest() -> None:
    db_url = parse_database_url(
        "postgres://sb:p%40ss@db.example:5433/desk?search_path=tenant_a&sslmode=disable"
    )
    assert db_url.schema == "tenant_a"
    assert db_url.mautrix_url == "postgres://sb:p%40ss@db.example:5433/desk?sslmode=disable"
    # each connection is named in pg_stat_activity, with its schema
    settings = {"search_path": "tenant_a", "application_name": "switchboard:tenant_a"}
    assert db_url.mautrix_db_args() == {"meow_exit_on_ice": False, "server_settings": settings}
    assert db_url.sqlalchemy_connect_args() == {"server_settings": settings}
    sa_url = db_url.sqlalchemy_url
    assert (sa_url.drivername, sa_url.username, sa_url.password) == (
        "postgresql+asyncpg",
        "sb",
        "p@ss",
    )
    assert (sa_url.host, sa_url.port, sa_url.database) == ("db.example", 5433, "desk")
    assert dict(sa_url.query) == {"sslmode": "disable"}
    assert "p@ss" not in repr(db_url) and "p%40ss" not in repr(db_url)


@pytest.mark.parametrize(
    "bad", ["mysql://x/y", "sqlite://host/x.db", "sqlite:", "sqlite::memory:"]
)
def test_unusable_database_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_database_url(bad)


async def test_0007_adds_call_signs_and_keeps_every_advisor(url: str) -> None:
    """Up: the call-sign tables and columns arrive (rows from before read NULL in them); the
    schema refuses a call sign that reaches both an advisor and a group. Down: they go."""
    await upgrade(url, "0006")
    await fetch(url, "INSERT INTO advisors (mxid, presence) VALUES ('@ann:hs', 'online')")
    await upgrade(url, "0007")
    assert await fetch(url, "SELECT mxid, last_seen_at FROM advisors") == [("@ann:hs", None)]
    assert {"call_sign", "asker"} <= await columns(url, "conversations")
    await fetch(
        url,
        "INSERT INTO call_signs (sign, advisor, keywords) VALUES ('billing-es', '@ann:hs', 'fá')",
    )
    with pytest.raises(Exception, match="(?i)check"):
        await fetch(
            url,
            "INSERT INTO call_signs (sign, advisor, group_id) VALUES ('both', '@ann:hs', 'root')",
        )
    await downgrade(url, "0006")
    assert not {"call_signs", "call_sign_chats"} & await tables(url)
    assert "asker" not in await columns(url, "conversations")
    await upgrade(url, "0007")
