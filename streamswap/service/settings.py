"""Settings of the long-running daemon (`streamswap serve`): control API and systemd."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.errors import ConfigError
from streamswap.safeyaml import shorten
from streamswap.typedconfig import limits

# Only these names are exempt from the token rule. Other 127.0.0.0/8 addresses are
# loopback too, but they are what port forwards and container set-ups bind, so a token
# is asked for them as for any other address: the safe reading of "not localhost".
LOOPBACK_EXEMPT = ("127.0.0.1", "::1", "localhost")
TOKEN_ENV = "STREAMSWAP_API_TOKEN"


@dataclass
class ServiceSettings:
    # Control API address HOST:PORT ([v6]:PORT for IPv6); null = no API.
    api: str | None = "127.0.0.1:8008"
    # Bearer token for the API (else $STREAMSWAP_API_TOKEN). Required unless `api` is on
    # 127.0.0.1/::1/localhost; every endpoint but GET /health then needs it.
    token: str | None = None
    # POST /source limits: body size, and pixels read from the header before decoding.
    max_upload_bytes: int = field(default=10 * 1024 * 1024, metadata=limits(min=1024, max=256 * 1024 * 1024))
    max_upload_pixels: int = field(default=25_000_000, metadata=limits(min=1024, max=50_000_000))
    # A request's headers, and then its body, must arrive within this long each, else the
    # connection is closed (slow clients cannot hold the API).
    client_timeout_s: float = field(default=10.0, metadata=limits(min=0.1, max=300))
    # An answer that takes the daemon longer than this is a 503 (the action may still finish).
    request_timeout_s: float = field(default=30.0, metadata=limits(min=0.5, max=600))
    # Open connections at once; past this only /health is answered (others get 503), past
    # twice this new connections are closed at once.
    max_connections: int = field(default=128, metadata=limits(min=4, max=10000))
    # Host names the API answers to besides its bound address, localhost and this machine's
    # name (DNS-rebinding guard: any other Host header gets 403). "*" = any (behind a proxy).
    allowed_hosts: list[str] = field(default_factory=list)
    # STATUS= line to systemd (fps, latency, drops) this often.
    status_interval_s: float = field(default=5.0, metadata=limits(min=0.1, max=3600))
    # /health turns 503 when no frame has left for this long.
    stall_s: float = field(default=5.0, metadata=limits(min=0.1, max=3600))
    # When the input gives up for good the pipeline is re-opened after this delay,
    # doubling on each consecutive failure up to restart_max_delay_s.
    restart_delay_s: float = field(default=1.0, metadata=limits(min=0.0, max=600))
    restart_max_delay_s: float = field(default=30.0, metadata=limits(min=0.0, max=3600))
    # The control page's live preview (GET /preview.mjpg): at most this many frames a second,
    # scaled down to this width; nothing is taken or encoded while nobody watches.
    preview_fps: float = field(default=10.0, metadata=limits(min=0.5, max=30))
    preview_width: int = field(default=960, metadata=limits(min=160, max=3840))

    def validate(self, where: str) -> None:
        if self.api is not None:
            parse_bind(self.api, f"{where}.api")
        if self.token is not None and len(self.token) < 16:
            raise ConfigError(f"{where}.token: use at least 16 characters (e.g. `openssl rand -hex 32`)")


def parse_bind(text: str, key: str = "service.api") -> tuple[str, int]:
    """`HOST:PORT`, `[v6]:PORT` or `:PORT` (= 127.0.0.1) -> (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise ConfigError(f"{key}: write IPv6 addresses in brackets, e.g. [::1]:8008; got {shorten(text)}")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"{key}: expected HOST:PORT (e.g. 127.0.0.1:8008), got {shorten(text)}")
    return (host or "127.0.0.1"), int(port)


def needs_token(host: str) -> bool:
    """True unless the API binds the local machine only (127.0.0.1, ::1, localhost)."""
    return host.strip().lower() not in LOOPBACK_EXEMPT
