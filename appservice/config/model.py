"""The config's shape: one frozen dataclass per section, their types the schema.

To add a key: add it, with a comment, to ``example-config.yaml`` and a field of that name to
its section's dataclass here (with its type; a check in ``parse._check`` if the type is not
enough). The upgrade of older files, the environment override and the type check follow from
those two; a test fails if the example and the dataclasses disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLE_CONFIG = Path(__file__).parent.parent / "example-config.yaml"
GENERATE = "generate"
#: keys that must not keep their example value: `switchboard generate` fills them
SECRETS = ("appservice.as_token", "appservice.hs_token", "portal.secret")


class ConfigError(Exception):
    """The configuration is unusable; the message names every bad key and what to write."""

    def __init__(self, problems: list[str] | str, path: Path | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.path = path
        where = f"{path}: " if path is not None else ""
        if len(self.problems) == 1:
            text = f"{where}{self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            text = f"{where}{len(self.problems)} problems in the configuration:\n{listed}"
        super().__init__(text)


@dataclass(frozen=True)
class HomeserverConfig:
    address: str
    domain: str
    retry_max_delay: float  # longest wait between two tries at start-up (seconds)


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
class DatabaseConfig:
    url: str
    retry_max_delay: float  # longest wait between two tries at start-up (seconds)


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
    #: one secret, or several while rotating: the first signs, every one verifies (a single
    #: one is read as a tuple of one)
    secret: tuple[str, ...] | str
    messages_per_minute: int
    message_burst: int
    typing_per_minute: int
    typing_burst: int
    searches_per_minute: int
    search_burst: int


@dataclass(frozen=True)
class RoutingConfig:
    capacity: int
    invite_timeout: float
    abandon_after: float


@dataclass(frozen=True)
class DeskConfig:
    admins: tuple[str, ...]


@dataclass(frozen=True)
class DirectoryConfig:
    call_sign_alias_prefix: str
    max_open_per_server: int
    proof_of_life: float


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool
    hostname: str
    port: int


#: the sections of the file and the dataclass each one is read into; ``logging`` is a standard
#: logging dictConfig, taken as it is (``appservice.logs`` applies it)
SECTIONS: dict[str, type] = {
    "homeserver": HomeserverConfig,
    "appservice": AppserviceConfig,
    "database": DatabaseConfig,
    "portal": PortalConfig,
    "routing": RoutingConfig,
    "desk": DeskConfig,
    "directory": DirectoryConfig,
    "metrics": MetricsConfig,
}
LOGGING = "logging"


@dataclass(frozen=True)
class Note:
    """Something loading the config found worth telling the admin."""

    text: str
    warning: bool = False  # else for information (a default used, an override applied)


@dataclass(frozen=True)
class Config:
    homeserver: HomeserverConfig
    appservice: AppserviceConfig
    database_url: str  # SQLite: made absolute (a relative path is relative to the config file)
    database_retry_max_delay: float
    portal: PortalConfig
    routing: RoutingConfig
    admins: tuple[str, ...]
    directory: DirectoryConfig
    metrics: MetricsConfig
    logging: dict[str, Any] = field(default_factory=dict, compare=False)
    path: Path | None = field(default=None, compare=False)
    #: what loading found worth telling the admin (defaulted keys, unknown keys, overrides);
    #: logged by ``switchboard run`` once logging is set up, printed by ``generate``
    notes: tuple[Note, ...] = field(default=(), compare=False)

    @property
    def bot_mxid(self) -> str:
        return f"@{self.appservice.bot_username}:{self.homeserver.domain}"

    @property
    def log_level(self) -> str:
        """The root logger's level."""
        root = self.logging.get("root")
        level = root.get("level") if isinstance(root, dict) else None
        return str(level or "INFO").upper()

    def puppet_mxid(self, visitor_id: str) -> str:
        return f"@{self.appservice.user_prefix}visitor_{visitor_id}:{self.homeserver.domain}"

    def call_sign_alias(self, sign: str) -> str:
        return f"#{self.directory.call_sign_alias_prefix}{sign}:{self.homeserver.domain}"

    def call_sign_user(self, sign: str) -> str:
        return f"@{self.appservice.user_prefix}cs_{sign}:{self.homeserver.domain}"
