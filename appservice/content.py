"""What a Matrix message's content says, in the core's terms: its text, and whether it edits or
answers another message.

Clients before Matrix 1.13 put a quote of the answered message in front of a reply (the "reply
fallback": ``> <@ana:hs> original`` lines and a blank line in ``body``, an ``<mx-reply>`` block
in ``formatted_body``); newer clients send none. The visitor gets the text without it, and the
answered message as a quote the page draws from its own copy. Only ``body`` (plain text) ever
reaches a visitor; ``formatted_body`` is read only to learn whether a fallback is there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.model import EventId

FALLBACK_START = ("> <", "> * <")  # "> <@user:hs> text", or "> * <@user:hs> emote"


@dataclass(frozen=True)
class Said:
    """A message's text and type, and the message it answers or replaces (if any)."""

    body: str
    msgtype: str
    reply_to: EventId | None = None
    replaces: EventId | None = None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_message(content: dict[str, Any]) -> Said | None:
    """The message in an ``m.room.message`` content, or None if it has no text to relay."""
    relates = content.get("m.relates_to")
    relates = relates if isinstance(relates, dict) else {}
    if relates.get("rel_type") == "m.replace":
        return _read_edit(content, relates)
    reply_to = _reply_target(relates)
    said = _text(content, fallback_possible=reply_to is not None)
    if said is None:
        return None
    body, msgtype = said
    return Said(body, msgtype, reply_to=reply_to)


def _read_edit(content: dict[str, Any], relates: dict[str, Any]) -> Said | None:
    """An edit: the new text is in ``m.new_content`` (``body`` is a "* new text" fallback)."""
    target = _str(relates.get("event_id"))
    new = content.get("m.new_content")
    if target is None or not isinstance(new, dict):
        return None
    said = _text(new, fallback_possible=True)  # some clients quote the reply here too
    if said is None:
        return None
    body, msgtype = said
    return Said(body, msgtype, replaces=EventId(target))


def _reply_target(relates: dict[str, Any]) -> EventId | None:
    in_reply_to = relates.get("m.in_reply_to")
    if not isinstance(in_reply_to, dict):
        return None
    if relates.get("rel_type") == "m.thread" and relates.get("is_falling_back") is True:
        return None  # a thread message that is no real reply (for clients without threads)
    target = _str(in_reply_to.get("event_id"))
    return EventId(target) if target else None


def _text(content: dict[str, Any], *, fallback_possible: bool) -> tuple[str, str] | None:
    body, msgtype = _str(content.get("body")), _str(content.get("msgtype"))
    if body is None or msgtype is None:
        return None
    if fallback_possible and _has_fallback(content, body):
        body = strip_reply_fallback(body)
    return (body, msgtype) if body.strip() else None


def _has_fallback(content: dict[str, Any], body: str) -> bool:
    formatted = _str(content.get("formatted_body"))
    if formatted is not None:
        # with a formatted body, the two fallbacks come together or not at all: a plain
        # body starting with "> " is then the advisor's own quote
        return "<mx-reply>" in formatted
    return body.startswith(FALLBACK_START)


def strip_reply_fallback(body: str) -> str:
    """``body`` without the quoted lines in front and the blank line after them."""
    lines = body.split("\n")
    while lines and lines[0].startswith(">"):
        lines.pop(0)
    if lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)
