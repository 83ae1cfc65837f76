"""What the visitor API accepts, in the words of its OpenAPI document and checked the same way.

The core (``bridge.validation``) cleans what a visitor types: it removes control and format
characters, trims whitespace, and then checks what is left. The document can only describe the
raw JSON, so this module holds both halves of the contract in one place: the patterns that state
the core's rules on raw text (``openapi.py`` publishes them), and the few checks the portal makes
before the core sees a request (raw lengths, the idempotency key, ``since``, the search's ``q``).

Patterns are ECMA-262 with Unicode property escapes, as JSON Schema readers use them. ``\\p{C}``
(control, format, surrogate, private-use, unassigned) is exactly what the core removes, and
``[\\s\\p{C}]`` exactly what it removes or trims, so a text is kept iff it has a character outside
that class. The server reads \\p{C} with its Python's Unicode database (14.0 on Python 3.11):
a character assigned in a later version is unassigned there, so removed.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from multidict import MultiMapping

from bridge.callsigns import MAX_SIGN
from bridge.errors import InvalidInput
from bridge.validation import MAX_EMAIL, MAX_MESSAGE, MAX_NAME, MAX_QUERY

MAX_CLIENT_ID = 64
MAX_SEQ = 2**31

# a text the core keeps: one character that is neither removed nor trimmed
VISIBLE = r"[^\s\p{C}]"

# whitespace that is not \p{C} (Unicode Z: Zs, Zl, Zp), spelled out: engines read \s differently
_SPACE = r"\x20\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"

# empty, or an address once the core has removed \p{C} and trimmed whitespace: no whitespace,
# <>"'` or second @ inside, something before the @, and a dot between two characters after it.
# No repetition is nested in another, so a backtracking engine (a browser's) never blows up.
_KEPT = f"[^@<>\"'`{_SPACE}\\p{{C}}]"  # a character the address keeps
_ANY = f"[^@<>\"'`{_SPACE}]"  # ... or one the core removes
_BLANK = f"[{_SPACE}\\p{{C}}]*"
_REMOVED = r"\p{C}*"
EMAIL = (
    f"^{_BLANK}(?:{_KEPT}{_ANY}*@{_REMOVED}{_KEPT}{_ANY}*\\.{_REMOVED}{_KEPT}{_ANY}*{_BLANK})?$"
)

_DIGITS = re.compile(r"[0-9]+")

# a call sign exactly as the search gives it (bridge.callsigns.check_sign), or empty for none
CALL_SIGN = r"^(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)?$"
MAX_CALL_SIGN = MAX_SIGN


def since(query: Mapping[str, str]) -> int:
    """The ``since`` query parameter: a message number, 0 (the default) for all of them."""
    raw = query.get("since", "0")
    if not _DIGITS.fullmatch(raw):
        raise InvalidInput("since must be a whole number, 0 or more.", field="since")
    # a number past any seq means "nothing yet"; capping it spares int() a huge string
    digits = raw.lstrip("0")
    return MAX_SEQ if len(digits) > 10 else min(int(digits or "0"), MAX_SEQ)


def within(body: Mapping[str, Any], limits: Mapping[str, tuple[str, int]]) -> None:
    """Texts at most as long as the document says, as sent (the core counts what it keeps)."""
    for key, (field, max_len) in limits.items():
        value = body.get(key)
        if isinstance(value, str) and len(value) > max_len:
            raise InvalidInput(
                f"The {field} is too long ({len(value)} characters; at most {max_len}).",
                field=field,
            )


START_LIMITS = {
    "name": ("name", MAX_NAME),
    "email": ("email", MAX_EMAIL),
    "message": ("message", MAX_MESSAGE),
}
MESSAGE_LIMITS = {"body": ("message", MAX_MESSAGE)}


def client_id(body: Mapping[str, Any]) -> str:
    """The idempotency key of a visitor's message: required, so that a retry never doubles it."""
    value = body.get("client_id")
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_CLIENT_ID:
        raise InvalidInput(
            f"client_id must be a text of 1 to {MAX_CLIENT_ID} characters, the same when the "
            "message is sent again.",
            field="client_id",
        )
    return value


def search(query: MultiMapping[str]) -> str:
    """The search's ``q``: given once, at most :data:`MAX_QUERY` characters (as decoded from
    the URL: the core counts what it keeps)."""
    given = query.getall("q", [])
    if not given:
        raise InvalidInput("Say what to look for: ?q=<words>.", field="q")
    if len(given) > 1:
        raise InvalidInput("Give q once.", field="q")
    if len(given[0]) > MAX_QUERY:
        raise InvalidInput(
            f"The search is too long ({len(given[0])} characters; at most {MAX_QUERY}).",
            field="q",
        )
    return given[0]
