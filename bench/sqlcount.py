"""Count the SQL statements a process runs through mautrix's database layer.

:func:`install` wraps ``execute``, ``executemany``, ``fetch``, ``fetchrow`` and ``fetchval`` of
mautrix's ``LoggingConnection``, the connection every call goes through, whether made on the
``Database`` (``db.fetch(...)``) or on a connection held for a transaction (``conn.fetchrow``).
Each statement is counted under its text with whitespace folded. Nothing else changes: the
wrapped method runs as before.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Any, Callable

from mautrix.util.async_db.connection import LoggingConnection

METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval")

#: statement text (whitespace folded) → how many times it ran since :func:`install`
STATEMENTS: Counter[str] = Counter()

_installed = False


def install() -> None:
    """Start counting (idempotent)."""
    global _installed
    if _installed:
        return
    for name in METHODS:
        setattr(LoggingConnection, name, _counted(getattr(LoggingConnection, name)))
    _installed = True


def _counted(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def counted(self: LoggingConnection, query: str, *args: Any, **kwargs: Any) -> Any:
        STATEMENTS[" ".join(query.split())] += 1
        return await method(self, query, *args, **kwargs)

    return counted


def snapshot() -> dict[str, int]:
    return dict(STATEMENTS)


def difference(after: dict[str, int], before: dict[str, int]) -> Counter[str]:
    """The statements run between two snapshots."""
    return Counter({q: n - before.get(q, 0) for q, n in after.items() if n > before.get(q, 0)})


_CONVERSATIONS = re.compile(r"\bconversations\b", re.IGNORECASE)


def touches_conversations(statement: str) -> bool:
    """Whether the statement names the ``conversations`` table."""
    return bool(_CONVERSATIONS.search(statement))
