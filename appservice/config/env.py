"""Environment variables override config keys, so secrets can stay out of the file.

``SWITCHBOARD_<SECTION>__<KEY>``: the key's dotted path in capitals, levels separated by two
underscores (``SWITCHBOARD_DATABASE__URL``, ``SWITCHBOARD_APPSERVICE__AS_TOKEN``,
``SWITCHBOARD_LOGGING__ROOT__LEVEL``). A value is taken as it is for a text key (a token that
looks like a number stays text); as a YAML scalar for a number or true/false; as a YAML list
(``[a, b]``) or comma-separated for a list; as a YAML mapping (``{a: b}``) for a mapping. Keys
inside the free-form mappings (the topics, the logging dictConfig) can be reached one level at
a time too (``SWITCHBOARD_PORTAL__TOPICS__SALES=Sales``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

PREFIX = "SWITCHBOARD_"
#: variables of this prefix that are not settings (the test suite's, the fault tests' hook)
NOT_SETTINGS = ("SWITCHBOARD_TEST_", "SWITCHBOARD_FAULT_")


def env_name(dotted: str) -> str:
    """The environment variable that overrides ``dotted``."""
    return PREFIX + dotted.upper().replace(".", "__")


@dataclass
class EnvOverrides:
    applied: list[str] = field(default_factory=list)  # variable names, never their values
    sources: dict[str, str] = field(default_factory=dict)  # dotted key -> variable name
    unknown: list[str] = field(default_factory=list)  # notes about variables that set nothing
    problems: list[str] = field(default_factory=list)


def _yaml_value(raw: str) -> Any:
    return YAML(typ="safe", pure=True).load(raw)


def parse_value(raw: str, hint: Any) -> Any:
    """``raw`` as the key's type needs it (checked later, with the file's values).

    Raises:
        ValueError: a list or mapping that is not valid YAML.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):  # e.g. one secret or a list of them
        alternatives = typing.get_args(hint)
        listed = next((a for a in alternatives if typing.get_origin(a) is tuple), None)
        if listed is not None and raw.lstrip().startswith("["):
            return parse_value(raw, listed)
        hint = str if str in alternatives else alternatives[0]
    if hint is str:
        return raw
    if hint is Any:
        try:
            return _yaml_value(raw)
        except YAMLError:
            return raw  # e.g. a format string starting with %
    try:
        if origin is tuple:
            if raw.lstrip().startswith("["):
                return _yaml_value(raw)
            return [part.strip() for part in raw.split(",") if part.strip()]
        return _yaml_value(raw)
    except YAMLError as e:
        problem = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"not a valid YAML value ({problem})") from None


def _hint_for(dotted: str, keys: Mapping[str, Any]) -> Any:
    if dotted in keys:
        return keys[dotted]
    for key, hint in keys.items():
        if typing.get_origin(hint) is dict and dotted.startswith(key + "."):
            return typing.get_args(hint)[1]
    return None


def _guess(name: str, keys: Mapping[str, Any]) -> str:
    for dotted in keys:
        if name == env_name(dotted).replace("__", "_"):
            return f" (did you mean {env_name(dotted)}?)"
    return ""


def apply_env(
    data: dict[str, Any], keys: Mapping[str, Any], env: Mapping[str, str]
) -> EnvOverrides:
    """Set every ``SWITCHBOARD_*`` variable of ``env`` into ``data`` (plain dicts).

    ``keys``: every dotted key and its type; a mapping type admits keys below it.
    """
    result = EnvOverrides()
    for name in sorted(env):
        if not name.startswith(PREFIX) or name.startswith(NOT_SETTINGS):
            continue
        parts = name[len(PREFIX) :].lower().split("__")
        dotted = ".".join(parts)
        hint = _hint_for(dotted, keys) if all(parts) else None
        if hint is None:
            result.unknown.append(
                f"environment variable {name} is not a setting{_guess(name, keys)}; ignored"
            )
            continue
        try:
            value = parse_value(env[name], hint)
        except ValueError as e:
            result.problems.append(f"{dotted} (from {name}): {e}")
            continue
        node: Any = data
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                result.problems.append(
                    f"{dotted} (from {name}): {part} in the file is not a mapping"
                )
                break
        else:
            node[parts[-1]] = value
            result.sources[dotted] = name
            result.applied.append(name)
    return result
