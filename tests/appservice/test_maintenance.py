"""`switchboard migrate` and `switchboard backup`, run as an admin runs them (a process of
their own): see the schema version, roll it back before installing an older version and
forward again, on SQLite and PostgreSQL; copy an SQLite database safely while it is written."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path

from appservice.config import generate
from appservice.db.lockfile import SingleProcessLock
from appservice.maintenance import schema_state
from tests.pg import fresh_schema_url


def switchboard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "appservice", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.yaml"
    generate(path, tmp_path / "registration.yaml", {"database.url": url})
    return path


def check_rollback_and_forward(config: Path) -> None:
    known = schema_state(None).known
    shown = switchboard("migrate", "-c", config)
    assert shown.returncode == 0 and "empty (never migrated)" in shown.stdout
    assert f"this version migrates to: {known[-1]}" in shown.stdout
    up = switchboard("migrate", "-c", config, "--to", "head")
    assert up.returncode == 0, up.stderr
    assert f"empty -> {known[-1]}" in up.stdout
    back = switchboard("migrate", "-c", config, "--to", known[-2])
    assert back.returncode == 0, back.stderr
    assert f"{known[-1]} -> {known[-2]}" in back.stdout
    again = switchboard("migrate", "-c", config, "--to", "head")
    assert f"{known[-2]} -> {known[-1]}" in again.stdout
    wrong = switchboard("migrate", "-c", config, "--to", "9999")
    assert wrong.returncode == 1 and "unknown revision '9999'" in wrong.stderr
    assert "Traceback" not in wrong.stderr


def test_an_sqlite_schema_is_rolled_back_and_forward_and_never_under_a_running_desk(
    tmp_path: Path,
):
    database = tmp_path / "switchboard.db"
    config = config_for(tmp_path, f"sqlite:///{database}")
    check_rollback_and_forward(config)
    lock = SingleProcessLock(str(database))
    lock.acquire()  # Switchboard runs
    try:
        refused = switchboard("migrate", "-c", config, "--to", schema_state(None).known[-2])
    finally:
        lock.release()
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert str(database) in refused.stderr


async def test_a_postgresql_schema_is_rolled_back_and_forward(tmp_path: Path):
    async with fresh_schema_url() as url:
        await asyncio.to_thread(check_rollback_and_forward, config_for(tmp_path, url))
        backup = await asyncio.to_thread(
            switchboard, "backup", "-c", tmp_path / "config.yaml", tmp_path / "copy.db"
        )
        assert backup.returncode == 1 and "pg_dump" in backup.stderr


def test_an_sqlite_backup_taken_while_it_is_written_is_whole(tmp_path: Path):
    database = tmp_path / "switchboard.db"
    config = config_for(tmp_path, f"sqlite:///{database}")
    assert switchboard("migrate", "-c", config, "--to", "head").returncode == 0
    writer = sqlite3.connect(database)
    writer.execute("PRAGMA journal_mode=WAL")
    rows = [(f"k{n}", "x" * 500) for n in range(2000)]
    writer.executemany("INSERT INTO settings (key, value) VALUES (?, ?)", rows)
    writer.commit()
    writer.execute("BEGIN")
    writer.execute("INSERT INTO settings (key, value) VALUES ('uncommitted', 'no')")
    try:
        copied = switchboard("backup", "-c", config, tmp_path / "copy.db")
    finally:
        writer.rollback()
        writer.close()
    assert copied.returncode == 0, copied.stderr
    assert "Copied the database" in copied.stdout
    copy = sqlite3.connect(tmp_path / "copy.db")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        keys = {k for (k,) in copy.execute("SELECT key FROM settings")}
        assert {f"k{n}" for n in range(2000)} <= keys and "uncommitted" not in keys
    finally:
        copy.close()
    assert oct((tmp_path / "copy.db").stat().st_mode & 0o777) == "0o600"
    again = switchboard("backup", "-c", config, tmp_path / "copy.db")
    assert again.returncode == 1 and "exists" in again.stderr


def test_maintenance_without_a_config_says_how_to_make_one(tmp_path: Path):
    shown = switchboard("migrate", "-c", tmp_path / "nope.yaml")
    assert shown.returncode == 2 and "switchboard generate" in shown.stderr
