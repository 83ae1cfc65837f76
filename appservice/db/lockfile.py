"""SQLite is one process's database: a lock file next to it keeps a second process out."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class DatabaseInUse(RuntimeError):
    """Another process has the SQLite database open."""


class SingleProcessLock:
    """An exclusive ``flock`` on ``<database>.lock``, held while Switchboard runs.

    The kernel lets go when the process ends, however it ends (a SIGKILL included), so a stale
    lock file never keeps the desk from starting again."""

    def __init__(self, database: str) -> None:
        self.path = Path(f"{database}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DatabaseInUse(
                f"the SQLite database {self.path.with_suffix('')} is in use by process "
                f"{holder}: SQLite serves one Switchboard process. Stop that one, or use "
                "PostgreSQL (database.url: postgresql://…) to run several."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
