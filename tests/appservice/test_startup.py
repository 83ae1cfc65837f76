"""Start-up's pieces: the backoff, the retry loop, and what each operator's mistake says.

The processes themselves (homeserver down, registration not loaded, port in use, SIGTERM) are
tested in tests/faults/test_startup.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import socket
from pathlib import Path

import pytest
from mautrix.errors import MUnknownToken, make_request_error

from appservice.__main__ import run
from appservice.bootstrap import Switchboard
from appservice.config import Config, generate, write_registration
from appservice.startup import (
    Backoff,
    Readiness,
    StartupError,
    keep_trying,
    listen_error,
    ping_endpoint,
    registration_error,
)
from tests.desks import free_port


def test_the_wait_between_tries_doubles_up_to_the_cap():
    backoff = Backoff(cap=30)
    assert [backoff.next() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    small = Backoff(cap=2)
    assert [small.next() for _ in range(3)] == [1, 2, 2]


async def test_each_failed_try_is_one_line_and_ready_says_why_until_it_answers(caplog):
    readiness = Readiness()
    tries = iter([ConnectionRefusedError(111, "refused"), ConnectionRefusedError(111, "x"), 42])

    async def attempt() -> int:
        outcome = next(tries)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    reasons: list[str | None] = []

    def trouble(error: BaseException) -> str:
        reasons.append(readiness.not_ready())
        return "unreachable (Connection refused)"

    with caplog.at_level(logging.INFO, logger="appservice.startup"):
        result = await keep_trying(
            "homeserver http://hs", attempt, trouble, cap=0.01, readiness=readiness
        )
    assert result == 42
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "homeserver http://hs unreachable (Connection refused); next try in 0.01 s",
        "homeserver http://hs unreachable (Connection refused); next try in 0.01 s",
        "homeserver http://hs answers after 2 failed attempt(s)",
    ]
    assert reasons[1] == "waiting for homeserver http://hs unreachable (Connection refused)"


async def test_an_error_that_will_not_pass_by_itself_is_raised_at_once():
    async def attempt() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await keep_trying("homeserver", attempt, lambda e: None, cap=0.01, readiness=Readiness())


def _config(tmp_path: Path) -> Config:
    return generate(tmp_path / "config.yaml", tmp_path / "registration.yaml")


def test_an_unknown_token_names_the_registration_to_load_and_the_restart(tmp_path):
    config = _config(tmp_path)
    message = str(registration_error(config, MUnknownToken(401, "Unrecognised access token")))
    assert "(401 M_UNKNOWN_TOKEN)" in message
    assert f"add {tmp_path / 'registration.yaml'} to app_service_config_files" in message
    assert "restart the homeserver" in message


def test_an_unknown_token_with_a_stale_registration_says_to_generate_it_again(tmp_path):
    config = _config(tmp_path)
    other = dataclasses.replace(
        config, appservice=dataclasses.replace(config.appservice, as_token="x" * 32)
    )
    write_registration(other, tmp_path / "registration.yaml")
    message = str(registration_error(config, MUnknownToken(401, "Unrecognised access token")))
    assert f"{tmp_path / 'registration.yaml'} has other tokens than the config" in message
    assert f"-r {tmp_path / 'registration.yaml'}" in message


def test_an_unknown_token_without_a_registration_at_hand_says_where_it_comes_from(tmp_path):
    config = _config(tmp_path)
    (tmp_path / "registration.yaml").unlink()
    message = str(registration_error(config, MUnknownToken(401, "Unrecognised access token")))
    assert "the registration file `switchboard generate` wrote" in message
    assert "app_service_config_files" in message


def _ping_error(status: int, errcode: str, message: str) -> Exception:
    """What the homeserver's ping endpoint answers, as mautrix raises it."""
    text = json.dumps({"errcode": errcode, "error": message})
    return make_request_error(status, text, errcode, message)


