"""Start-up as an operator meets it: `switchboard run` as a process of its own, started before
the homeserver or the database answers, with a registration the homeserver never loaded, with
its port taken, stopped while it waits. Never a hang, never a traceback for their mistakes."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from appservice.config import load, write_registration
from tests.desks import free_port
from tests.faults.conftest import add_advisors_through_the_bot
from tests.faults.process import SwitchboardProcess, write_config
from tests.faults.proxy import CuttableProxy
from tests.pg import fresh_schema_url, server_url

Launch = Callable[..., Awaitable[SwitchboardProcess]]


def _config(homeserver: Any, tmp_path: Path, **changes: Any) -> Path:
    """The session's registered config on a fresh SQLite file and portal port, plus changes."""
    port = free_port()
    path = tmp_path / "switchboard.yaml"
    write_config(
        homeserver.config.path,
        path,
        {
            "database.url": f"sqlite:///{tmp_path / 'switchboard.db'}",
            "portal.port": port,
            "portal.public_url": f"http://127.0.0.1:{port}",
            "logging.root.level": "INFO",
            **changes,
        },
    )
    return path


@pytest.fixture
async def launch(request: pytest.FixtureRequest) -> AsyncIterator[Launch]:
    """Starts `switchboard run` processes, and stops any left running after the test: from
    the checkout, or (``launch`` parametrised with "wheel") the wheel installed in a fresh
    virtualenv outside it, as an admin runs it."""
    processes: list[SwitchboardProcess] = []
    installed = None
    if getattr(request, "param", "checkout") == "wheel":
        installed = request.getfixturevalue("installed_switchboard")

    async def start(config_path: Path, until: str | None = "/health") -> SwitchboardProcess:
        process = installed.process(config_path) if installed else SwitchboardProcess(config_path)
        processes.append(process)
        if until is None:
            process.launch()
        else:
            await asyncio.to_thread(process.start, 30, None, until)
        return process

    yield start
    for process in processes:
        await asyncio.to_thread(process.stop)  # a proxy in this loop keeps forwarding


async def _printed(process: SwitchboardProcess, text: str, timeout: float = 10) -> None:
    """Wait until the process has written ``text`` (its output is a file: polled)."""
    deadline = time.monotonic() + timeout
    while text not in process.output():
        assert time.monotonic() < deadline, f"never printed {text!r}:\n{process.output()}"
        await asyncio.sleep(0.05)


async def _exit_status(process: SwitchboardProcess, timeout: float) -> int:
    return await asyncio.to_thread(process.wait_exit, timeout)


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if "ERROR" in line]


async def _ready_after(http: aiohttp.ClientSession, portal: str, timeout: float) -> float:
    """Seconds until /ready answers 200 (fails after ``timeout``)."""
    started = time.monotonic()
    while True:
        async with http.get(f"{portal}/ready") as response:
            if response.status == 200:
                return time.monotonic() - started
        assert time.monotonic() - started < timeout, "not ready in time"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("launch", ["checkout", "wheel"], indirect=True)
async def test_started_before_the_homeserver_it_retries_refuses_transactions_and_serves_once_it_answers(  # noqa: E501
    homeserver, people, tmp_path, launch
):
    proxy = CuttableProxy("127.0.0.1", homeserver.server.port)  # not started: refused
    admin_id = homeserver.new_user("admin")
    process = await launch(
        _config(
            homeserver,
            tmp_path,
            **{
                "homeserver.address": proxy.url,
                "homeserver.retry_max_delay": 2,
                "desk.admins": [admin_id],
            },
        )
    )
    config = process.config
    portal = config.portal.public_url
    try:
        await _printed(process, f"homeserver {proxy.url} unreachable (Connection refused); next")
        await _printed(process, "next try in 2 s")  # backing off, up to the cap
        async with aiohttp.ClientSession() as http:
            for route in ("/health", "/healthz"):
                async with http.get(f"{portal}{route}") as response:
                    assert response.status == 200, route
            async with http.get(f"{portal}/ready") as response:
                assert response.status == 503
                assert proxy.url in (await response.json())["reason"]
            async with http.put(
                f"{config.appservice.address}/_matrix/app/v1/transactions/{uuid.uuid4().hex}",
                json={"events": []},
                headers={"Authorization": f"Bearer {config.appservice.hs_token}"},
            ) as response:
                assert response.status == 503  # the homeserver keeps it and pushes it again
            async with http.get(f"{portal}/api/conversation") as response:
                assert response.status == 503
                assert (await response.json())["error"]["code"] == "starting"
            async with http.get(f"{portal}/") as response:
                assert response.status == 200  # the page loads; its requests are retried

            await proxy.start()  # the homeserver comes up
            assert await _ready_after(http, portal, timeout=5) < 5
        assert "Traceback" not in process.output()

        advisor = await people.advisor(None, "ana")
        await add_advisors_through_the_bot(process, people, admin_id, [advisor])
        chat = await people.chatting(process, advisor)
        await chat.visitor.say("Hello, is anyone there?")
        await advisor.wait_for_message(chat.room, "Hello, is anyone there?")
        await advisor.send_text(chat.room, "Yes, how can I help?")
        await chat.visitor.wait_message("Yes, how can I help?")
    finally:
        await asyncio.to_thread(process.stop)  # the proxy keeps forwarding meanwhile
        await proxy.cut()


