"""bridge/ must not import Matrix, HTTP or database libraries: its rules are tested without I/O."""

from __future__ import annotations

import ast
from pathlib import Path

FORBIDDEN = {
    "mautrix",
    "aiohttp",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "sqlalchemy",
    "nio",
    "psycopg",
    "psycopg2",
    "alembic",
    "jinja2",
    "aiohttp_jinja2",
    "prometheus_client",  # the core measures through the DeskMetrics port
}
BRIDGE = Path(__file__).resolve().parents[2] / "bridge"


def test_bridge_imports_no_matrix_http_or_sql_library():
    offences = []
    modules = list(BRIDGE.rglob("*.py"))
    assert len(modules) >= 5
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offences += [
                f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in FORBIDDEN
            ]
    assert not offences, offences
