"""Upgrade a config written by an older version, as mautrix bridges do, but generically.

mautrix's ``do_update`` builds the new file from the example and copies each key the admin
set, one ``copy()`` call per key; a missed call silently resets a setting, and the admin's own
comments are lost. Here the admin's file is the base: every key of the example that the file
lacks is inserted, as the example's own lines (its comment, its default, its nested keys),
after the key that precedes it in the example. Nothing the admin wrote is touched, so nothing
can revert. Keys the example does not have are reported, never removed.

Renamed or moved keys go through :data:`MIGRATIONS`, an explicit table applied first (oldest
first): each entry takes its old value out of the file, and puts it at its new place once the
new key has been inserted from the example.

The inserted lines are placed by text, so that the admin's comments and layout stay exactly
as they were; if that ever fails to parse to the expected tree, the keys are inserted into the
parsed tree instead (values right, the new keys' comments missing), never lost.
"""

from __future__ import annotations

import copy
import functools
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError


class UnreadableConfig(ValueError):
    """The file is not YAML, or not a mapping of sections."""


@dataclass(frozen=True)
class Layout:
    """How a file indents (ruamel's terms), so that what is written back looks as before."""

    mapping: int = 4
    sequence: int = 4
    offset: int = 2  # of the dash, within ``sequence``


def layout(text: str) -> Layout:
    """The indentation of the first nested mapping and block sequence of ``text``."""
    mapping = sequence = offset = None
    lines = [line for line in text.splitlines() if line.strip() and not _is_comment(line)]
    for line, below in zip(lines, lines[1:], strict=False):
        if not line.rstrip().endswith(":") or line.lstrip().startswith("- "):
            continue
        step = _indent(below) - _indent(line)
        if below.lstrip().startswith("- ") and offset is None and step >= 0:
            offset = step
            sequence = step + len(below.lstrip()) - len(below.lstrip()[1:].lstrip())
        elif not below.lstrip().startswith("- ") and step > 0 and mapping is None:
            mapping = step
    default = Layout()
    return Layout(
        mapping or default.mapping,
        sequence if sequence is not None else (mapping or default.sequence),
        offset if offset is not None else default.offset,
    )


def make_yaml(shape: Layout = Layout()) -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long value the admin wrote on one line
    yaml.indent(mapping=shape.mapping, sequence=shape.sequence, offset=shape.offset)
    return yaml


def dump(data: Any, shape: Layout = Layout()) -> str:
    out = io.StringIO()
    make_yaml(shape).dump(data, out)
    return out.getvalue()


_yaml = make_yaml


def _get(data: Any, dotted: str) -> tuple[dict[Any, Any], str] | None:
    """The mapping holding ``dotted`` and its last key, if every level above exists."""
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        if not isinstance(node, dict) or not isinstance(node.get(part), dict):
            return None
        node = node[part]
    return (node, last) if isinstance(node, dict) else None


def _has(data: Any, dotted: str) -> bool:
    found = _get(data, dotted)
    return found is not None and found[1] in found[0]


def _set(data: Any, dotted: str, value: Any) -> bool:
    found = _get(data, dotted)
    if found is None:
        return False
    found[0][found[1]] = value
    return True


# -- renamed and moved keys -----------------------------------------------------------------


class Migration(Protocol):
    @property
    def description(self) -> str:
        """What moved where, for the admin."""

    def take(self, data: CommentedMap) -> dict[str, Any] | None:
        """Remove the old key(s) from ``data`` and return ``{new dotted key: value}`` to set
        once the new keys exist; None if the file does not have the old form."""


@dataclass(frozen=True)
class Move:
    """``old`` was renamed to (or moved to) ``new``; the value moves, the old key goes."""

    old: str
    new: str

    @property
    def description(self) -> str:
        return f"{self.old} to {self.new}"

    def take(self, data: CommentedMap) -> dict[str, Any] | None:
        old, new = _get(data, self.old), _get(data, self.new)
        if old is None or old[1] not in old[0] or (new is not None and new[1] in new[0]):
            return None
        return {self.new: old[0].pop(old[1])}


