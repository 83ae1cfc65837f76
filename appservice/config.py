"""Switchboard's YAML config, parsed once at start-up into frozen per-section dataclasses."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

EXAMPLE_CONFIG = Path(__file__).with_name("example-config.yaml")
GENERATE = "generate"


class ConfigError(Exception):
    """The configuration is unusable; the message says which key and what to write."""


@dataclass(frozen=True)
class HomeserverConfig:
    address: str
    domain: str
    retry_max_delay: float = 30.0  # longest wait between two tries at start-up (seconds)


@dataclass(frozen=True)
class AppserviceConfig:
    address: str
    hostname: str
    port: int
    id: str
    bot_username: str
    bot_displayname: str
    user_prefix: str
    as_token: str
    hs_token: str


@dataclass(frozen=True)
class PortalConfig:
    hostname: str
    port: int
    public_url: str
    allowed_origins: tuple[str, ...]
    org_name: str
    topics: dict[str, str]
    trusted_proxies: tuple[str, ...]
    starts_per_minute: int
    secret: tuple[str, ...]  # the first signs, every one verifies (rotation)
    messages_per_minute: int
    message_burst: int
    typing_per_minute: int
    typing_burst: int


@dataclass(frozen=True)
class RoutingConfig:
    capacity: int
    invite_timeout: float
    abandon_after: float


@dataclass(frozen=True)
class Config:
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database_url: str
    portal: PortalConfig
    routing: RoutingConfig
    admins: tuple[str, ...]
    log_level: str
    database_retry_max_delay: float = 30.0  # longest wait between two tries at start-up
    path: Path | None = field(default=None, compare=False)

    @property
    def bot_mxid(self) -> str:
        return f"@{self.appservice.bot_username}:{self.homeserver.domain}"

    def puppet_mxid(self, visitor_id: str) -> str:
        return f"@{self.appservice.user_prefix}visitor_{visitor_id}:{self.homeserver.domain}"


def _yaml() -> YAML:
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.indent(mapping=4, sequence=4, offset=2)
    return yaml


def _get(data: Any, dotted: str, kind: type | tuple[type, ...]) -> Any:
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ConfigError(f"Missing key {dotted!r}; see example-config.yaml for its meaning.")
        node = node[part]
    if kind is float and isinstance(node, int) and not isinstance(node, bool):
        node = float(node)
    if not isinstance(node, kind) or (kind is int and isinstance(node, bool)):
        raise ConfigError(f"Key {dotted!r} has the wrong type ({type(node).__name__}).")
    return node


def _secrets(value: str | list[Any]) -> tuple[str, ...]:
    """``portal.secret``: one secret, or a list while rotating (the first signs)."""
    listed = [value] if isinstance(value, str) else list(value)
    if not listed or not all(isinstance(v, str) for v in listed):
        raise ConfigError("portal.secret must be a secret or a list of secrets (newest first).")
    return tuple(listed)


def parse(data: Any, path: Path | None = None) -> Config:
    """Build a :class:`Config` from parsed YAML, with a clear error for any bad key."""
    s = lambda key: str(_get(data, key, str))  # noqa: E731
    topics = _get(data, "portal.topics", dict)
    if not topics or not all(isinstance(k, str) and isinstance(v, str) for k, v in topics.items()):
        raise ConfigError("portal.topics must map at least one topic id to a label.")
    config = Config(
        homeserver=HomeserverConfig(
            s("homeserver.address").rstrip("/"),
            s("homeserver.domain"),
            _get(data, "homeserver.retry_max_delay", float),
        ),
        appservice=AppserviceConfig(
            address=s("appservice.address").rstrip("/"),
            hostname=s("appservice.hostname"),
            port=_get(data, "appservice.port", int),
            id=s("appservice.id"),
            bot_username=s("appservice.bot_username"),
            bot_displayname=s("appservice.bot_displayname"),
            user_prefix=s("appservice.user_prefix"),
            as_token=s("appservice.as_token"),
            hs_token=s("appservice.hs_token"),
        ),
        database_url=s("database.url"),
        portal=PortalConfig(
            hostname=s("portal.hostname"),
            port=_get(data, "portal.port", int),
            public_url=s("portal.public_url").rstrip("/"),
            allowed_origins=tuple(
                str(o).rstrip("/") for o in _get(data, "portal.allowed_origins", list)
            ),
            org_name=s("portal.org_name"),
            topics={str(k): str(v) for k, v in topics.items()},
            trusted_proxies=tuple(str(p) for p in _get(data, "portal.trusted_proxies", list)),
            starts_per_minute=_get(data, "portal.starts_per_minute", int),
            secret=_secrets(_get(data, "portal.secret", (str, list))),
            messages_per_minute=_get(data, "portal.messages_per_minute", int),
            message_burst=_get(data, "portal.message_burst", int),
            typing_per_minute=_get(data, "portal.typing_per_minute", int),
            typing_burst=_get(data, "portal.typing_burst", int),
        ),
        routing=RoutingConfig(
            capacity=_get(data, "routing.capacity", int),
            invite_timeout=_get(data, "routing.invite_timeout", float),
            abandon_after=_get(data, "routing.abandon_after", float),
        ),
        admins=tuple(str(a) for a in _get(data, "desk.admins", list)),
        log_level=s("logging.level").upper(),
        database_retry_max_delay=_get(data, "database.retry_max_delay", float),
        path=path,
    )
    for key, value in (
        ("appservice.as_token", config.appservice.as_token),
        ("appservice.hs_token", config.appservice.hs_token),
        *(("portal.secret", secret) for secret in config.portal.secret),
    ):
        if value == GENERATE or len(value) < 16:
            raise ConfigError(f"{key} is not set: run `switchboard generate` to create it.")
    for key in ("messages_per_minute", "message_burst", "typing_per_minute", "typing_burst"):
        if getattr(config.portal, key) < 1:
            raise ConfigError(f"portal.{key} must be at least 1.")
    if config.routing.capacity < 1 or config.routing.invite_timeout <= 0:
        raise ConfigError("routing.capacity must be ≥ 1 and routing.invite_timeout > 0.")
    for key, delay in (
        ("homeserver.retry_max_delay", config.homeserver.retry_max_delay),
        ("database.retry_max_delay", config.database_retry_max_delay),
    ):
        if delay <= 0:
            raise ConfigError(f"{key} must be more than 0 seconds.")
    if config.routing.abandon_after < 10:
        raise ConfigError("routing.abandon_after must be at least 10 seconds.")
    return config


def load(path: Path) -> Config:
    if not path.exists():
        raise ConfigError(
            f"No config at {path}. Run `switchboard generate -c {path} -r registration.yaml` "
            "to create it from the commented example, then edit it."
        )
    return parse(_yaml().load(path.read_text()), path)


def generate(
    config_path: Path, registration_path: Path, overrides: dict[str, Any] | None = None
) -> Config:
    """Fill generated secrets into the config (creating it from the example if missing) and
    write the homeserver registration. Keeps every key the admin already set."""
    yaml = _yaml()
    source = config_path if config_path.exists() else EXAMPLE_CONFIG
    data = yaml.load(source.read_text())
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    for section, key in (
        ("appservice", "as_token"),
        ("appservice", "hs_token"),
        ("portal", "secret"),
    ):
        if data[section][key] in (GENERATE, None, ""):
            data[section][key] = secrets.token_urlsafe(32)
    config_path.parent.mkdir(parents=True, exist_ok=True)
    # it holds the tokens and the portal secret: only its owner reads it, from the first byte
    with os.fdopen(os.open(config_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        yaml.dump(data, f)
    config_path.chmod(0o600)  # an older config may have been written 0644
    config = parse(data, config_path)
    write_registration(config, registration_path)
    return config


def registration(config: Config) -> dict[str, Any]:
    domain = config.homeserver.domain.replace(".", r"\.")
    prefix = config.appservice.user_prefix
    return {
        "id": config.appservice.id,
        "url": config.appservice.address,
        "as_token": config.appservice.as_token,
        "hs_token": config.appservice.hs_token,
        "sender_localpart": config.appservice.bot_username,
        "rate_limited": False,
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "namespaces": {
            "users": [{"regex": f"@{prefix}.*:{domain}", "exclusive": True}],
            "aliases": [{"regex": f"#{prefix}.*:{domain}", "exclusive": True}],
            "rooms": [],
        },
    }


def write_registration(config: Config, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        _yaml().dump(registration(config), f)
    path.chmod(0o600)
