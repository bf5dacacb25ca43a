"""Who may talk to the control API: Host and Origin checks, the bearer token, sessions.

- **Host** (every request, probes included): a web page on another site can make the
  browser resolve its own name to 127.0.0.1 (DNS rebinding) and then read our answers as
  same-origin. Such a request carries the attacker's name in `Host`, so only the bound
  address, loopback names, this machine's name, IP literals where we listen on all
  addresses (an IP cannot be rebound) and the names in `service.allowed_hosts` are answered.
- **Origin** (state-changing requests): a browser names the page that sent a POST; only our
  own origin (the page h14 serves from this API) or an allowed host may change anything.
- **Token**: `Authorization: Bearer TOKEN` compared in constant time over the whole value,
  or a session cookie that `POST /login` sets from the same token (for a browser page,
  which cannot add a header to an <img> stream). The cookie is HttpOnly and SameSite=Strict.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable
from urllib.parse import urlsplit

WILDCARD_BINDS = ("0.0.0.0", "::", "")
SESSION_TTL_S = 12 * 3600.0
MAX_SESSIONS = 32


def split_host(value: str) -> tuple[str, str]:
    """`Host`/netloc text -> (host name in lower case without brackets, port text)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, rest.removeprefix(":")
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host.rstrip("."), port
    return value.rstrip("."), ""


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_loopback(host: str) -> bool:
    ip = _ip(host)
    return host == "localhost" or (ip is not None and ip.is_loopback)


@dataclass
class HostPolicy:
    """Which `Host` values the API answers (see the module docstring)."""

    bind_host: str
    allowed: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.bind_host = self.bind_host.strip().lower()
        self.configured = {n.strip().lower().rstrip(".") for n in self.allowed if n.strip()}
        names = set(self.configured) | {"localhost"}
        if self.bind_host not in WILDCARD_BINDS:
            names.add(self.bind_host)
        machine = socket.gethostname().lower()
        if machine:
            names.update({machine, f"{machine}.local"})
        self.names = names
        self.any = "*" in names

    def allows(self, host_header: str | None) -> bool:
        if host_header is None:  # HTTP/1.0 without Host: no browser sends that
            return True
        host, _ = split_host(host_header)
        if self.any or host in self.names:
            return True
        ip = _ip(host)
        if ip is None:
            return False
        if self.bind_host in WILDCARD_BINDS:
            return True  # listening everywhere: any of our addresses, and IPs cannot be rebound
        bound = _ip(self.bind_host)
        return ip == bound or (ip.is_loopback and _is_loopback(self.bind_host))

    def allows_origin(self, origin: str | None, host_header: str | None) -> bool:
        """A state-changing request from a browser must come from our own origin (or an
        allowed host's); requests without Origin (curl, scripts) pass."""
        if origin is None:
            return True
        origin = origin.strip().lower()
        if origin == "null" or "://" not in origin:
            return False
        netloc = urlsplit(origin).netloc
        if host_header is not None and netloc == host_header.strip().lower():
            return True
        host, _ = split_host(netloc)
        return self.any or host in self.configured


class Sessions:
    """Browser sessions opened by `POST /login`: random ids, expiring, at most MAX_SESSIONS
    (the oldest goes first). Touched from the server's event loop and tests, hence the lock."""

    def __init__(self, ttl_s: float = SESSION_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def open(self) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._prune()
            while len(self._expiry) >= MAX_SESSIONS:
                self._expiry.pop(next(iter(self._expiry)))
            self._expiry[sid] = self._clock() + self._ttl
        return sid

    def valid(self, sid: str | None) -> bool:
        if not sid:
            return False
        with self._lock:
            self._prune()
            # compare_digest over every id: no timing hint about which prefix matched
            return any(hmac.compare_digest(sid.encode(), known.encode()) for known in self._expiry)

    def close(self, sid: str | None) -> None:
        with self._lock:
            self._expiry.pop(sid or "", None)

    def _prune(self) -> None:
        now = self._clock()
        for sid in [s for s, t in self._expiry.items() if t <= now]:
            del self._expiry[sid]


def bearer_matches(header: str | None, token: str) -> bool:
    """True only for `Bearer <exactly token>` (scheme case-insensitive, RFC 6750): a
    prefix, a longer value or another scheme (Basic, Token) is refused."""
    if not header:
        return False
    scheme, _, given = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())
