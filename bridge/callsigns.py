"""Call signs: short public names (``billing-es``) that reach an advisor or a group.

Pure rules, no I/O. A call sign is a slug (``[a-z0-9-]``) because it becomes a Matrix alias
(``#cs_billing-es:server``, a knock-only lobby) and a user localpart (``@sb_cs_billing-es``,
for a direct chat); its free-text keywords (accents allowed) are what searches find it by.

Anyone on Matrix asks a call sign privately: each asker gets a conversation of their own,
routed like a portal visitor's to the advisor or group behind it (:func:`ask`). Who the public
may see (:func:`shown_to_public`) is decided here too: online, said ``!available``, and for an
advisor of another homeserver, seen alive recently (their server's presence outlives it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from . import keywords
from .errors import InvalidInput
from .groups import MAX_SLUG, SLUG, GroupId
from .model import Advisor, AdvisorMxid, Conversation, Presence, RoomId

MAX_SIGN = MAX_SLUG
MAX_KEYWORDS = 300


class Via:
    """How a Matrix user asked: a knock on the call sign's lobby, a direct chat with its
    user, or the portal (a visitor who picked it in the search box)."""

    KNOCK = "knock"
    DIRECT = "direct"


@dataclass(frozen=True)
class CallSign:
    """``sign`` reaches ``advisor`` or the group ``group_id`` (exactly one is set).

    ``keywords``: free text a search matches (with the sign and the target's name);
    ``listed``: the lobby is in the public room directory; ``lobby_id``: the knock-only room
    the alias points at, None until its handler made it."""

    sign: str
    advisor: AdvisorMxid | None
    group_id: GroupId | None
    keywords: str = ""
    listed: bool = False
    lobby_id: RoomId | None = None

    def __post_init__(self) -> None:
        if (self.advisor is None) == (self.group_id is None):
            raise ValueError(f"call sign {self.sign} must reach one advisor or one group")

    def lobby_made(self, lobby_id: RoomId) -> CallSign:
        return replace(self, lobby_id=lobby_id)


def check_sign(text: str) -> str:
    """``text`` as a call sign, or an error that says what is allowed."""
    sign = text.strip()
    if not sign:
        raise InvalidInput("Name the call sign, like billing-es.")
    if len(sign) > MAX_SIGN:
        raise InvalidInput(f"{sign!r} is too long: a call sign has at most {MAX_SIGN} characters.")
    if not SLUG.fullmatch(sign):
        raise InvalidInput(
            f"{sign!r} cannot be a call sign: it becomes a Matrix address, so use lower-case "
            f"letters a-z, digits and '-' (not first or last), e.g. {suggest_sign(sign)!r}."
        )
    return sign


def is_sign(text: str) -> bool:
    """Whether ``text`` is a well-formed call sign (as an alias or a user id carries it)."""
    return len(text) <= MAX_SIGN and SLUG.fullmatch(text) is not None


def suggest_sign(text: str) -> str:
    plain = keywords.normalise(text)
    sign = re.sub(r"[^a-z0-9]+", "-", plain).strip("-")
    return sign[:MAX_SIGN].strip("-") or "help"


def check_keywords(text: str) -> str:
    """Free text, one line, at most :data:`MAX_KEYWORDS` characters (accents kept)."""
    cleaned = " ".join("".join(c for c in text if c.isprintable()).split())
    if len(cleaned) > MAX_KEYWORDS:
        raise InvalidInput(f"Keywords are at most {MAX_KEYWORDS} characters.")
    return cleaned


def asker_key(sign: str, user: str) -> str:
    """What binds one Matrix user's requests to one call sign to one visitor record (the
    visitor's "session"): asking again finds the conversation they have open."""
    digest = hashlib.sha256(f"{sign}\n{user}".encode()).hexdigest()
    return f"matrix:{digest}"


def server_of(user: str) -> str:
    return user.split(":", 1)[1] if ":" in user else ""


def open_from(conversations: Iterable[Conversation], server: str) -> int:
    """How many open conversations askers of ``server`` hold (the per-server cap)."""
    return sum(
        1
        for c in conversations
        if c.asker is not None and c.status.is_open and server_of(c.asker) == server
    )


def display_name(user: str, given: str | None) -> str:
    """How an asker is named to the advisor: their display name (printable characters only,
    one line, at most 80), else their localpart."""
    printable = "".join(c for c in (given or "") if c.isprintable() or c.isspace())
    name = " ".join(printable.split())[:80]
    return name or user.lstrip("@").split(":", 1)[0][:80]


def shown_to_public(advisor: Advisor, now: float, *, local: bool, proof_of_life: float) -> bool:
    """Whether public listings may show ``advisor``: presence ``online`` (never "unknown")
    and said ``!available``; one of another homeserver only if seen alive (a presence push, a
    message, a join) within ``proof_of_life`` seconds, since a dead server's users stay
    "online" on ours for up to half an hour."""
    if not advisor.available or advisor.presence is not Presence.ONLINE:
        return False
    if local:
        return True
    return advisor.last_seen_at is not None and now - advisor.last_seen_at <= proof_of_life


def matches(query: str, call_sign: CallSign, target_name: str) -> bool:
    """A search of the call sign: every word of ``query`` begins a word of its sign, its
    keywords or its target's name (accents and case do not count)."""
    return keywords.matches(query, call_sign.sign, call_sign.keywords, target_name)


def reachable_now(
    call_sign: CallSign,
    shown: Mapping[AdvisorMxid, bool],
    members: Mapping[GroupId, frozenset[AdvisorMxid]],
) -> bool:
    """Whether someone behind the call sign would be shown to the public now. ``members``:
    every advisor of each group (primary and secondary, and those of groups inside it; the
    root's are everyone)."""
    if call_sign.advisor is not None:
        return shown.get(call_sign.advisor, False)
    assert call_sign.group_id is not None
    return any(shown.get(a, False) for a in members.get(call_sign.group_id, ()))
