"""Run Switchboard's alembic migrations programmatically (there is no alembic.ini).

``upgrade(url)`` runs at start-up (see :func:`appservice.db.open_database`); ``downgrade`` is
for operators and the migration tests. Both take Switchboard's own database URL (see
:mod:`appservice.db.url`) and drive alembic through an async SQLAlchemy engine.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from .url import DatabaseUrl, parse_database_url


def _script_location() -> Path:
    """The folder holding env.py, script.py.mako and versions/.

    The repository keeps it as the top-level ``alembic/`` folder; the wheel ships that folder
    as ``appservice/migrations`` (pyproject's package-dir), so nothing is installed under the
    import name ``alembic``. Installed from the wheel, it lies beside this package; in a checkout
    (an editable install, whose finder cannot resolve a nested folder without ``__init__.py``)
    it is the checkout's ``alembic/``.
    """
    package = Path(__file__).resolve().parents[1]  # appservice/
    for candidate in (package / "migrations", package.parent / "alembic"):
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(f"Switchboard's migrations are missing (looked beside {package})")


#: Where alembic finds Switchboard's migrations (see :func:`_script_location`).
SCRIPT_LOCATION = _script_location()


def alembic_config(db_url: DatabaseUrl | None = None) -> Config:
    """An alembic ``Config`` built in code, pointing at Switchboard's migrations."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    if db_url is not None:
        config.attributes["version_table_schema"] = db_url.schema
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
    await _run(url, lambda config: command.upgrade(config, revision))


async def downgrade(url: str, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (default: drop everything)."""
    await _run(url, lambda config: command.downgrade(config, revision))


async def current_revision(url: str) -> str | None:
    """The revision the database at ``url`` is at, or None if it was never migrated."""
    db_url = parse_database_url(url)
    revisions: list[str | None] = []

    def read(connection: Connection) -> None:
        context = MigrationContext.configure(
            connection, opts={"version_table_schema": db_url.schema}
        )
        revisions.append(context.get_current_revision())

    engine = create_async_engine(
        db_url.sqlalchemy_url,
        connect_args=db_url.sqlalchemy_connect_args(),
        poolclass=NullPool,
    )
    try:
        async with engine.connect() as connection:
            await connection.run_sync(read)
    finally:
        await engine.dispose()
    return revisions[0]


async def _run(url: str, action: Callable[[Config], None]) -> None:
    db_url = parse_database_url(url)
    config = alembic_config(db_url)
    engine = create_async_engine(
        db_url.sqlalchemy_url,
        connect_args=db_url.sqlalchemy_connect_args(),
        poolclass=NullPool,
    )

    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # Two processes starting at once: the second waits, then finds nothing to do.
            # PostgreSQL's DDL is transactional, so the lock covers the whole upgrade.
            connection.execute(
                text("SELECT pg_advisory_xact_lock(hashtext('switchboard-migrate:' || :schema))"),
                {"schema": db_url.schema or ""},
            )
        config.attributes["connection"] = connection
        action(config)

    try:
        async with engine.begin() as connection:
            await connection.run_sync(run)
    finally:
        await engine.dispose()
