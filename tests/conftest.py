"""Fixtures every kind of test may use, defined once here so that a session-scoped one runs
once per test run: one Synapse (``homeserver``), one wheel built and installed."""

from tests.desks import desks, homeserver, people, pg_desks, sqlite_desks  # noqa: F401
from tests.install.installed import (  # noqa: F401
    installed_switchboard,
    switchboard_processes,
    wheel,
)
