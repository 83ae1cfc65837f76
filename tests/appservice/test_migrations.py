"""The alembic migrations go up, down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from appservice.db import close_database, open_database, parse_database_url
from appservice.db.migrate import current_revision, downgrade, upgrade
from tests.pg import fresh_schema_url, schema_tables

SWITCHBOARD_TABLES = {
    "visitors",
    "visitor_sessions",
    "conversations",
    "messages",
    "advisors",
    "settings",
    "as_transactions",
    "as_events",
}


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
    else:
        async with fresh_schema_url() as pg_url:
            yield pg_url


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
    await upgrade(url)
    assert await fetch(url, "SELECT id, invited FROM conversations") == [("c1", "[]")]
    await fetch(url, """UPDATE conversations SET invited = '["@ann:hs"]'""")
    await downgrade(url, "0002")
    assert await current_revision(url) == "0002"
    assert await fetch(url, "SELECT id, advisor FROM conversations") == [("c1", "@ann:hs")]
    await upgrade(url)
    assert await fetch(url, "SELECT invited FROM conversations") == [("[]",)]


async def test_migrations_go_up_down_and_up_again(url: str) -> None:
    await upgrade(url)
    assert await tables(url) == SWITCHBOARD_TABLES | {"alembic_version"}
    assert await current_revision(url) == "0003"

    await downgrade(url)
    assert await tables(url) == {"alembic_version"}  # alembic keeps its (empty) table
    assert await current_revision(url) is None

    await upgrade(url)
    assert await tables(url) >= SWITCHBOARD_TABLES
    await upgrade(url)  # already at head: nothing to do
    assert await current_revision(url) == "0003"


async def test_open_database_migrates_and_the_schema_refuses_a_second_open_conversation(
    url: str,
) -> None:
    db = await open_database(url)
    try:
        assert await current_revision(url) == "0003"
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
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("0003",)]


def test_postgres_url_gives_search_path_to_both_drivers_and_keeps_the_rest() -> None:
    db_url = parse_database_url(
        "postgres://sb:p%40ss@db.example:5433/desk?search_path=tenant_a&sslmode=disable"
    )
    assert db_url.schema == "tenant_a"
    assert db_url.mautrix_url == "postgres://sb:p%40ss@db.example:5433/desk?sslmode=disable"
    assert db_url.mautrix_db_args() == {
        "meow_exit_on_ice": False,
        "server_settings": {"search_path": "tenant_a"},
    }
    assert db_url.sqlalchemy_connect_args() == {"server_settings": {"search_path": "tenant_a"}}
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
