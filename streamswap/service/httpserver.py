"""An ASGI app served by uvicorn (h11) on its own event loop in one thread, beside the
pipeline threads, with the limits a daemon facing hostile clients needs.

uvicorn parses HTTP strictly (h11: a malformed or conflicting Content-Length, an oversized
header block, a bad request line are a 400, never a crash) and holds each connection in the
event loop, so slow clients cost a few kilobytes each, not a thread. What uvicorn leaves to
us, `_GuardedH11` adds:

- a deadline for every request's headers (from the first byte of a request, or from the
  connection for the first one): a client that trickles a byte every few seconds is cut
  off after `header_timeout_s`, whatever it sends;
- a cap on open connections: past `max_connections` a connection is still parsed, but only
  the health probes are answered (everything else gets 503 with `Connection: close` after
  its request was read, so the client reads the answer rather than a reset); past twice
  that, new connections are closed at once;
- JSON bodies for uvicorn's own 400 answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, cast

import anyio
import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from streamswap.errors import ConfigError
from streamswap.logs import kv

log = logging.getLogger(__name__)
# uvicorn's own start/stop chatter ("Started server process", "Waiting for application
# startup") says nothing ours does not; its warnings (a malformed request) still show.
logging.getLogger("uvicorn.error").setLevel(logging.WARNING)

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]

# The whole request line + header block may not exceed this (h11 answers 400 beyond).
MAX_HEADER_BYTES = 16 * 1024
KEEP_ALIVE_S = 5
_CONTENT_LENGTH_LINE = re.compile(rb"\r\ncontent-length[ \t]*:", re.IGNORECASE)
# A body refused unread is read and dropped up to this much (and this long) before the
# connection closes, so the client reads the answer rather than a reset.
DRAIN_LIMIT = 1024 * 1024
DRAIN_SECONDS = 1.0
# Probes answered on a connection over the cap (they are cheap and must keep answering).
PROBE_PATHS = ("/health", "/health/live", "/health/ready")


def json_answer(status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, dict]:
    """The ASGI start and body messages of a `{"error": ...}` answer."""
    body = (json.dumps({"error": error}) + "\n").encode()
    start = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *(headers or []),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


@dataclass(frozen=True)
class DrainPolicy:
    """How much of a body answered unread is read and dropped before the connection closes,
    so the client reads the answer rather than a reset: all of it within `whole_limit`
    bytes and `whole_seconds` (an honest upload, answered busy), else a little."""

    whole_limit: int = DRAIN_LIMIT
    whole_seconds: float = DRAIN_SECONDS


async def drain_body(scope: Mapping[str, Any], receive: Any, policy: DrainPolicy = DrainPolicy()) -> None:
    """Read and drop the body of a request answered without it (see DrainPolicy). Nothing
    is read from a client waiting for 100 Continue: it has sent no body."""
    headers = dict(scope.get("headers") or ())
    if headers.get(b"expect", b"").lower() == b"100-continue":
        return
    declared = headers.get(b"content-length", b"")
    if b"transfer-encoding" not in headers and declared in (b"0", b""):
        return
    whole = declared.isdigit() and int(declared) <= policy.whole_limit
    left = int(declared) if whole else DRAIN_LIMIT
    with anyio.move_on_after(policy.whole_seconds if whole else DRAIN_SECONDS):
        while left > 0:
            message = await receive()
            if message.get("type") != "http.request":
                return
            left -= len(message.get("body", b""))
            if not message.get("more_body"):
                return


async def answer_and_close(
    scope: Mapping[str, Any],
    receive: Any,
    send: Any,
    status: int,
    error: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    drain: DrainPolicy = DrainPolicy(),
) -> None:
    """A JSON refusal sent without running the app; the connection closes after it."""
    await drain_body(scope, receive, drain)
    start, body = json_answer(status, error, [*(headers or []), (b"connection", b"close")])
    await send(start)
    await send(body)


def busy_app(app: ASGIApp, limit: int, drain: DrainPolicy) -> ASGIApp:
    """`app` for the health probes; 503 with `Connection: close` for everything else."""

    async def busy(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("path") in PROBE_PATHS:
            await app(scope, receive, send)
            return
        await answer_and_close(
            scope,
            receive,
            send,
            503,
            f"too many connections to the control API (over {limit}); retry shortly",
            [(b"retry-after", b"1")],
            drain,
        )

    return busy


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and the connection cap (see module)."""

    header_timeout_s = 10.0
    max_connections = 128
    drain = DrainPolicy()
    # Per connection, set as it goes (uvicorn's __init__ is not ours to extend).
    _head = b""  # the header bytes of a request still being received
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvicorn narrows asyncio's BaseTransport to Transport in its override (a socket
        # connection's transport is one); cast to call it without breaking asyncio's signature.
        super().connection_made(cast(asyncio.Transport, transport))
        self._header_timer = None
        open_now = len(self.connections)
        if open_now > 2 * self.max_connections:
            log.warning("control API connection refused: too many open", extra=kv(open=open_now))
            self.transport.abort()
            return
        if open_now > self.max_connections:
            self.app = busy_app(self.app, self.max_connections, self.drain)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        between = self._between_requests()
        if self._header_timer is None and between:
            self._arm()  # the next request on a kept-alive connection starts its own deadline
        if between and self._repeats_content_length(data):
            self._refuse_raw("two Content-Length headers; send one")
            return
        super().data_received(data)
        if not self._between_requests():
            self._disarm()  # headers complete: the app's body deadline takes over

    def _repeats_content_length(self, data: bytes) -> bool:
        """True when the header block being received names Content-Length twice. h11
        refuses two that differ but merges equal ones; a proxy in front may not agree on
        which one counts, so any repeat is refused (request smuggling)."""
        head = self._head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head[-MAX_HEADER_BYTES:]
            return False
        self._head = b""
        return len(_CONTENT_LENGTH_LINE.findall(head[: end + 2])) > 1

    def _refuse_raw(self, error: str) -> None:
        body = json.dumps({"error": f"malformed HTTP request: {error}"}).encode() + b"\n"
        self.transport.write(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()

    def _between_requests(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        timer = self._header_timer
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._between_requests() and not self.transport.is_closing():
            log.info(
                "control API client too slow; disconnected",
                extra=kv(client=(self.client or ("?",))[0], seconds=self.header_timeout_s),
            )
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request h11 cannot parse, as JSON."""
        body = (
            json.dumps(
                {"error": f"malformed HTTP request (request line, headers or Content-Length); {msg.rstrip('.')}"}
            ).encode()
            + b"\n"
        )
        try:
            for event in (
                h11.Response(
                    status_code=400,
                    reason=b"Bad Request",
                    headers=[
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"connection", b"close"),
                    ],
                ),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                self.transport.write(self.conn.send(event))
        except h11.LocalProtocolError:  # we were already answering: nothing more to say
            pass
        self.transport.close()


class HttpServer:
    """Serves an ASGI app on a socket bound at construction time (so a busy port is a
    ConfigError at start, and port 0 is resolved), in a thread of its own."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        header_timeout_s: float,
        max_connections: int,
        drain: DrainPolicy = DrainPolicy(),
        what: str = "service.api",
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"{what}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "pick a free port or another address with --api HOST:PORT"
            ) from None
        self.socket = sock
        self.port: int = sock.getsockname()[1]
        self._protocol = type(
            "GuardedH11",
            (_GuardedH11,),
            {"header_timeout_s": header_timeout_s, "max_connections": max_connections, "drain": drain},
        )
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def start(self, app: ASGIApp, timeout: float = 10.0) -> None:
        """Serve `app` from a new thread; returns once it accepts connections."""
        config = uvicorn.Config(
            app,
            http=self._protocol,
            ws="none",
            lifespan="off",
            interface="asgi3",
            loop="asyncio",
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
            timeout_keep_alive=KEEP_ALIVE_S,
            timeout_graceful_shutdown=2,
            h11_max_incomplete_event_size=MAX_HEADER_BYTES,
            backlog=128,
        )
        server = self._server = uvicorn.Server(config)

        def serve() -> None:
            try:
                asyncio.run(server.serve(sockets=[self.socket]))
            except BaseException as exc:  # SystemExit from a failed start-up included
                self._error = exc
                log.exception("control API server stopped with an error")

        self._thread = threading.Thread(target=serve, name="streamswap-api", daemon=True)
        self._thread.start()
        deadline = threading.Event()
        waited = 0.0
        while not server.started and self._thread.is_alive() and waited < timeout:
            deadline.wait(0.01)
            waited += 0.01
        if not server.started:
            self.close()
            raise ConfigError(f"the control API did not start ({self._error or 'timed out'})")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, end open connections (in-flight answers get ~2 s), join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(1.0)
            self._thread = None
        try:
            self.socket.close()
        except OSError:
            pass
