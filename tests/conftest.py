"""Fixtures every kind of test may use, defined once here so that a session-scoped one runs
once per test run: one Synapse (``homeserver``), one wheel built and installed."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.browser import browser  # noqa: F401
from tests.desks import desks, homeserver, people, pg_desks, sqlite_desks  # noqa: F401
from tests.install.installed import (  # noqa: F401
    installed_switchboard,
    switchboard_processes,
    wheel,
)
from tests.pg import database_url as fresh_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database: an SQLite file, then a PostgreSQL schema."""
    async with fresh_database(request.param, tmp_path) as url:
        yield url
