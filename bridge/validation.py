"""Checks on what a visitor sends. Everything from a browser is hostile until it passes here."""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping

from .errors import InvalidInput
from .model import StartRequest

MAX_NAME = 80
MAX_EMAIL = 254
MAX_MESSAGE = 4000
_EMAIL = re.compile(r"^[^@\s<>\"'`]+@[^@\s<>\"'`]+\.[^@\s<>\"'`]+$")


def clean_text(value: Any, *, field: str, max_len: int, multiline: bool, required: bool) -> str:
    """Normalise a text field: a string, no control characters, trimmed, within bounds."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"The {field} must be text.", field=field)
    value = unicodedata.normalize("NFC", value)
    allowed = "\n\t" if multiline else ""
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = "".join(
        ch
        for ch in value
        if ch in allowed or unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Co", "Cn")
    ).strip()
    if not multiline:
        value = " ".join(value.split())
    if required and not value:
        raise InvalidInput(f"Please fill in the {field}.", field=field)
    if len(value) > max_len:
        raise InvalidInput(
            f"The {field} is too long ({len(value)} characters; at most {max_len}).", field=field
        )
    return value


def message_body(value: Any) -> str:
    return clean_text(value, field="message", max_len=MAX_MESSAGE, multiline=True, required=True)


def start_request(raw: Any, topics: Mapping[str, str]) -> StartRequest:
    """Validate the pre-chat form. ``topics`` maps topic id → label."""
    if not isinstance(raw, Mapping):
        raise InvalidInput("Expected a JSON object with name, email, topic and message.")
    name = clean_text(
        raw.get("name"), field="name", max_len=MAX_NAME, multiline=False, required=True
    )
    email = clean_text(
        raw.get("email"), field="email", max_len=MAX_EMAIL, multiline=False, required=False
    )
    if email and not _EMAIL.match(email):
        raise InvalidInput("That email address does not look right.", field="email")
    topic = raw.get("topic")
    if not isinstance(topic, str) or topic not in topics:
        raise InvalidInput("Please choose a topic from the list.", field="topic")
    return StartRequest(
        name=name, email=email or None, topic=topic, message=message_body(raw.get("message"))
    )
