"""SQLite serves one Switchboard process: a second one refuses to start, in one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appservice.db.lockfile import DatabaseInUse, SingleProcessLock


def test_a_second_process_on_the_same_sqlite_file_is_refused_until_the_first_stops(
    tmp_path: Path,
) -> None:
    database = str(tmp_path / "switchboard.db")
    first = SingleProcessLock(database)
    first.acquire()
    second = SingleProcessLock(database)
    with pytest.raises(DatabaseInUse) as refused:
        second.acquire()
    message = str(refused.value)
    assert "switchboard.db" in message and "one Switchboard process" in message
    assert "PostgreSQL" in message  # what to do instead
    first.release()
    second.acquire()  # the first one stopped: the file is free
    second.release()


def test_a_killed_process_leaves_no_lock_behind(tmp_path: Path) -> None:
    database = str(tmp_path / "switchboard.db")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from appservice.db.lockfile import SingleProcessLock\n"
            f"SingleProcessLock({database!r}).acquire()\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    with pytest.raises(DatabaseInUse) as refused:
        SingleProcessLock(database).acquire()
    assert str(holder.pid) in str(refused.value)
    holder.kill()
    holder.wait()
    lock = SingleProcessLock(database)
    lock.acquire()  # the kernel let go with the process
    lock.release()
