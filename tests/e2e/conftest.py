"""Fixtures of the end-to-end tests that need more than the session's one homeserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.federation import Federation, start_federation


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Two homeservers federating on loopback, once per test run: the desk's (with
    Switchboard's registration) and a partner's."""
    yield from start_federation(tmp_path_factory.mktemp("federation"))
