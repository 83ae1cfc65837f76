"""What the portal reports for the operators' metrics (the appservice exports it)."""

from __future__ import annotations

from typing import Protocol


class PortalReports(Protocol):
    """Told what the portal refused or started; a measurement only, it must not fail."""

    def refused(self, kind: str) -> None:
        """A rate limit refused a request: ``start``, ``message``, ``typing`` or ``search``."""

    def started(self) -> None:
        """A visitor started a new chat."""


class NoReports:
    """Reports nothing (the portal on its own, its tests)."""

    def refused(self, kind: str) -> None:
        pass

    def started(self) -> None:
        pass
