"""Errors the core raises; each has a stable code the portal and the bot can show."""

from __future__ import annotations


class SwitchboardError(Exception):
    """Base class. ``code`` is stable (for clients and tests); ``message`` is for a person."""

    code = "error"
    status = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(SwitchboardError):
    code = "invalid_input"


class NotFound(SwitchboardError):
    code = "not_found"
    status = 404


class NoOpenConversation(SwitchboardError):
    code = "no_conversation"
    status = 409


class NotAllowed(SwitchboardError):
    code = "forbidden"
    status = 403


class Unavailable(SwitchboardError):
    """The outside world (homeserver, database) failed; trying again later may work."""

    code = "unavailable"
    status = 503


class RateLimited(SwitchboardError):
    """Refused for now; ``retry_after``: the seconds until the same request would pass."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IllegalTransition(Exception):
    """A change of state that the domain's rules forbid (a bug or a stale decision, never a
    visitor's input): the caller re-reads the state and decides again, or drops the change."""


class TemporarilyUnavailable(Exception):
    """The outside world (the homeserver) cannot do it now but may later: retried without
    counting as a failure. ``retry_after``: seconds the other side asked us to wait."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
