"""mautrix's PostgreSQL database, with a known asyncpg flaw worked around.

A connection whose backend dies in the middle of a transaction (PostgreSQL restarted, an
admin's ``pg_terminate_backend``, a failover) can go back to asyncpg's pool corrupted: its
next user gets ``InternalClientError: cannot switch to state …; another operation is in
progress`` (MagicStack/asyncpg#1069; SQLAlchemy treats it as a disconnect since 2.0.x). Such
a connection is terminated here, so that the pool replaces it, and a statement outside a
transaction is tried once more on another connection: the error comes before anything is sent,
so the statement never reached the server. Inside a transaction the error goes up, and the
transaction fails as a whole (the caller's retry is the homeserver's, or the outbox's).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
from mautrix.util.async_db.asyncpg import PostgresDatabase
from mautrix.util.async_db.connection import LoggingConnection
from mautrix.util.async_db.database import conn_var

log = logging.getLogger("switchboard.db")

T = TypeVar("T")


class ResilientPostgres(PostgresDatabase):
    @asynccontextmanager
    async def acquire_direct(self) -> AsyncIterator[LoggingConnection]:  # type: ignore[override]
        async with self.pool.acquire() as conn:
            try:
                yield LoggingConnection(
                    self.scheme, conn, self.log, handle_exception=self._handle_exception
                )
            except asyncpg.InternalClientError:
                conn.terminate()  # corrupted: the pool makes a new one in its place
                raise

    async def _once_more(self, statement: Callable[[], Awaitable[T]]) -> T:
        try:
            return await statement()
        except asyncpg.InternalClientError as e:
            if conn_var.get(None) is not None:
                raise  # inside a transaction: it fails whole
            log.warning("a pooled PostgreSQL connection was broken (%s); trying another", e)
            return await statement()

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._once_more(
            lambda: super(ResilientPostgres, self).execute(query, *args, timeout=timeout)
        )

    async def executemany(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._once_more(
            lambda: super(ResilientPostgres, self).executemany(query, *args, timeout=timeout)
        )

    async def fetch(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._once_more(
            lambda: super(ResilientPostgres, self).fetch(query, *args, timeout=timeout)
        )

    async def fetchval(
        self, query: str, *args: Any, column: int = 0, timeout: float | None = None
    ) -> Any:
        return await self._once_more(
            lambda: super(ResilientPostgres, self).fetchval(
                query, *args, column=column, timeout=timeout
            )
        )

    async def fetchrow(self, query: str, *args: Any, timeout: float | None = None) -> Any:
        return await self._once_more(
            lambda: super(ResilientPostgres, self).fetchrow(query, *args, timeout=timeout)
        )
