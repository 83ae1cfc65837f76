"""Switchboard's persistence: alembic-migrated SQLite or PostgreSQL behind mautrix's async_db.

``open_database(url)`` migrates the database to the newest revision, then returns a started
mautrix ``Database``; build :class:`SqlStore` and :class:`AppserviceLog` on it, and call
``close_database`` at shutdown.
"""

from __future__ import annotations

import logging
from typing import Any

from mautrix.util.async_db import Database, UpgradeTable
from yarl import URL

from . import migrate
from .resilient import ResilientPostgres
from .store import SqlStore
from .txnlog import AppserviceLog
from .url import DatabaseUrl, parse_database_url

__all__ = [
    "AppserviceLog",
    "DatabaseUrl",
    "SqlStore",
    "close_database",
    "create_database",
    "open_database",
    "parse_database_url",
    "start_database",
]

log = logging.getLogger("switchboard.db")


def create_database(
    url: str,
    *,
    db_args: dict[str, Any] | None = None,
    logger: logging.Logger | None = None,
) -> Database:
    """The database at ``url``, not yet opened: :func:`start_database` migrates and opens it.

    The stores can be built on it at once (start-up listens before the database answers)."""
    db_url = parse_database_url(url)
    args = {**db_url.mautrix_db_args(), **(db_args or {})}
    if db_url.dialect == "postgres":
        # what Database.create would build, with asyncpg's corrupted connections handled
        return ResilientPostgres(
            URL(db_url.mautrix_url),
            db_args=args,
            upgrade_table=UpgradeTable(),
            log=logger,
            owner_name=None,
            ignore_foreign_tables=True,
        )
    return Database.create(db_url.mautrix_url, db_args=args, log=logger)


async def start_database(db: Database, url: str) -> None:
    """Migrate the database at ``url`` to the newest revision, then open ``db`` on it."""
    log.debug("Migrating the %s database to the newest revision", parse_database_url(url).dialect)
    await migrate.upgrade(url)
    await db.start()


async def open_database(
    url: str,
    *,
    db_args: dict[str, Any] | None = None,
    logger: logging.Logger | None = None,
) -> Database:
    """Migrate the database at ``url`` to the newest revision and return it started.

    Args:
        url: ``sqlite:///abs/path.db``, ``sqlite:relative.db``, or
            ``postgres[ql]://user@host:port/db[?search_path=schema]``.
        db_args: Overrides of the pool options mautrix passes on (asyncpg ``min_size``,
            ``max_size``…), like mautrix bridges' ``database_opts``.
        logger: Where mautrix logs queries (``mau.db`` by default).

    SQLite connections run in WAL mode with a busy timeout and foreign keys on; a PostgreSQL
    ``search_path`` is set on every pooled connection.
    """
    db = create_database(url, db_args=db_args, logger=logger)
    await start_database(db, url)
    return db


async def close_database(db: Database) -> None:
    """Close every connection of a database returned by :func:`open_database`."""
    await db.stop()