class PingedBot:
    """A bot whose requests for a ping of the endpoint fail with ``errors`` in turn, then
    succeed."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.pings = 0

    async def appservice_ping(self, appservice_id: str) -> int:
        self.pings += 1
        if self.errors:
            raise self.errors.pop(0)
        return 2


# Synapse's ping meeting a retry of its own under way (the timer it cancels has just fired)
ALREADY_CALLED = _ping_error(
    502,
    "M_CONNECTION_FAILED",
    "AlreadyCalled: Tried to cancel an already-called event.",
)


async def test_a_ping_the_homeserver_failed_on_its_own_is_tried_again_within_a_second(
    tmp_path, caplog
):
    """Until a ping succeeds, Synapse may hold its pushes for minutes (and drop typing)."""
    bot = PingedBot(ALREADY_CALLED)
    with caplog.at_level(logging.INFO, logger="appservice.startup"):
        assert await ping_endpoint(_config(tmp_path), bot, first=0.01)
    assert bot.pings == 2
    assert [r.levelname for r in caplog.records] == ["INFO", "INFO"]
    assert "AlreadyCalled" in caplog.records[0].getMessage()
    assert caplog.records[0].getMessage().endswith("trying again in 0.01 s")
    assert "after 1 failed attempt(s)" in caplog.records[1].getMessage()


async def test_the_first_quick_try_again_of_a_ping_comes_within_a_second(tmp_path):
    bot = PingedBot(ALREADY_CALLED, ALREADY_CALLED)
    started = asyncio.get_running_loop().time()
    assert await ping_endpoint(_config(tmp_path), bot)
    assert bot.pings == 3
    assert asyncio.get_running_loop().time() - started < 1.5  # 0.25 s, then 0.5 s


async def test_a_ping_that_keeps_failing_is_given_up_after_a_few_quick_tries_with_one_warning(
    tmp_path, caplog
):
    timeout = _ping_error(504, "M_CONNECTION_TIMEOUT", "Timed out")
    bot = PingedBot(*[timeout] * 10)
    with caplog.at_level(logging.INFO, logger="appservice.startup"):
        ok = await ping_endpoint(_config(tmp_path), bot, retries=2, first=0.01)
    assert not ok and bot.pings == 3
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "cannot reach Switchboard's appservice endpoint" in warnings[0]


async def test_a_ping_failure_that_will_not_pass_is_said_at_once_and_not_tried_again(
    tmp_path, caplog
):
    # a homeserver without the ping endpoint: the periodic pings do no harm, no need to insist
    unknown = _ping_error(404, "M_UNRECOGNIZED", "Unrecognized request")
    bot = PingedBot(unknown)
    with caplog.at_level(logging.INFO, logger="appservice.startup"):
        assert not await ping_endpoint(_config(tmp_path), bot)
    assert bot.pings == 1
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    # a registration made from another config stops the start at once
    mismatch = _ping_error(403, "M_FORBIDDEN", "Mismatching application service ID in path")
    bot = PingedBot(mismatch)
    with pytest.raises(StartupError, match="appservice.id is"):
        await ping_endpoint(_config(tmp_path), bot)
    assert bot.pings == 1


def test_a_listener_that_cannot_open_its_port_says_which_key_to_change():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with socket.socket() as second, pytest.raises(OSError) as in_use:
            second.bind(("127.0.0.1", port))
    assert str(listen_error(in_use.value, "127.0.0.1", port, "portal")) == (
        f"port {port} on 127.0.0.1 is in use: stop the other process or change portal.port"
    )
    with socket.socket() as s, pytest.raises(OSError) as foreign:
        s.bind(("192.0.2.1", 0))  # TEST-NET: never this machine's
    assert "change appservice.hostname" in str(
        listen_error(foreign.value, "192.0.2.1", 1, "appservice")
    )


@pytest.fixture
def logging_restored():
    """``run`` configures logging for the whole process, as it should: put it back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


async def test_an_unexpected_error_at_start_up_is_logged_once_with_its_traceback_and_ports_close(
    tmp_path, monkeypatch, capsys, logging_restored
):
    portal_port, as_port, metrics_port = free_port(), free_port(), free_port()
    generate(
        tmp_path / "config.yaml",
        tmp_path / "registration.yaml",
        {
            "database.url": f"sqlite:///{tmp_path / 'switchboard.db'}",
            "portal.port": portal_port,
            "appservice.port": as_port,
            "metrics.port": metrics_port,
        },
    )
    listening = asyncio.Event()

    async def broken(self: Switchboard) -> None:
        # stands for any bug met once the ports are open (there is none to trigger for real)
        listening.set()
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr(Switchboard, "become_ready", broken)
    assert await run(tmp_path / "config.yaml") == 1  # logs as configured: to stderr
    assert listening.is_set()
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "start-up failed" in errors[0], err
    assert err.count("Traceback") == 1 and "RuntimeError: an unforeseen bug" in err
    for port in (portal_port, as_port, metrics_port):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