@dataclass(frozen=True)
class LoggingLevelToDictConfig:
    """Until 0.1 ``logging`` held only ``level``; now it is a standard dictConfig."""

    description: str = "logging.level to logging.root.level (logging is now a dictConfig)"

    def take(self, data: CommentedMap) -> dict[str, Any] | None:
        section = data.get("logging")
        if not isinstance(section, dict) or "level" not in section or "version" in section:
            return None
        level = str(section["level"]).upper()
        del data["logging"]
        if level == "DEBUG":  # the libraries were only quieted above DEBUG
            return {"logging.root.level": level, "logging.loggers": {}}
        return {"logging.root.level": level}


#: oldest first; an entry stays as long as files of that age may be upgraded
MIGRATIONS: tuple[Migration, ...] = (LoggingLevelToDictConfig(),)


# -- inserting the keys the file lacks --------------------------------------------------------


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _end_of_block(lines: list[str], key_line: int, col: int) -> int:
    """The last line of the value of the key on ``key_line`` (comments and blank lines after
    it belong to what follows)."""
    last = key_line
    for j in range(key_line + 1, len(lines)):
        text = lines[j].strip()
        if not text or text.startswith("#"):
            continue
        indent = _indent(lines[j])
        if indent > col or (indent == col and (text == "-" or text.startswith("- "))):
            last = j
        else:
            break
    return last


def _example_block(lines: list[str], node: CommentedMap, key: str, col: int) -> list[str]:
    """The example's lines for ``key``: the comment right above it, the key, its value."""
    line, ex_col = node.lc.key(key)
    start = line
    while start > 0 and _is_comment(lines[start - 1]):
        start -= 1
    end = _end_of_block(lines, line, ex_col)
    block = []
    for text in lines[start : end + 1]:
        if not text.strip():
            block.append("\n")
        elif _indent(text) >= ex_col:
            block.append(" " * (col + _indent(text) - ex_col) + text.lstrip(" "))
        else:
            block.append(text)
    return block


def _insertion_point(
    lines: list[str], node: CommentedMap, before: list[str]
) -> tuple[int, int] | None:
    """Where a key goes: after the block of the last key in ``before`` the file has, or at
    the top of ``node`` (above the comment of its first key). None: text cannot do it."""
    if not len(node) or node.fa.flow_style():
        return None
    if before:
        line, col = node.lc.key(before[-1])
        return _end_of_block(lines, line, col) + 1, col
    line, col = node.lc.key(next(iter(node)))
    while line > 0 and _is_comment(lines[line - 1]):
        line -= 1
    return line, col


@dataclass
class _Fill:
    text: str
    added: list[str] = field(default_factory=list)
    tree_only: list[str] = field(default_factory=list)  # could not be placed by text


def _walk_missing(
    node: CommentedMap, example: CommentedMap, free_form: frozenset[str], prefix: str = ""
) -> Iterable[tuple[CommentedMap, CommentedMap, str, list[str], str]]:
    """Each example key ``node`` lacks: (node, example node, key, keys before it, dotted)."""
    keys = list(example)
    for i, key in enumerate(keys):
        dotted = prefix + key
        value, default = node.get(key), example[key]
        empty = value is None and isinstance(default, CommentedMap)  # a section left empty
        if key in node and not empty:
            if (
                isinstance(default, CommentedMap)
                and isinstance(value, CommentedMap)
                and dotted not in free_form
            ):
                yield from _walk_missing(value, default, free_form, dotted + ".")
            continue
        yield node, example, key, [k for k in keys[:i] if k in node], dotted


def _fill_text(
    text: str, data: CommentedMap, example_text: str, free_form: frozenset[str]
) -> _Fill:
    """``text`` (parsed: ``data``) with the example's lines for every key it lacks."""
    example = _example(example_text)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    ex_lines = example_text.splitlines(keepends=True)
    inserts: dict[int, list[str]] = {}
    fill = _Fill(text)
    for node, ex_node, key, before, dotted in _walk_missing(data, example, free_form):
        fill.added.append(dotted)
        where = None if key in node else _insertion_point(lines, node, before)
        if where is None:
            fill.tree_only.append(dotted)
            continue
        at, col = where
        block = _example_block(ex_lines, ex_node, key, col)
        if "." not in dotted:  # a section: blank lines between sections, as in the example
            block = ["\n", *block] if before else [*block, "\n"]
        inserts.setdefault(at, []).extend(block)
    for at in sorted(inserts, reverse=True):
        lines[at:at] = inserts[at]
    if inserts:  # a section added at the end leaves no blank lines after it
        fill.text = "".join(lines).rstrip("\n") + "\n"
    return fill


