"""Start-up that never hangs: what Switchboard still waits for, retries with a capped backoff,
and an operator's mistake said in one line.

Switchboard listens first, so a supervisor or a load balancer can ask ``/health`` and ``/ready``
at once; then it waits for the database and the homeserver, retrying what may come back by itself
(a server still starting, a network blip) and giving up at once on what never will without an
operator (a registration the homeserver has not loaded, a port in use, a database file it may not
write). Those mistakes raise :class:`StartupError`, whose message says what to fix; ``switchboard
run`` logs it as one line and exits non-zero, so a supervisor notices and the operator knows.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import aiohttp
import asyncpg
from alembic.util.exc import CommandError
from mautrix.appservice import IntentAPI
from mautrix.errors import MatrixConnectionError, MatrixRequestError
from ruamel.yaml import YAML

from .config import Config
from .db import DatabaseUrl

log = logging.getLogger(__name__)

T = TypeVar("T")

FIRST_DELAY = 1.0  # seconds before the second attempt; doubled after each failure
ATTEMPT_TIMEOUT = 20.0  # seconds one try at the homeserver may take before it counts as failed


class StartupError(Exception):
    """An operator's mistake found at start-up; the message says what to fix."""


class Readiness:
    """What Switchboard still waits for before it serves visitors and the homeserver.

    The steps come one after another: the database (migrated and open), the homeserver
    (answering), the bot (registered). :meth:`not_ready` is what ``/ready`` says."""

    def __init__(self) -> None:
        self._waiting: str | None = "waiting for database (not opened yet)"

    def waiting(self, what: str) -> None:
        """Not ready: ``what`` says what it waits for and why (``"homeserver … unreachable"``)."""
        self._waiting = f"waiting for {what}"

    def set_ready(self) -> None:
        self._waiting = None

    def not_ready(self) -> str | None:
        """Why Switchboard is not ready yet, or None once it is."""
        return self._waiting


class Backoff:
    """Delays between attempts: one second, doubled after each failure, at most ``cap``."""

    def __init__(self, cap: float, first: float = FIRST_DELAY) -> None:
        self._cap = cap
        self._next = min(first, cap)

    def next(self) -> float:
        delay = self._next
        self._next = min(self._next * 2, self._cap)
        return delay


async def keep_trying(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    trouble: Callable[[BaseException], str | None],
    *,
    cap: float,
    readiness: Readiness,
    timeout: float | None = None,
) -> T:
    """``attempt()`` until it succeeds, with one log line per failed attempt.

    Args:
        what: What is waited for, as the log line starts (``"homeserver http://…"``).
        attempt: One try; its result is returned.
        trouble: Why an error may go away by itself (``"unreachable (Connection refused)"``),
            or None for an error that will not: that one is raised. May raise
            :class:`StartupError` itself.
        cap: The longest wait between two attempts, in seconds.
        readiness: Told what is waited for, for ``/ready``.
        timeout: How long one attempt may take (an unanswered attempt counts as failed).
    """
    backoff = Backoff(cap)
    failures = 0
    while True:
        try:
            result = await asyncio.wait_for(attempt(), timeout)
        except asyncio.TimeoutError:
            why = f"unreachable (no answer within {_seconds(timeout or 0)} s)"
        except Exception as e:
            found = trouble(e)
            if found is None:
                raise
            why = found
        else:
            if failures:
                log.info("%s answers after %d failed attempt(s)", what, failures)
            return result
        failures += 1
        delay = backoff.next()
        readiness.waiting(f"{what} {why}")
        log.warning("%s %s; next try in %s s", what, why, _seconds(delay))
        await asyncio.sleep(delay)


