"""One parser for Switchboard's database URLs, shared by the migrations and the runtime pool.

Switchboard's configuration takes SQLAlchemy-style URLs:

* ``sqlite:///relative/path.db`` (three slashes, or ``sqlite:relative/path.db``): relative to
  the folder of the config file, never to the working directory (``switchboard run`` may be
  started from anywhere); ``sqlite:////abs/path.db`` (four slashes): an absolute path.
  :func:`resolve_sqlite_url` turns the config's URL into the absolute form the runtime uses;
* ``postgres://user:password@host:port/db`` or ``postgresql://…``, optionally with
  ``?search_path=<schema>[,<schema>…]``.

mautrix hands the PostgreSQL URL to asyncpg, and SQLAlchemy (for alembic) needs its own
``dialect+driver`` URL, so the schema is lifted out of the query string and passed to both as
the asyncpg ``server_settings={"search_path": …}`` of every connection. The first schema of the
search path is where our tables and alembic's version table live.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from sqlalchemy.engine import URL as SqlAlchemyUrl
from yarl import URL

SQLITE_SCHEMES = frozenset({"sqlite", "sqlite3"})
POSTGRES_SCHEMES = frozenset({"postgres", "postgresql"})

#: Applied to every SQLite connection the runtime opens: concurrent readers while one process
#: writes (WAL), waiting instead of failing when the file is locked, and enforced foreign keys.
SQLITE_INIT_COMMANDS: tuple[str, ...] = (
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA foreign_keys = ON",
)


@dataclass(frozen=True)
class DatabaseUrl:
    """A parsed Switchboard database URL; build it with :func:`parse_database_url`.

    Attributes:
        dialect: ``"sqlite"`` or ``"postgres"``.
        mautrix_url: What to give ``mautrix.util.async_db.Database.create`` (no search_path).
        sqlalchemy_url: The ``sqlite+aiosqlite`` / ``postgresql+asyncpg`` URL for alembic.
        search_path: The PostgreSQL ``search_path`` server setting, if one was given.
        sqlite_path: The database file, for SQLite.
    """

    dialect: Literal["sqlite", "postgres"]
    mautrix_url: str = field(repr=False)  # may carry a password
    sqlalchemy_url: SqlAlchemyUrl = field(repr=False)
    search_path: str | None = None
    sqlite_path: str | None = None

    @property
    def schema(self) -> str | None:
        """The schema new tables go into (the first of the search path), or None for default."""
        if not self.search_path:
            return None
        first = self.search_path.split(",", 1)[0].strip()
        return first.strip('"') or None

    @property
    def application_name(self) -> str:
        """How Switchboard's connections are named in ``pg_stat_activity`` (with the schema,
        where several desks share a database)."""
        return f"switchboard:{self.schema}" if self.schema else "switchboard"

    @property
    def server_settings(self) -> dict[str, str]:
        """asyncpg ``server_settings`` for every PostgreSQL connection."""
        settings = {"application_name": self.application_name}
        if self.search_path:
            settings["search_path"] = self.search_path
        return settings

    def mautrix_db_args(self) -> dict[str, Any]:
        """``db_args`` for ``Database.create``."""
        if self.dialect == "sqlite":
            # One connection: SQLite has one writer anyway, and a second in-process connection
            # would only trade waiting on the pool for SQLITE_BUSY inside a transaction.
            return {"min_size": 1, "init_commands": list(SQLITE_INIT_COMMANDS)}
        # mautrix exits the whole process on an asyncpg internal error; we would rather fail
        # that one request (the homeserver and the visitor retry) and keep serving
        return {"meow_exit_on_ice": False, "server_settings": self.server_settings}

    def sqlalchemy_connect_args(self) -> dict[str, Any]:
        """``connect_args`` for ``create_async_engine``."""
        if self.dialect == "postgres":
            return {"server_settings": self.server_settings}
        return {}


@dataclass(frozen=True)
class ResolvedUrl:
    """A database URL with any SQLite path made absolute; ``note`` warns of an old form."""

    url: str
    note: str | None = None


def resolve_sqlite_url(url: str, base_dir: Path) -> ResolvedUrl:
    """Make the path of an SQLite URL absolute, relative paths taken from ``base_dir`` (the
    config file's folder); any other URL is returned as it is.

    ``sqlite:///name.db`` used to be documented as an absolute path (``/name.db``): when the
    file exists there and not under ``base_dir``, that file is kept, with a note saying how
    to write the URL, so an upgrade never opens a new, empty database instead.

    Raises:
        ValueError: an SQLite URL with a host (``sqlite://file.db``) or without a file.
    """
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() not in SQLITE_SCHEMES:
        return ResolvedUrl(url)
    rest, qmark, query = rest.partition("?")
    if rest.startswith("///"):
        path, relative = rest[3:], not rest[3:].startswith("/")
    elif rest.startswith("//"):
        raise ValueError(
            f"ambiguous SQLite URL {url!r}: write sqlite:///relative/path.db (relative to the "
            "config file) or sqlite:////absolute/path.db"
        )
    else:
        path, relative = rest, not rest.startswith("/")
    if not path or path == ":memory:":
        raise ValueError(f"SQLite URL {url!r} needs a database file")
    note = None
    if relative:
        absolute = os.path.abspath(base_dir / path)
        legacy = "/" + path
        if rest.startswith("///") and not os.path.exists(absolute) and os.path.exists(legacy):
            note = (
                f"database.url {url} is relative to the config file now ({absolute}), which "
                f"does not exist; using the existing {legacy}. Write sqlite:///{legacy} "
                "(four slashes) to say so."
            )
            absolute = legacy
    else:
        absolute = "/" + path.lstrip("/")
    return ResolvedUrl(f"{scheme}:///{quote(absolute, safe='/')}{qmark}{query}", note)


def parse_database_url(url: str) -> DatabaseUrl:
    """Parse a mautrix-style database URL.

    Raises:
        ValueError: for an unsupported scheme or an SQLite URL without a path.
    """
    parsed = URL(url)
    if parsed.scheme in SQLITE_SCHEMES:
        return _parse_sqlite(url, parsed)
    if parsed.scheme in POSTGRES_SCHEMES:
        return _parse_postgres(parsed)
    raise ValueError(
        f"unsupported database URL scheme {parsed.scheme!r}: "
        "use sqlite:///path/to/file.db or postgres://user@host/db"
    )


def _parse_sqlite(url: str, parsed: URL) -> DatabaseUrl:
    # mautrix opens exactly ``URL(url).path``; the migrations must open the same file.
    if parsed.host:
        raise ValueError(
            f"ambiguous SQLite URL {url!r}: write sqlite:///relative/path.db (relative to the "
            "config file) or sqlite:////absolute/path.db"
        )
    path = parsed.path
    if not path or path == "/" or path == ":memory:":
        raise ValueError(f"SQLite URL {url!r} needs a database file")
    if path.startswith("//"):  # sqlite:////abs/path.db
        path = "/" + path.lstrip("/")
    return DatabaseUrl(
        dialect="sqlite",
        mautrix_url=url,
        sqlalchemy_url=SqlAlchemyUrl.create("sqlite+aiosqlite", database=path),
        sqlite_path=path,
    )


def _parse_postgres(parsed: URL) -> DatabaseUrl:
    search_path = parsed.query.get("search_path") or None
    rest = [(k, v) for k, v in parsed.query.items() if k != "search_path"]
    mautrix = parsed.with_query(rest or None)
    database = parsed.path.lstrip("/") or None
    sa_query: dict[str, str | list[str]] = {}
    for key, value in rest:
        previous = sa_query.get(key)
        if previous is None:
            sa_query[key] = value
        elif isinstance(previous, list):
            previous.append(value)
        else:
            sa_query[key] = [previous, value]
    return DatabaseUrl(
        dialect="postgres",
        mautrix_url=str(mautrix),
        sqlalchemy_url=SqlAlchemyUrl.create(
            "postgresql+asyncpg",
            username=parsed.user,
            password=parsed.password,
            host=parsed.host,
            port=parsed.explicit_port,
            database=database,
            query=sa_query,
        ),
        search_path=search_path,
    )