def _fill_tree(
    data: CommentedMap, example: CommentedMap, only: set[str] | None, free_form: frozenset[str]
) -> None:
    """Insert the missing keys into the parsed tree (without their comments)."""
    for node, ex_node, key, before, dotted in list(_walk_missing(data, example, free_form)):
        if only is not None and dotted not in only:
            continue
        if key in node:  # an empty section
            node[key] = copy.deepcopy(ex_node[key])
            continue
        position = list(node).index(before[-1]) + 1 if before else 0
        node.insert(position, key, copy.deepcopy(ex_node[key]))


def _unknown(
    node: Any, example: Any, free_form: frozenset[str], prefix: str = ""
) -> Iterable[str]:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if key not in example:
            yield dotted
        elif (
            isinstance(value, dict) and isinstance(example[key], dict) and dotted not in free_form
        ):
            yield from _unknown(value, example[key], free_form, dotted + ".")


# -- the whole upgrade ------------------------------------------------------------------------


@dataclass
class Upgraded:
    """The upgraded file (``text``, and ``data`` parsed from it) and what changed."""

    text: str
    data: CommentedMap
    added: list[str]  # dotted keys filled in from the example
    unknown: list[str]  # dotted keys the example does not have (kept)
    migrated: list[str]  # descriptions of the migrations applied
    layout: Layout = Layout()  # the file's indentation, for writing it back


@functools.lru_cache(maxsize=4)
def _example(example_text: str) -> CommentedMap:
    """The parsed example, read only (inserted parts are deep copies)."""
    return _yaml().load(example_text)


def _load(text: str, path: Path | None) -> CommentedMap:
    try:
        data = _yaml().load(text)
    except YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UnreadableConfig(f"not valid YAML{where}: {problem}") from None
    if data is None:
        return CommentedMap()
    if not isinstance(data, CommentedMap):
        raise UnreadableConfig("the file must be a YAML mapping of sections (see the example)")
    return data


def upgrade(
    text: str,
    example_text: str,
    path: Path | None = None,
    *,
    free_form: frozenset[str] = frozenset(),
    migrations: tuple[Migration, ...] = MIGRATIONS,
) -> Upgraded:
    """Bring ``text`` (a config file) up to the keys of ``example_text``.

    ``free_form`` names mappings whose keys are the admin's (topics, the logging dictConfig):
    present, they are neither completed nor checked for unknown keys.

    Raises:
        UnreadableConfig: the file is not YAML or not a mapping.
    """
    data = _load(text, path)
    if not len(data):
        text = example_text  # an empty file: the example, as for a new one
        data = _load(text, path)
    shape = layout(text)
    moved: dict[str, Any] = {}
    migrated: list[str] = []
    for migration in migrations:
        taken = migration.take(data)
        if taken is not None:
            moved.update(taken)
            migrated.append(migration.description)
    if migrated:
        text = dump(data, shape)
        data = _load(text, path)  # the lines moved
    example = _example(example_text)
    fill = _fill_text(text, data, example_text, free_form)
    tree_only: set[str] | None = set(fill.tree_only)
    if fill.text != text:
        try:
            filled = _yaml().load(fill.text)
            placed = all(_has(filled, d) for d in fill.added if d not in fill.tree_only)
        except YAMLError:
            placed = False
        if placed:
            text, data = fill.text, filled
        else:
            tree_only = None  # every missing key into the tree instead
    if tree_only != set() or moved:
        _fill_tree(data, example, tree_only, free_form)
        for dotted, value in moved.items():
            _set(data, dotted, value)
        text = dump(data, shape)
        data = _load(text, path)
    return Upgraded(
        text=text,
        data=data,
        added=fill.added,
        unknown=list(_unknown(data, example, free_form)),
        migrated=migrated,
        layout=shape,
    )