def _seconds(value: float) -> str:
    return f"{value:g}"


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and those it wraps (SQLAlchemy's ``orig``, ``raise … from``), outermost first."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        wrapped = orig if isinstance(orig, BaseException) else current.__cause__
        if wrapped is None and not current.__suppress_context__:
            wrapped = current.__context__
        current = wrapped


def _os_reason(error: OSError) -> str:
    if isinstance(error.errno, int) and error.errno > 0:
        return os.strerror(error.errno)  # asyncio's own wording repeats the address
    return error.strerror or str(error) or type(error).__name__


# -- the homeserver --------------------------------------------------------------------------


def homeserver_trouble(error: BaseException) -> str | None:
    """Why the homeserver did not answer, if that may pass (see :func:`keep_trying`)."""
    for cause in _causes(error):
        if isinstance(cause, MatrixRequestError):
            status = cause.http_status
            if status == 429 or status >= 500:
                return f"answered {status} ({cause.errcode or 'no error code'})"
            return None
        if isinstance(cause, aiohttp.ClientConnectorError):
            return f"unreachable ({_os_reason(cause.os_error)})"
        if isinstance(cause, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
            return "unreachable (the connection was closed before the answer)"
        if isinstance(cause, OSError):
            return f"unreachable ({_os_reason(cause)})"
    for cause in _causes(error):
        if isinstance(cause, (aiohttp.ClientConnectionError, MatrixConnectionError)):
            return f"unreachable ({cause})"
    return None


async def reach_homeserver(
    config: Config, bot: IntentAPI, readiness: Readiness, cap: float
) -> None:
    """Wait until the homeserver answers and knows the bot; raise :class:`StartupError` if it
    refuses the bot (the registration is not loaded, or was made from another config)."""
    address = config.homeserver.address

    async def attempt() -> None:
        try:
            await bot.versions(no_cache=True)
        except MatrixRequestError as e:
            if homeserver_trouble(e) is None and e.http_status not in (401, 403):
                raise StartupError(
                    f"{address} does not answer as a Matrix homeserver ({e.http_status} "
                    f"{e.errcode or ''}): check homeserver.address"
                ) from None
            raise
        readiness.waiting(f"homeserver {address} to register the bot {bot.mxid}")
        whoami = await bot.whoami()
        if whoami.user_id != bot.mxid:
            raise StartupError(
                f"the homeserver at {address} knows Switchboard's as_token as "
                f"{whoami.user_id}, not {bot.mxid}: appservice.bot_username must be the "
                "registration's sender_localpart (run `switchboard generate` again and restart "
                "the homeserver)"
            )
        await bot.ensure_registered()

    def trouble(error: BaseException) -> str | None:
        why = homeserver_trouble(error)
        if why is None and isinstance(error, MatrixRequestError):
            raise registration_error(config, error) from None
        return why

    readiness.waiting(f"homeserver {address}")
    await keep_trying(
        f"homeserver {address}",
        attempt,
        trouble,
        cap=cap,
        readiness=readiness,
        timeout=ATTEMPT_TIMEOUT,
    )


def registration_error(config: Config, error: MatrixRequestError) -> StartupError:
    """What to fix when the homeserver refuses the bot (an unknown as_token, mostly)."""
    address = config.homeserver.address
    status = f"{error.http_status} {error.errcode or ''}".strip()
    if error.http_status not in (401, 403):
        return StartupError(
            f"the homeserver at {address} refused to register the bot {config.bot_mxid} "
            f"({status}: {error.message}): check appservice.bot_username and the "
            "registration's sender_localpart"
        )
    registration = _registration_near(config)
    regenerate = (
        f"switchboard generate -c {config.path or 'config.yaml'} "
        f"-r {registration or 'registration.yaml'}"
    )
    if registration is None:
        fix = (
            "add the registration file `switchboard generate` wrote (registration.yaml by "
            "default) to app_service_config_files in homeserver.yaml and restart the "
            f"homeserver; if it is listed there already, its tokens differ from the config's: "
            f"run `{regenerate}` and restart the homeserver"
        )
    elif _registration_tokens(registration) != (
        config.appservice.as_token,
        config.appservice.hs_token,
    ):
        fix = (
            f"{registration} has other tokens than the config: run `{regenerate}` to write it "
            "again, then restart the homeserver"
        )
    else:
        fix = (
            f"add {registration} to app_service_config_files in homeserver.yaml and restart "
            "the homeserver (if it is listed there, the homeserver has not loaded this "
            "version of it: restart it)"
        )
    return StartupError(
        f"the homeserver at {address} does not accept Switchboard's as_token ({status}): "
        f"the registration is not loaded or its tokens differ from the config; {fix}"
    )


def ping_problem(config: Config, error: MatrixRequestError) -> str:
    """What the homeserver's failed ping of our endpoint means for the operator.

    Raises:
        StartupError: the homeserver's registration does not match the config (another
            hs_token, another id): it would never deliver anything to us.
    """
    if error.errcode == "M_BAD_STATUS":
        # the homeserver reached our endpoint, and the endpoint refused its hs_token
        status = None
        try:
            status = json.loads(getattr(error, "text", "") or "{}").get("status")
        except (ValueError, AttributeError):
            pass
        if status in (401, 403):
            registration = _registration_near(config) or "registration.yaml"
            raise StartupError(
                "the homeserver calls Switchboard with another hs_token than "
                "appservice.hs_token: the registration it loaded was made from another config; "
                f"run `switchboard generate -c {config.path or 'config.yaml'} -r {registration}`"
                " and restart the homeserver"
            )
    if error.http_status == 403 and "mismatching" in str(error.message or "").lower():
        raise StartupError(
            f"appservice.id is {config.appservice.id!r}, but the homeserver loaded "
            "Switchboard's tokens under another registration id: set appservice.id to the "
            "registration's id, or run `switchboard generate` again and restart the homeserver"
        )
    if error.errcode in ("M_CONNECTION_FAILED", "M_CONNECTION_TIMEOUT"):
        return (
            f"the homeserver cannot reach Switchboard's appservice endpoint at "
            f"{config.appservice.address} ({error.message}); advisors' messages wait until "
            "it can: check appservice.address (the registration's url) and that "
            "appservice.hostname and appservice.port listen there"
        )
    return f"the homeserver could not ping Switchboard's appservice endpoint: {error}"


def namespace_problem(config: Config) -> StartupError:
    """The homeserver's registration lacks the call signs' alias namespace (made before call
    signs existed, or before ``directory.call_sign_alias_prefix`` changed)."""
    registration = _registration_near(config) or "registration.yaml"
    alias = config.call_sign_alias("*").replace("*", ".*")
    return StartupError(
        f"the homeserver's registration for Switchboard lacks the call signs' alias namespace "
        f"{alias}: run `switchboard generate -c {config.path or 'config.yaml'} -r "
        f"{registration}`, give the homeserver the new registration file, and restart the "
        "homeserver"
    )


PING_RETRIES = 4  # quick tries again of a ping that failed for a reason that may pass
PING_FIRST_RETRY = 0.25  # seconds before the first of them; doubled after each
PING_RETRY_CAP = 2.0  # seconds: the longest wait between two of them


async def ping_endpoint(
    config: Config,
    bot: IntentAPI,
    *,
    retries: int = PING_RETRIES,
    first: float = PING_FIRST_RETRY,
) -> bool:
    """Ask the homeserver to ping Switchboard's appservice endpoint; whether it did.

    A ping that succeeds ends the homeserver's back-off: after its pushes to us failed (we
    were stopped, or starting), Synapse waits up to minutes before it pushes again, keeping the
    events for us but dropping typing notices and receipts meanwhile. So a ping that failed
    for a reason that may pass (the homeserver's own error, such as Synapse's ``AlreadyCalled``
    when its ping meets a retry of its own under way; a timeout; a 5xx) is tried again up to
    ``retries`` times within seconds, not left to the next periodic ping. One that will not
    pass is logged at once, in :func:`ping_problem`'s words; so is the last failure.

    Raises:
        StartupError: the homeserver's registration does not match the config (see
            :func:`ping_problem`).
    """
    backoff = Backoff(PING_RETRY_CAP, first)
    failures = 0
    while True:
        error: Exception
        try:
            await bot.appservice_ping(config.appservice.id)
        except MatrixRequestError as e:
            error, problem = e, ping_problem(config, e)
        except Exception as e:
            error = e
            problem = f"the homeserver could not ping Switchboard's appservice endpoint: {e}"
        else:
            if failures:
                log.info(
                    "the homeserver pinged Switchboard's appservice endpoint after %d failed "
                    "attempt(s)",
                    failures,
                )
            return True
        failures += 1
        if failures > retries or homeserver_trouble(error) is None:
            log.warning("%s", problem)
            return False
        delay = backoff.next()
        log.info("%s; trying again in %s s", problem, _seconds(delay))
        await asyncio.sleep(delay)


def _registration_near(config: Config) -> Path | None:
    """The registration file `switchboard generate` would have written next to the config."""
    places = [Path("registration.yaml")]
    if config.path is not None:
        places.insert(0, config.path.parent / "registration.yaml")
    for place in places:
        if place.is_file():
            return place.resolve()
    return None


def _registration_tokens(path: Path) -> tuple[str, str] | None:
    try:
        data = YAML(typ="safe").load(path.read_text())
        return str(data["as_token"]), str(data["hs_token"])
    except Exception:  # unreadable or not a registration: say what we can without it
        return None


# -- the database ----------------------------------------------------------------------------


def database_place(db_url: DatabaseUrl) -> str:
    """The database as a log line names it (never its password)."""
    if db_url.sqlite_path is not None:
        return f"SQLite {Path(db_url.sqlite_path).resolve()}"
    url = db_url.sqlalchemy_url
    where = f"{url.host or 'localhost'}:{url.port or 5432}"
    return f"PostgreSQL {url.username or ''}@{where}/{url.database or ''}".replace(" @", " ")


def database_trouble(db_url: DatabaseUrl) -> Callable[[BaseException], str | None]:
    """Why the database could not be opened, if that may pass (see :func:`keep_trying`);
    raises :class:`StartupError` for what an operator must fix."""
    place = database_place(db_url)

    def trouble(error: BaseException) -> str | None:
        for cause in _causes(error):
            if isinstance(cause, sqlite3.Error):
                raise StartupError(
                    f"cannot use the database {place} ({cause}): check that this user may "
                    "write the file and its directory, or change database.url"
                ) from None
            if isinstance(
                cause,
                (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError),
            ):
                raise StartupError(
                    f"{place} refused the login ({cause}): fix the user or password in "
                    "database.url"
                ) from None
            if isinstance(cause, CommandError) and "locate revision" in str(cause):
                raise StartupError(
                    f"the database {place} was migrated by a newer Switchboard ({cause}): run "
                    "that version again, or migrate the database down with it first"
                ) from None
            if isinstance(cause, asyncpg.InvalidCatalogNameError):
                raise StartupError(
                    f"{place}: {cause}: create it (createdb) or fix database.url"
                ) from None
            if isinstance(
                cause,
                (
                    asyncpg.CannotConnectNowError,
                    asyncpg.TooManyConnectionsError,
                    asyncpg.ConnectionDoesNotExistError,
                ),
            ):
                return f"unavailable ({cause})"
            if isinstance(cause, OSError):
                return f"unreachable ({_os_reason(cause)})"
        return None

    return trouble


def check_sqlite_file(path: str) -> None:
    """One line, not a traceback, for an SQLite file that cannot be written."""
    file = Path(path).resolve()
    directory = file.parent
    if not directory.is_dir():
        trouble = "is not a directory" if directory.exists() else "does not exist"
        raise StartupError(
            f"cannot create the SQLite database {file}: {directory} {trouble}; create the "
            "directory or change database.url"
        )
    if file.exists():
        if not os.access(file, os.R_OK | os.W_OK):
            raise StartupError(
                f"cannot write the SQLite database {file}: permission denied; let this user "
                "write it or change database.url"
            )
    elif not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(
            f"cannot create the SQLite database {file}: the directory {directory} is not "
            "writable by this user; change its permissions or database.url"
        )


def lock_error(path: str, error: OSError) -> StartupError:
    return StartupError(
        f"cannot write next to the SQLite database {Path(path).resolve()} "
        f"({_os_reason(error)}): let this "
        "user write its directory, or change database.url"
    )


# -- listening -------------------------------------------------------------------------------


def listen_error(error: OSError, host: str, port: int, section: str) -> StartupError:
    """What to change when a listener cannot open its port."""
    if error.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {port} on {host} is in use: stop the other process or change {section}.port"
        )
    if error.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"cannot listen on {host}:{port}: this machine has no such address; change "
            f"{section}.hostname"
        )
    if error.errno == errno.EACCES:
        return StartupError(
            f"cannot listen on {host}:{port}: permission denied (ports below 1024 need "
            f"privileges); change {section}.port"
        )
    if isinstance(error, socket.gaierror):
        return StartupError(
            f"cannot listen on {host}: unknown host name ({_os_reason(error)}); change "
            f"{section}.hostname"
        )
    return StartupError(f"cannot listen on {host}:{port} ({_os_reason(error)}); check {section}")
