"""Logging from the config: a standard dictConfig, JSON lines, the conversation on each line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from appservice.config import ConfigError, generate, load
from appservice.logs import configure, default_logging
from bridge.logcontext import about, working_on


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """dictConfig changes the whole process's logging: put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    names = list(default_logging()["loggers"])
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:  # as in a new process
        logging.getLogger(name).setLevel(logging.NOTSET)
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
        handler.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def to_file(path: Path, formatter: str, level: str = "INFO") -> dict:
    section = default_logging(level)
    section["handlers"] = {
        "file": {"class": "logging.FileHandler", "filename": str(path), "formatter": formatter}
    }
    section["root"]["handlers"] = ["file"]
    return section


def test_the_json_formatter_writes_one_valid_object_per_line(tmp_path: Path, restore_logging):
    out = tmp_path / "switchboard.log"
    configure(to_file(out, "json"))
    log = logging.getLogger("bridge.services.queue")
    log.info("the desk opened")
    with about("c0ffee"):
        log.info("offering conversation %s to %s", "c0ffee", "@ana:example.org")
        log.warning("a message\nover two lines", extra={"room": "!r:example.org", "tries": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("handler failed")
    log.debug("not at INFO")
    logging.getLogger("mau.as").info("a chatty library")  # quiet by default

    lines = out.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 4 and all(isinstance(r, dict) for r in records)
    assert [r["message"] for r in records] == [
        "the desk opened",
        "offering conversation c0ffee to @ana:example.org",
        "a message\nover two lines",
        "handler failed",
    ]
    assert all(set(r) >= {"time", "level", "logger", "message"} for r in records)
    assert records[0]["time"].endswith("+00:00") and records[0]["level"] == "INFO"
    assert records[0]["logger"] == "bridge.services.queue"
    assert "conversation" not in records[0]
    assert {r.get("conversation") for r in records[1:]} == {"c0ffee"}
    assert records[2]["room"] == "!r:example.org" and records[2]["tries"] == 2
    assert "ValueError: boom" in records[3]["exception"]


def test_a_text_line_about_a_conversation_carries_its_id(tmp_path: Path, restore_logging):
    out = tmp_path / "switchboard.log"
    configure(to_file(out, "text"))
    log = logging.getLogger("bridge.outbox")

    async def handle(conversation: str) -> None:
        working_on(conversation)  # as a request's task does once it found the conversation
        await asyncio.sleep(0)
        log.info("step of %s", conversation)

    async def both() -> None:
        await asyncio.gather(handle("aaa"), handle("bbb"))

    asyncio.run(both())
    log.info("no conversation here")
    lines = out.read_text().splitlines()
    assert any(line.endswith("bridge.outbox [aaa]: step of aaa") for line in lines)
    assert any(line.endswith("bridge.outbox [bbb]: step of bbb") for line in lines)
    assert lines[-1].endswith("bridge.outbox: no conversation here")


@pytest.mark.parametrize(
    "level, libraries", [("DEBUG", logging.NOTSET), ("info", logging.WARNING)]
)
def test_the_old_logging_level_still_works(tmp_path: Path, restore_logging, level, libraries):
    """`logging: {level: …}` of the first version: the root level, and the libraries quiet
    unless it was DEBUG, as then."""
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    text = path.read_text()
    path.write_text(
        text[: text.index("# How Switchboard logs")] + f"logging:\n    level: {level}\n"
    )
    config = load(path)
    assert config.log_level == level.upper()
    configure(config)
    assert logging.getLogger().level == getattr(logging, level.upper())
    assert logging.getLogger("mau").level == libraries
    assert logging.getLogger("aiohttp.access").level == libraries


def test_an_invalid_logging_section_is_a_config_error(restore_logging):
    section = default_logging()
    section["handlers"]["console"]["formatter"] = "fancy"
    with pytest.raises(ConfigError, match="logging: not a valid logging configuration"):
        configure(section)


def test_a_bad_logging_section_in_the_config_stops_run_with_exit_2(
    tmp_path: Path, restore_logging, capsys
):
    from appservice.__main__ import main

    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml")
    path.write_text(path.read_text().replace("        level: INFO\n", "        level: LOUD\n"))
    assert main(["run", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "logging: not a valid logging configuration" in err and "LOUD" in err
    assert "Traceback" not in err
