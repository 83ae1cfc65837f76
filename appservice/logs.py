"""Logging from the config's ``logging`` section: a standard dictConfig (as mautrix bridges and
Synapse take it), the conversation id on every line about one, and a JSON formatter.

``switchboard run`` applies the section once the config is loaded; a config without one (or
the demo) gets the example config's section, which is the one source of the defaults.
"""

from __future__ import annotations

import copy
import json
import logging
import logging.config
from datetime import datetime, timezone
from typing import Any

from ruamel.yaml import YAML

from bridge.logcontext import current_conversation

from .config import EXAMPLE_CONFIG, Config, ConfigError, plain

#: attributes every LogRecord has; anything else on a record came from ``extra=``
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "conversation",
    "conversation_tag",
}


class ConversationFilter(logging.Filter):
    """Adds ``conversation`` (the id, or "") and ``conversation_tag`` (" [<id>]", or "") to
    every record, from the task that logs it (``bridge.logcontext``). Installed on every
    handler by :func:`configure`, so a format may always use them."""

    def filter(self, record: logging.LogRecord) -> bool:
        conversation = getattr(record, "conversation", None) or current_conversation()
        record.conversation = conversation or ""
        record.conversation_tag = f" [{conversation}]" if conversation else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    ``conversation`` when the line is about one, ``exception``/``stack`` when there is one,
    and every field given with ``extra=``. A message's own line breaks stay inside the
    JSON string, so a collector never splits a record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        conversation = getattr(record, "conversation", None) or current_conversation()
        if conversation:
            line["conversation"] = conversation
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_") and key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def default_logging(level: str | None = None) -> dict[str, Any]:
    """The example config's logging section, with the root level set to ``level``."""
    section = plain(YAML(typ="safe", pure=True).load(EXAMPLE_CONFIG.read_text())["logging"])
    if level is not None:
        section["root"]["level"] = level.upper()
    return dict(section)


def configure(section: dict[str, Any] | Config) -> None:
    """Apply a logging dictConfig and put a :class:`ConversationFilter` on every handler.

    Raises:
        ConfigError: the section is not a valid dictConfig (it says why).
    """
    if isinstance(section, Config):
        section = section.logging or default_logging()
    try:
        logging.config.dictConfig(copy.deepcopy(section))
    except (ValueError, TypeError, AttributeError, ImportError, KeyError) as e:
        cause = f"{e}: {e.__cause__}" if e.__cause__ else str(e)
        raise ConfigError(f"logging: not a valid logging configuration ({cause})") from None
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not any(isinstance(f, ConversationFilter) for f in handler.filters):
                handler.addFilter(ConversationFilter())


def log_notes(config: Config) -> None:
    """What loading the config found: keys defaulted, unknown keys, environment overrides."""
    log = logging.getLogger("appservice.config")
    for note in config.notes:
        log.log(logging.WARNING if note.warning else logging.INFO, "%s", note.text)
