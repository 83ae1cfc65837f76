"""Checks on what a visitor sends. Everything from a browser is hostile until it passes here."""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping

from .callsigns import check_sign
from .errors import InvalidInput
from .model import StartRequest

MAX_NAME = 80
MAX_EMAIL = 254
MAX_MESSAGE = 4000
MAX_QUERY = 100
UNREACHABLE = "That advisor or team is not available right now; pick another or leave it empty."
_EMAIL = re.compile(r"^[^@\s<>\"'`]+@[^@\s<>\"'`]+\.[^@\s<>\"'`]+$")


def clean_text(value: Any, *, field: str, max_len: int, multiline: bool, required: bool) -> str:
    """Normalise a text field: a string, no control characters, trimmed, within bounds."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(f"The {field} must be text.", field=field)
    value = _cleaned(value, multiline=multiline)
    if required and not value:
        raise InvalidInput(f"Please fill in the {field}.", field=field)
    if len(value) > max_len:
        raise InvalidInput(
            f"The {field} is too long ({len(value)} characters; at most {max_len}).", field=field
        )
    return value


def _cleaned(value: str, *, multiline: bool) -> str:
    """NFC, without control and format characters, trimmed (one line: each run of whitespace
    one space)."""
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
        name=name,
        email=email or None,
        topic=topic,
        message=message_body(raw.get("message")),
        call_sign=call_sign(raw.get("call_sign")),
    )


def call_sign(value: Any) -> str | None:
    """The call sign the visitor picked from the search, exactly as the search gave it; None
    (or empty) for none. Whether someone behind it is available is the service's check."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInput(
            "The call_sign must be text: a call sign from the search.", field="call_sign"
        )
    try:
        valid = check_sign(value) == value
    except InvalidInput:
        valid = False
    if not valid:  # no such call sign can exist, so nobody is behind it
        raise InvalidInput(UNREACHABLE, field="call_sign")
    return value


def search_query(value: Any) -> str:
    """The text of the search box: at most :data:`MAX_QUERY` characters as sent, cleaned as
    a one-line text (possibly empty: then nothing is looked for)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInput("The search must be text.", field="q")
    if len(value) > MAX_QUERY:
        raise InvalidInput(
            f"The search is too long ({len(value)} characters; at most {MAX_QUERY}).", field="q"
        )
    return _cleaned(value, multiline=False)
