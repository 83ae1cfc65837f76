"""Switchboard's YAML config, parsed once at start-up into frozen per-section dataclasses.

The commented ``example-config.yaml`` is the one source of the keys, their defaults and their
comments. A file written by an older version is upgraded from it (:mod:`.upgrade`: keys
added with their comments, renamed keys moved, unknown keys reported), ``SWITCHBOARD_*``
environment variables override any key (:mod:`.env`), and :func:`parse` checks every key
against the types of the dataclasses in :mod:`.model`, reporting every bad key at once.
"""

from __future__ import annotations

from .files import generate, load, registration, write_private, write_registration
from .model import (
    EXAMPLE_CONFIG,
    GENERATE,
    SECRETS,
    SECTIONS,
    AppserviceConfig,
    Config,
    ConfigError,
    DatabaseConfig,
    DeskConfig,
    HomeserverConfig,
    MetricsConfig,
    Note,
    PortalConfig,
    RoutingConfig,
)
from .parse import parse, plain, schema

__all__ = [
    "EXAMPLE_CONFIG",
    "GENERATE",
    "SECRETS",
    "SECTIONS",
    "AppserviceConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "DeskConfig",
    "HomeserverConfig",
    "MetricsConfig",
    "Note",
    "PortalConfig",
    "RoutingConfig",
    "generate",
    "load",
    "parse",
    "plain",
    "registration",
    "schema",
    "write_private",
    "write_registration",
]
