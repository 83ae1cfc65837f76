"""The real clock behind the core's Clock port."""

from __future__ import annotations

import time


class WallClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
