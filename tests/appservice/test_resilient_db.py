"""asyncpg can hand out a connection left corrupted by a backend that died mid-transaction
(``InternalClientError``, MagicStack/asyncpg#1069): the desk's PostgreSQL database terminates
such a connection, and tries a statement outside a transaction once more on another one."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from mautrix.util.async_db.asyncpg import PostgresDatabase

from appservice.db import close_database, create_database, start_database
from appservice.db.resilient import ResilientPostgres
from tests.pg import fresh_schema_url

BROKEN = asyncpg.InternalClientError(
    "cannot switch to state 12; another operation (2) is in progress"
)


@pytest.fixture
async def db() -> Any:
    async with fresh_schema_url() as url:
        database = create_database(url)
        assert isinstance(database, ResilientPostgres)
        await start_database(database, url)
        yield database
        await close_database(database)


async def test_a_corrupted_connection_is_terminated_not_pooled_again(db: Any) -> None:
    with pytest.raises(asyncpg.InternalClientError):
        async with db.acquire_direct() as conn:
            raw = conn.wrapped._con  # the pool proxy forgets it once released
            raise BROKEN
    assert raw.is_closed()
    assert await db.fetchval("SELECT 1") == 1  # the pool made another


async def test_a_statement_outside_a_transaction_is_tried_once_more(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"n": 0}
    real = PostgresDatabase.fetchval

    async def flaky(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise BROKEN
        return await real(self, query, *args, **kwargs)

    monkeypatch.setattr(PostgresDatabase, "fetchval", flaky)
    assert await db.fetchval("SELECT 41 + 1") == 42
    assert calls["n"] == 2


async def test_inside_a_transaction_the_error_fails_the_transaction(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        raise BROKEN

    monkeypatch.setattr(PostgresDatabase, "fetchval", broken)
    with pytest.raises(asyncpg.InternalClientError):
        async with db.acquire() as conn, conn.transaction():
            await db.fetchval("SELECT 1")
