"""Visitor sessions, CSRF tokens, origins, client addresses and rate limits."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence
from urllib.parse import urlsplit

from aiohttp import web

SESSION_COOKIE = "sb_session"
CSRF_HEADER = "X-CSRF-Token"
SESSION_MAX_AGE = 30 * 24 * 3600
EPSILON = 1e-9


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


@dataclass(frozen=True)
class Sessions:
    """A session is a random token in an httponly cookie; the server keeps only its hash.

    Tokens are signed with the portal's secret, so a cookie the server never issued (planted
    by a sibling site, say) is not adopted: the visitor gets a fresh session instead.

    The secret can be rotated: ``keys`` are the configured secrets, the first signs and every
    one verifies. A session's hash covers its signature, so a session signed with an old
    secret keeps that signature (and its conversation) for as long as the old secret is listed.
    """

    keys: tuple[bytes, ...]
    secure_cookie: bool

    @classmethod
    def of(cls, secret: str | Sequence[str], secure_cookie: bool) -> "Sessions":
        """From the config's ``portal.secret``: one secret, or a list whose first one signs."""
        listed = (secret,) if isinstance(secret, str) else tuple(secret)
        if not listed:
            raise ValueError("at least one portal secret is needed")
        return cls(tuple(s.encode() for s in listed), secure_cookie)

    def _signature(self, nonce: str, key: bytes | None = None) -> str:
        mac = hmac.new(
            self.keys[0] if key is None else key, b"session:" + nonce.encode(), hashlib.sha256
        )
        return base64.urlsafe_b64encode(mac.digest()[:18]).decode()

    def valid_token(self, token: str | None) -> bool:
        if not token or len(token) > 80 or not token.isascii():
            return False
        nonce, _, signature = token.partition(".")
        if len(nonce) != 43:
            return False
        # every key is tried, so the time taken does not tell which one signed
        return any(
            [
                secrets.compare_digest(signature.encode(), self._signature(nonce, k).encode())
                for k in self.keys
            ]
        )

    def token(self, request: web.Request) -> str | None:
        token = request.cookies.get(SESSION_COOKIE)
        return token if self.valid_token(token) else None

    def session_hash(self, token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def csrf_token(self, token: str, key: bytes | None = None) -> str:
        """The CSRF token of a session, signed with the first secret (or ``key``)."""
        mac = hmac.new(
            self.keys[0] if key is None else key, b"csrf:" + token.encode(), hashlib.sha256
        )
        return mac.hexdigest()

    def csrf_ok(self, request: web.Request, token: str) -> bool:
        given = request.headers.get(CSRF_HEADER, "").encode()
        return any(
            [secrets.compare_digest(given, self.csrf_token(token, k).encode()) for k in self.keys]
        )

    def issue(self, response: web.StreamResponse) -> str:
        nonce = secrets.token_urlsafe(32)
        token = f"{nonce}.{self._signature(nonce)}"
        self.set_cookie(response, token)
        return token

    def set_cookie(self, response: web.StreamResponse, token: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="Lax",
            secure=self.secure_cookie,
            path="/",
        )


@dataclass(frozen=True)
class Origins:
    allowed: frozenset[str]

    @classmethod
    def of(cls, public_url: str, extra: Sequence[str]) -> "Origins":
        return cls(frozenset([origin_of(public_url), *(origin_of(o) for o in extra)]))

    def ok(self, request: web.Request, *, required: bool) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:
            return not required
        return origin.lower() in self.allowed


@dataclass(frozen=True)
class ClientAddress:
    """The visitor's address; X-Forwarded-For is believed only from configured proxies."""

    trusted: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def of(cls, proxies: Sequence[str]) -> "ClientAddress":
        return cls(tuple(ipaddress.ip_network(p, strict=False) for p in proxies))

    def _trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def __call__(self, request: web.Request) -> str:
        remote = request.remote or "unknown"
        if not self.trusted or not self._trusted(remote):
            return remote
        # a proxy may append its own header line: read them all, nearest hop last
        lines = request.headers.getall("X-Forwarded-For", [])
        hops = [h.strip() for line in lines for h in line.split(",") if h.strip()]
        # walk back from the nearest hop; the first one not a trusted proxy is the client
        for hop in reversed(hops):
            if not self._trusted(hop):
                try:
                    return str(ipaddress.ip_address(hop))
                except ValueError:
                    return remote
        return remote


@dataclass
class RateLimiter:
    """A token bucket per key: ``per_minute`` tokens a minute refill it, and it holds at most
    ``burst`` (by default as many as a minute refills). ``clock`` gives monotonic seconds."""

    per_minute: float
    burst: int | None = None
    max_keys: int = 100_000
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def capacity(self) -> float:
        return float(self.per_minute if self.burst is None else self.burst)

    def _tokens(self, key: str, now: float) -> float:
        tokens, last = self._buckets.get(key, (self.capacity, now))
        return min(self.capacity, tokens + (now - last) * self.per_minute / 60.0)

    def wait(self, key: str, now: float | None = None) -> float:
        """Take a token and return 0.0; or, if there is none, take nothing and return the
        seconds until there will be one (what a 429's Retry-After says)."""
        now = self.clock() if now is None else now
        tokens = self._tokens(key, now)
        if tokens >= 1.0 - EPSILON:  # the float sum of a refill may fall a hair short
            self._buckets[key] = (max(0.0, tokens - 1.0), now)
            self._forget_idle(now)
            return 0.0
        # a refusal changes nothing: the refill keeps counting from the last token taken
        return (1.0 - tokens) * 60.0 / self.per_minute

    def allow(self, key: str, now: float | None = None) -> bool:
        """Take a token if there is one."""
        return self.wait(key, now) == 0.0

    def _forget_idle(self, now: float) -> None:
        if len(self._buckets) > self.max_keys:
            # forget only buckets that have refilled completely: they remember nothing
            for idle in [k for k in self._buckets if self._tokens(k, now) >= self.capacity]:
                del self._buckets[idle]


@dataclass
class TypingGate:
    """Which of a session's typing notifications go on to Matrix, so a flood never does.

    A start is passed on while ``limiter`` has a token for the session, and dropped beyond.
    A stop is passed on once after each start passed on, and dropped otherwise: the advisor
    never keeps seeing "typing" because a stop was dropped, and a flood of starts and stops
    reaches Matrix at most twice the rate of starts. Dropped notifications cost nothing."""

    limiter: RateLimiter
    max_keys: int = 100_000
    # sessions whose last notification passed on was a start; oldest first
    _typing: dict[str, None] = field(default_factory=dict)

    def passes(self, key: str, typing: bool) -> bool:
        if not typing:
            if key not in self._typing:
                return False
            del self._typing[key]
            return True
        if not self.limiter.allow(key):
            return False
        self._typing.pop(key, None)
        self._typing[key] = None
        if len(self._typing) > self.max_keys:
            # a page that closed while typing sends no stop; Matrix ends its typing by itself
            del self._typing[next(iter(self._typing))]
        return True
