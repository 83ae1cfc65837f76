"""The real clock behind the core's Clock port."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str:
    """The machine's boot id (CLOCK_MONOTONIC counts from that boot, for every process);
    elsewhere one of our own, so no other process takes our monotonic times for its own."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return f"process-{secrets.token_hex(8)}"


class WallClock:
    def __init__(self) -> None:
        self.monotonic_source = _boot_id()

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
