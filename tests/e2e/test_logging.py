"""What the log shows of a real conversation at INFO: its id on each line about it, and never a
token, a password or what the visitor wrote."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from appservice.logs import configure, default_logging
from tests.desks import PASSWORD

SENTINELS = {
    "form": "form-text-7f3a9c",
    "visitor": "visitor-text-51d2e8",
    "advisor": "advisor-text-90b4f1",
    "name": "Name-Sentinel-c31a",
    "email": "email-sentinel-4be2@example.org",
}


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Everything Switchboard and its libraries log at INFO (the harness's own Matrix client
    aside), as ``switchboard run`` would with the example's logging at INFO."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    path = tmp_path / "switchboard.log"
    section = default_logging("INFO")
    section["loggers"] = {"nio": {"level": "WARNING"}}  # the test's advisor client
    section["handlers"] = {
        "file": {"class": "logging.FileHandler", "filename": str(path), "formatter": "text"}
    }
    section["root"]["handlers"] = ["file"]
    configure(section)
    yield path
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name in default_logging()["loggers"]:
        logging.getLogger(name).setLevel(logging.NOTSET)


async def test_a_conversation_logged_at_info_shows_no_secret_and_no_visitor_text(
    sqlite_desks, people, log_file: Path
):
    desk = await sqlite_desks.start()
    ana = await people.advisor(desk, "ana")
    vera = await people.visitor(desk)
    started = await vera.start(
        name=SENTINELS["name"], email=SENTINELS["email"], message=SENTINELS["form"]
    )
    conversation = started["conversation"]["id"]
    await vera.connect()
    room = await ana.wait_for_invite()
    await ana.join(room)
    await vera.wait_status("active")
    await vera.say(SENTINELS["visitor"])
    await ana.wait_for_message(room, SENTINELS["visitor"])
    await ana.send_text(room, SENTINELS["advisor"])
    await vera.wait_message(SENTINELS["advisor"])
    await ana.send_text(room, "!close")
    await vera.wait_status("ended")
    await ana.wait_for_member(
        room, (await ana.wait_for_message(room, SENTINELS["form"])).sender, "leave"
    )

    log = log_file.read_text()
    secrets = {
        "as_token": desk.config.appservice.as_token,
        "hs_token": desk.config.appservice.hs_token,
        "portal secret": desk.config.portal.secret[0],
        "advisor password": PASSWORD,
    }
    for what, value in {**SENTINELS, **secrets}.items():
        assert value not in log, f"the {what} is in the log"
    about = [line for line in log.splitlines() if conversation in line]
    assert len(about) >= 3, log  # started, room made, ended (at least)
    untagged = [line for line in about if f"[{conversation}]" not in line]
    assert not untagged, "lines about the conversation without its id:\n" + "\n".join(untagged)
    assert re.search(rf"\[{conversation}\]: conversation {conversation} started", log)
