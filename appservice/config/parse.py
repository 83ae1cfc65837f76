"""Parse the YAML into the dataclasses of ``model``, reporting every bad key at once."""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

from yarl import URL

from ..db.url import parse_database_url, resolve_sqlite_url
from .model import GENERATE, LOGGING, SECRETS, SECTIONS, Config, ConfigError, Note


class _Wrong(Exception):
    """A value is not of the expected type; the message says what was expected."""


def _describe(value: Any, secret: bool) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        kind = "true/false"
    elif isinstance(value, (int, float)):
        kind = "a number"
    elif isinstance(value, str):
        kind = "text"
    elif isinstance(value, Mapping):
        kind = "a mapping"
    elif isinstance(value, list):
        kind = "a list"
    else:
        kind = type(value).__name__
    if secret:
        return kind
    shown = repr(plain(value))
    return f"{shown if len(shown) <= 60 else shown[:57] + '...'} ({kind})"


def _expected(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is str:
        return "text"
    if hint is int:
        return "a whole number"
    if hint is float:
        return "a number"
    if hint is bool:
        return "true or false"
    if origin is tuple:
        return f"a list of {_expected(typing.get_args(hint)[0])}"
    if origin is dict:
        return f"a mapping of {_expected(typing.get_args(hint)[1])}"
    if origin in (Union, types.UnionType):
        return " or ".join(_expected(a) for a in typing.get_args(hint))
    return "a value"


def plain(value: Any) -> Any:
    """ruamel's commented containers as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # ruamel's quoted/scalar string subclasses
    return value


def convert(value: Any, hint: Any) -> Any:
    """``value`` as the type ``hint`` asks for, or :class:`_Wrong`."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return plain(value)
    if hint is str:
        if isinstance(value, str):
            return str(value)
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif origin is tuple:
        if isinstance(value, list):
            try:
                return tuple(convert(v, typing.get_args(hint)[0]) for v in value)
            except _Wrong:
                pass  # said of the whole list below
    elif origin is dict:
        if isinstance(value, Mapping):
            key_hint, value_hint = typing.get_args(hint)
            try:
                return {convert(k, key_hint): convert(v, value_hint) for k, v in value.items()}
            except _Wrong:
                pass
    elif origin in (Union, types.UnionType):
        for alternative in typing.get_args(hint):
            try:
                return convert(value, alternative)
            except _Wrong:
                continue
    raise _Wrong(_expected(hint))


@functools.cache
def section_fields(cls: type) -> Mapping[str, Any]:
    """A section dataclass's fields and their types."""
    hints = typing.get_type_hints(cls)
    return types.MappingProxyType({f.name: hints[f.name] for f in dataclasses.fields(cls)})


@functools.cache
def schema() -> Mapping[str, Any]:
    """Every key's dotted path and its type (``logging``: a free-form mapping)."""
    keys: dict[str, Any] = {
        f"{name}.{key}": hint
        for name, cls in SECTIONS.items()
        for key, hint in section_fields(cls).items()
    }
    keys[LOGGING] = dict[str, Any]
    return types.MappingProxyType(keys)


@functools.cache
def free_form() -> frozenset[str]:
    """The mappings whose keys are the admin's (the topics, the logging dictConfig)."""
    return frozenset(k for k, hint in schema().items() if typing.get_origin(hint) is dict)


class _Reader:
    def __init__(self, data: Any, sources: Mapping[str, str]) -> None:
        self.data = data
        self.sources = sources
        self.problems: list[str] = []

    def problem(self, dotted: str, text: str) -> None:
        source = self.sources.get(dotted)
        where = f"{dotted} (from {source})" if source else dotted
        self.problems.append(f"{where}: {text}")

    def value(self, dotted: str, hint: Any) -> Any:
        node = self.data
        for i, part in enumerate(dotted.split(".")):
            if not isinstance(node, Mapping):
                parent = ".".join(dotted.split(".")[:i])
                self.problem(parent, f"must be a mapping of keys, not {_describe(node, False)}")
                raise _Wrong
            if part not in node:
                self.problem(dotted, "missing; see example-config.yaml for its meaning")
                raise _Wrong
            node = node[part]
        try:
            return convert(node, hint)
        except _Wrong as e:
            self.problem(dotted, f"expected {e}, got {_describe(node, dotted in SECRETS)}")
            raise

    def section(self, name: str, cls: type) -> Any:
        values: dict[str, Any] = {}
        failed = False
        for key, hint in section_fields(cls).items():
            try:
                values[key] = self.value(f"{name}.{key}", hint)
            except _Wrong:
                failed = True
                if not isinstance(self.data.get(name), Mapping):
                    return None  # one problem for the section, not one per key
        return None if failed else cls(**values)


_LOCALPART = re.compile(r"^[a-z0-9._=/+-]+$")
_MXID = re.compile(r"^@[^:\s]+:\S+$")


def _check(reader: _Reader, sections: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Checks a type cannot express; returns the values they normalise."""
    problem = reader.problem
    out: dict[str, Any] = {}
    hs, app, db, portal, routing, desk, directory, metrics = (sections[name] for name in SECTIONS)
    for dotted, url in (
        ("homeserver.address", hs and hs.address),
        ("appservice.address", app and app.address),
        ("portal.public_url", portal and portal.public_url),
    ):
        if url is not None and not _http_url(url):
            problem(dotted, f"expected an http:// or https:// address, got {url!r}")
    for dotted, port in (
        ("appservice.port", app and app.port),
        ("portal.port", portal and portal.port),
        ("metrics.port", metrics and metrics.port),
    ):
        if port is not None and not 1 <= port <= 65535:
            problem(dotted, f"expected a port number from 1 to 65535, got {port}")
    if hs is not None and not hs.domain.strip():
        problem("homeserver.domain", "must not be empty")
    if app is not None:
        for key in ("bot_username", "user_prefix"):
            if not _LOCALPART.match(getattr(app, key)):
                problem(
                    f"appservice.{key}",
                    "may contain only a-z, 0-9 and . _ = - / + (a Matrix user id's localpart)",
                )
    for dotted in SECRETS:
        section, key = dotted.split(".")
        value = getattr(sections[section], key) if sections[section] is not None else None
        for one in value if isinstance(value, tuple) else (value,):
            if one is not None and (one == GENERATE or len(one) < 16):
                env = "SWITCHBOARD_" + dotted.upper().replace(".", "__")
                problem(
                    dotted,
                    "is not set: run `switchboard generate` to create it "
                    f"(or set {env} in the environment; at least 16 characters)",
                )
                break
    if db is not None:
        try:
            resolved = resolve_sqlite_url(db.url, base_dir)
            parse_database_url(resolved.url)
            out["database_url"] = resolved.url
            if resolved.note:
                out["database_note"] = resolved.note
        except ValueError as e:
            problem("database.url", str(e))
    if portal is not None:
        if not portal.topics:
            problem("portal.topics", "must map at least one topic id to a label")
        for key in (
            "starts_per_minute",
            "messages_per_minute",
            "message_burst",
            "typing_per_minute",
            "typing_burst",
            "searches_per_minute",
            "search_burst",
        ):
            if getattr(portal, key) < 1:
                problem(f"portal.{key}", "must be at least 1")
        if isinstance(portal.secret, tuple) and not portal.secret:
            problem("portal.secret", "must be a secret or a list of secrets (newest first)")
        for origin in portal.allowed_origins:
            if not _http_url(origin):
                problem("portal.allowed_origins", f"{origin!r} is not an http(s) origin")
        for proxy in portal.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                problem("portal.trusted_proxies", f"{proxy!r} is not an address or network")
    for dotted, section in (("homeserver.retry_max_delay", hs), ("database.retry_max_delay", db)):
        if section is not None and section.retry_max_delay <= 0:
            problem(dotted, "must be more than 0 seconds")
    if routing is not None:
        if routing.capacity < 1:
            problem("routing.capacity", "must be at least 1")
        if routing.invite_timeout <= 0:
            problem("routing.invite_timeout", "must be more than 0 seconds")
        if routing.abandon_after < 10:
            problem("routing.abandon_after", "must be at least 10 seconds")
    if directory is not None:
        if not _LOCALPART.match(directory.call_sign_alias_prefix):
            problem(
                "directory.call_sign_alias_prefix",
                "may contain only a-z, 0-9 and . _ = - / + (the start of an alias)",
            )
        if directory.max_open_per_server < 1:
            problem("directory.max_open_per_server", "must be at least 1")
        if directory.proof_of_life < 60:
            problem("directory.proof_of_life", "must be at least 60 seconds")
    if desk is not None:
        for admin in desk.admins:
            if not _MXID.match(admin):
                problem("desk.admins", f"{admin!r} is not a Matrix user id (@name:server)")
    return out


def _http_url(text: str) -> bool:
    try:
        url = URL(text)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def parse(
    data: Any,
    path: Path | None = None,
    *,
    sources: Mapping[str, str] | None = None,
    notes: tuple[Note, ...] = (),
) -> Config:
    """Build a :class:`Config` from parsed YAML (upgraded and overridden already).

    Raises:
        ConfigError: naming every bad key with its path and why.
    """
    reader = _Reader(data, sources or {})
    if not isinstance(data, Mapping):
        raise ConfigError("the file must be a YAML mapping of sections (see example-config.yaml)")
    sections = {name: reader.section(name, cls) for name, cls in SECTIONS.items()}
    try:
        logging_config = reader.value(LOGGING, dict[str, Any])
    except _Wrong:
        logging_config = None
    base_dir = path.parent if path is not None else Path.cwd()
    checked = _check(reader, sections, base_dir)
    if reader.problems:
        raise ConfigError(reader.problems, path)
    hs, app, db, portal, routing, desk, directory, metrics = (sections[name] for name in SECTIONS)
    if "database_note" in checked:
        notes = (*notes, Note(checked["database_note"], warning=True))
    return Config(
        homeserver=dataclasses.replace(hs, address=hs.address.rstrip("/")),
        appservice=dataclasses.replace(app, address=app.address.rstrip("/")),
        database_url=checked["database_url"],
        database_retry_max_delay=db.retry_max_delay,
        portal=dataclasses.replace(
            portal,
            secret=(portal.secret,) if isinstance(portal.secret, str) else portal.secret,
            public_url=portal.public_url.rstrip("/"),
            allowed_origins=tuple(o.rstrip("/") for o in portal.allowed_origins),
        ),
        routing=routing,
        admins=desk.admins,
        directory=directory,
        metrics=metrics,
        logging=logging_config or {},
        path=path,
        notes=notes,
    )


# -- files ----------------------------------------------------------------------------------
