"""Config keys named by the deploy files' environment variables (``SWITCHBOARD_<SECTION>__<KEY>``,
levels separated by two underscores), checked against the example config, and the ports
the deploy files are written for."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML

from appservice.config import EXAMPLE_CONFIG

PREFIX = "SWITCHBOARD_"
EXAMPLE: dict[str, Any] = YAML(typ="safe").load(EXAMPLE_CONFIG.read_text())
PORTAL_PORT: int = EXAMPLE["portal"]["port"]  # the ports the deploy files are written for
APPSERVICE_PORT: int = EXAMPLE["appservice"]["port"]


def config_key_of(variable: str) -> tuple[str, ...]:
    """The key path ``variable`` sets; fails if the example config has no such key."""
    assert variable.startswith(PREFIX), f"{variable} does not start with {PREFIX}"
    path = tuple(part.lower() for part in variable.removeprefix(PREFIX).split("__"))
    node: Any = EXAMPLE
    for depth, part in enumerate(path):
        assert (
            isinstance(node, dict) and part in node
        ), f"{variable}: the example config has no key {'.'.join(path[: depth + 1])}"
        node = node[part]
    return path