@pytest.mark.parametrize("launch", ["checkout", "wheel"], indirect=True)
@pytest.mark.parametrize(
    "case, says",
    [
        (
            "never loaded",
            [
                "M_UNKNOWN_TOKEN",
                "add {registration} to app_service_config_files",
                "restart the homeserver",
            ],
        ),
        ("another hs_token", ["another hs_token", "-r {registration}", "restart the homeserver"]),
        ("another id", ["appservice.id is 'other'", "set appservice.id to the registration's"]),
    ],
)
async def test_a_registration_the_homeserver_does_not_match_stops_it_with_one_line_saying_what_to_fix(  # noqa: E501
    homeserver, tmp_path, launch, case, says
):
    changes: dict[str, Any] = {
        "never loaded": {
            "appservice.as_token": secrets.token_urlsafe(32),
            "appservice.hs_token": secrets.token_urlsafe(32),
        },
        "another hs_token": {"appservice.hs_token": secrets.token_urlsafe(32)},
        "another id": {"appservice.id": "other"},
    }[case]
    path = _config(homeserver, tmp_path, **changes)
    registration = tmp_path / "registration.yaml"
    write_registration(load(path), registration)  # written, but not the one the server loaded
    started = time.monotonic()
    process = await launch(path, until=None)
    assert await _exit_status(process, timeout=10) == 1
    assert time.monotonic() - started < 10
    output = process.output()
    [error] = _error_lines(output)
    for text in says:
        assert text.format(registration=registration) in error
    assert "Traceback" not in output


async def test_a_port_in_use_stops_it_with_one_line_naming_the_port_and_the_key(
    homeserver, tmp_path, launch
):
    path = _config(homeserver, tmp_path)
    port = load(path).portal.port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        process = await launch(path, until=None)
        assert await _exit_status(process, timeout=10) == 1
    output = process.output()
    [error] = _error_lines(output)
    assert error.endswith(
        f"port {port} on 127.0.0.1 is in use: stop the other process or change portal.port"
    )
    assert "Traceback" not in output


@pytest.mark.parametrize("waiting_for", ["homeserver", "database"])
async def test_sigterm_while_it_waits_at_start_up_stops_it_at_once_with_status_0(
    homeserver, tmp_path, launch, waiting_for
):
    nothing_there = f"127.0.0.1:{free_port()}"
    changes = (
        {"homeserver.address": f"http://{nothing_there}"}
        if waiting_for == "homeserver"
        else {"database.url": f"postgresql://postgres@{nothing_there}/switchboard"}
    )
    process = await launch(_config(homeserver, tmp_path, **changes))
    where = (
        f"homeserver http://{nothing_there}"
        if waiting_for == "homeserver"
        else f"database PostgreSQL postgres@{nothing_there}/switchboard"
    )
    await _printed(process, f"{where} unreachable (Connection refused); next try in 1 s")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{process.config.portal.public_url}/ready") as response:
            assert response.status == 503
            assert f"waiting for {waiting_for}" in (await response.json())["reason"]
    process.signal(signal.SIGTERM)
    stopping = time.monotonic()
    assert await _exit_status(process, timeout=5) == 0
    assert time.monotonic() - stopping <= 2
    assert "Traceback" not in process.output()


async def test_started_before_postgresql_it_retries_and_serves_once_postgresql_answers(
    homeserver, tmp_path, launch
):
    server = URL(server_url())
    proxy = CuttableProxy(server.host or "127.0.0.1", server.port or 5432)
    async with fresh_schema_url() as url:
        behind_proxy = str(URL(url).with_host("127.0.0.1").with_port(proxy.port))
        process = await launch(
            _config(
                homeserver,
                tmp_path,
                **{"database.url": behind_proxy, "database.retry_max_delay": 2},
            )
        )
        try:
            await _printed(process, f"127.0.0.1:{proxy.port}")
            await _printed(process, "unreachable (Connection refused); next try in 2 s")
            portal = process.config.portal.public_url
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{portal}/ready") as response:
                    assert response.status == 503
                    assert "waiting for database" in (await response.json())["reason"]
                await proxy.start()
                assert await _ready_after(http, portal, timeout=5) < 5
            assert "Traceback" not in process.output()
        finally:
            await asyncio.to_thread(process.stop)  # the proxy keeps forwarding meanwhile
            await proxy.cut()


def _newer_schema(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        db.execute("INSERT INTO alembic_version VALUES ('ffffffffffff')")


@pytest.mark.parametrize(
    "case, says",
    [
        ("missing directory", "{tmp}/missing does not exist; create the directory"),
        ("not a directory", "{tmp}/file is not a directory"),
        ("newer schema", "was migrated by a newer Switchboard"),
    ],
)
async def test_an_sqlite_database_it_cannot_use_stops_it_with_one_line(
    homeserver, tmp_path, launch, case, says
):
    database = {
        "missing directory": tmp_path / "missing" / "switchboard.db",
        "not a directory": tmp_path / "file" / "switchboard.db",
        "newer schema": tmp_path / "newer.db",
    }[case]
    if case == "not a directory":
        (tmp_path / "file").write_text("")
    if case == "newer schema":
        _newer_schema(database)
    process = await launch(
        _config(homeserver, tmp_path, **{"database.url": f"sqlite:///{database}"}), until=None
    )
    assert await _exit_status(process, timeout=10) == 1
    output = process.output()
    [error] = _error_lines(output)
    assert says.format(tmp=tmp_path) in error
    assert "Traceback" not in output
