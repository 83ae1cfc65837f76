"""What an admin does to the database between runs: see or move its schema version
(``switchboard migrate``), and take a consistent copy of an SQLite database while Switchboard
runs (``switchboard backup``; PostgreSQL has ``pg_dump``)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from alembic.script import ScriptDirectory

from .config import Config
from .db.lockfile import SingleProcessLock
from .db.migrate import alembic_config, current_revision, downgrade, upgrade
from .db.url import parse_database_url


class MaintenanceError(Exception):
    """The command cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class SchemaState:
    current: str | None  # None: never migrated
    head: str  # what this version of Switchboard migrates to
    known: tuple[str, ...]  # every revision this version knows, oldest first


def schema_state(current: str | None) -> SchemaState:
    script = ScriptDirectory.from_config(alembic_config())
    known = tuple(reversed([r.revision for r in script.walk_revisions()]))
    head = script.get_current_head()
    assert head is not None
    return SchemaState(current, head, known)


async def show_schema(config: Config) -> SchemaState:
    return schema_state(await current_revision(config.database_url))


async def migrate(config: Config, to: str) -> tuple[SchemaState, SchemaState]:
    """Move the database's schema to revision ``to`` ("head": the newest this version knows),
    up or down. Refused while Switchboard runs on an SQLite database (its lock is held); on
    PostgreSQL stop every process first (the README says so)."""
    before = await show_schema(config)
    target = before.head if to == "head" else to
    if target not in before.known:
        raise MaintenanceError(
            f"unknown revision {to!r}; this version knows {', '.join(before.known)}"
        )
    if before.current is not None and before.current not in before.known:
        raise MaintenanceError(
            f"the database is at {before.current}, which a newer Switchboard wrote: "
            "run `switchboard migrate` of that version to go back"
        )
    with _stopped(config):
        if before.current is None or before.known.index(target) > before.known.index(
            before.current
        ):
            await upgrade(config.database_url, target)
        elif target != before.current:
            await downgrade(config.database_url, target)
    return before, await show_schema(config)


def backup(config: Config, destination: Path) -> int:
    """Copy the SQLite database to ``destination`` with SQLite's online backup (consistent
    while Switchboard writes to it); the number of pages copied."""
    db_url = parse_database_url(config.database_url)
    if db_url.sqlite_path is None:
        raise MaintenanceError(
            "the database is PostgreSQL: back it up with pg_dump (see the README)"
        )
    source_path = Path(db_url.sqlite_path)
    if not source_path.exists():
        raise MaintenanceError(f"no database at {source_path}: nothing to back up")
    if destination.exists():
        raise MaintenanceError(f"{destination} exists: give a new file name")
    source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
    target = sqlite3.connect(destination)
    pages = 0

    def progress(status: int, remaining: int, total: int) -> None:
        nonlocal pages
        pages = total

    try:
        with target:
            source.backup(target, pages=1024, progress=progress)
    finally:
        target.close()
        source.close()
    destination.chmod(0o600)  # visitors' names and messages
    return pages


class _stopped:
    """Holds the SQLite database's lock while the schema moves (no Switchboard may run)."""

    def __init__(self, config: Config) -> None:
        path = parse_database_url(config.database_url).sqlite_path
        self._lock = SingleProcessLock(path) if path is not None else None

    def __enter__(self) -> None:
        if self._lock is not None:
            self._lock.acquire()  # DatabaseInUse names the process that holds it

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.release()
