"""Real PostgreSQL for tests: a fresh schema per test, dropped afterwards.

    async with fresh_schema_url() as url:   # postgresql://…?search_path=sb_test_<hex>
        db = await open_database(url)

The server is ``$SWITCHBOARD_TEST_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432/
postgres``). If it cannot be reached the test is skipped, unless ``CI=true``: then it fails, so
CI never goes green by skipping the PostgreSQL half of the suite.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest
from yarl import URL

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 3.0

_unreachable: str | None = None  # remembered so later tests skip without waiting again


def server_url() -> str:
    """The PostgreSQL server the tests use (no search_path)."""
    return os.environ.get("SWITCHBOARD_TEST_POSTGRES", DEFAULT_SERVER)


def _give_up(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


async def _admin_connection() -> asyncpg.Connection:
    global _unreachable
    if _unreachable is not None:
        _give_up(_unreachable)
    try:
        return await asyncpg.connect(server_url(), timeout=CONNECT_TIMEOUT)
    except (TimeoutError, OSError, asyncpg.PostgresError) as e:
        _unreachable = f"{type(e).__name__}: {e}"
        _give_up(_unreachable)
        raise  # unreachable: _give_up raises


@asynccontextmanager
async def fresh_schema_url(prefix: str = "sb_test_") -> AsyncIterator[str]:
    """Create an empty schema, yield a Switchboard URL whose search_path is it, drop it after.

    Skips the calling test if PostgreSQL is unreachable (fails instead when ``CI=true``).
    Close every pool on the schema before the block ends, or the DROP waits for it.
    """
    schema = prefix + secrets.token_hex(6)
    # short-lived admin connections: a fault test may terminate every backend in between
    admin = await _admin_connection()
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
    finally:
        await admin.close()
    try:
        yield str(URL(server_url()).update_query(search_path=schema))
    finally:
        admin = await _admin_connection()
        try:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            await admin.close()


async def schema_tables(url: str) -> set[str]:
    """The tables in the schema of a URL made by :func:`fresh_schema_url`."""
    schema = URL(url).query["search_path"]
    conn = await asyncpg.connect(server_url(), timeout=CONNECT_TIMEOUT)
    try:
        rows = await conn.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema
        )
    finally:
        await conn.close()
    return {row["table_name"] for row in rows}


@asynccontextmanager
async def database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh database of ``kind`` ("sqlite": a file in ``tmp_path``; "postgres": a fresh
    schema, dropped after): its Switchboard URL."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / 'switchboard.db'}"
    else:
        async with fresh_schema_url() as url:
            yield url
