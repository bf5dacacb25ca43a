"""The control API: a small HTTP/1.1 server from the standard library.

    GET  /health   readiness: 200 when frames flow, 503 while loading, re-opening or stalled;
                   the JSON body also says `live` (GET /health/ready and /health/live answer
                   each alone: /health/live stays 200 while models load or an input is lost)
    GET  /metrics  Prometheus text
    GET  /status   JSON snapshot of the pipeline
    POST /source   a face image (image/jpeg, image/png, ...) -> new identity at the next frame
    POST /pause    swapping off (frames keep flowing)   POST /resume   swapping on
    POST /reload   re-read the config file (same as SIGHUP)

Every refusal is a 4xx with a JSON body `{"error": "..."}`; nothing a client sends can
stop the stream. Bodies are size-checked from Content-Length before they are read, image
dimensions from the header before decoding, and idle clients are cut off after
`service.client_timeout_s`.
"""

from __future__ import annotations

import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from streamswap.errors import ConfigError, InputError, NoFaceError, StreamswapError
from streamswap.io.images import decode_image, read_header
from streamswap.logs import kv
from streamswap.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streamswap.service.metrics import Metrics
from streamswap.service.settings import ServiceSettings, needs_token, parse_bind

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif")
_KNOWN_PATHS = ("/health", "/health/live", "/health/ready", "/metrics", "/status", "/source", "/pause", "/resume", "/reload")
_JSON_BODY_LIMIT = 64 * 1024
# After refusing a body we read (and discard) at most this much of it so the client sees
# the response instead of a connection reset.
_DRAIN_LIMIT = 1024 * 1024
_DRAIN_SECONDS = 1.0
MAX_CLIENTS = 32
_BUSY_BODY = b'{"error": "too many connections to the control API; retry shortly"}\n'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
         b"Connection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n\r\n" + _BUSY_BODY)


class DaemonControl(Protocol):
    """What the API drives: `service.daemon.Daemon` (health, and the RuntimeControl calls
    with a reload() that re-reads the config and answers what it applied)."""

    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def status(self) -> dict[str, Any]: ...
    def set_source_image(self, image_bgr: Any) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def reload(self) -> dict[str, Any]: ...


def _allowed(path: str) -> str:
    """The methods an endpoint answers (the Allow header of a 405)."""
    return "POST" if path in ("/source", "/pause", "/resume", "/reload") else "GET, HEAD"


class Refused(Exception):
    """A 4xx answer: status code and the message the client gets."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


class ControlApi:
    """Owns the HTTP server thread. `start()` binds (raising ConfigError on a bad or busy
    address, or a non-local address without a token); `close()` stops it."""

    def __init__(
        self, settings: ServiceSettings, control: DaemonControl, metrics: Metrics, token: str | None
    ) -> None:
        assert settings.api is not None
        self.settings = settings
        self.host, self.port = parse_bind(settings.api)
        if needs_token(self.host) and not token:
            raise ConfigError(
                f"service.api: {settings.api} is reachable from other machines, so a bearer token "
                "is required; set service.token or $STREAMSWAP_API_TOKEN (e.g. `openssl rand -hex 32`), "
                "or bind 127.0.0.1"
            )
        if token is not None and len(token) < 16:  # service.token is checked on load; the env is not
            raise ConfigError("the API token (service.token or $STREAMSWAP_API_TOKEN) is too short: "
                              "use at least 16 characters, e.g. `openssl rand -hex 32`")
        self.control = control
        self.metrics = metrics
        self.token = token
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        try:
            server = _Server((self.host, self.port), _Handler, self)
        except OSError as exc:
            raise ConfigError(
                f"service.api: cannot listen on {self.settings.api} ({exc.strerror or exc}); "
                "pick a free port or another address with --api HOST:PORT"
            ) from None
        self._server = server
        self.port = server.server_address[1]  # the real port when 0 was asked for
        self._thread = threading.Thread(target=server.serve_forever, name="streamswap-api", daemon=True)
        self._thread.start()
        log.info("control API listening", extra=kv(address=f"{self.host}:{self.port}", token=bool(self.token)))

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Bounded backlog; each connection gets its own thread, cut off by the socket timeout.
    request_queue_size = 16

    def __init__(self, address: tuple[str, int], handler: type, api: ControlApi) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.api = api
        # At most this many connections at once (a thread each): a flood of idle clients
        # is answered 503 instead of growing threads without bound.
        self._clients = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._clients.acquire(blocking=False):
            try:
                request.sendall(_BUSY)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._clients.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._clients.release()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "streamswap"
    sys_version = ""
    server: _Server
    _body_read = False  # this request's body was read (reset per request in _dispatch)

    def setup(self) -> None:
        self.timeout = self.server.api.settings.client_timeout_s  # applied by StreamRequestHandler
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # route to logging, not stderr
        log.debug("api request", extra=kv(client=self.client_address[0], line=format % args))

    # -- plumbing ---------------------------------------------------------------------
    def _send_json(self, code: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = (json.dumps(body, default=str) + "\n").encode()
        self._send(code, data, "application/json", headers)

    def _send(self, code: int, data: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        path = self.path.split("?", 1)[0]
        self.server.api.metrics.observe_api(self.command, path if path in _KNOWN_PATHS else "other", code)

    def _refuse(self, exc: Refused) -> None:
        context = kv(client=self.client_address[0], method=self.command, path=self.path.split("?", 1)[0],
                     code=exc.code, error=exc.message)
        if exc.code >= 500:
            log.error("api request failed", extra=context)
        else:
            log.warning("api request refused", extra=context)
        self._send_json(exc.code, {"error": exc.message}, exc.headers)

    def _authorize(self) -> None:
        token = self.server.api.token
        if not token:
            return
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise Refused(401, "missing bearer token: send `Authorization: Bearer TOKEN`",
                          {"WWW-Authenticate": 'Bearer realm="streamswap"'})
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            raise Refused(401, "wrong bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})

    def _content_length(self, limit: int) -> int:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise Refused(411, "chunked bodies are not accepted; send Content-Length")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return 0
        if not raw.strip().isdigit():
            self.close_connection = True
            raise Refused(400, f"bad Content-Length {raw!r}")
        length = int(raw)
        if length > limit:
            self._drain_and_close(length)
            raise Refused(413, f"body is {length} bytes, over the limit of {limit} bytes")
        return length

    def _drain_and_close(self, length: int) -> None:
        """Refusing a body we will not read: discard a little of it (bounded in bytes and
        time) so the client reads our 413 rather than a reset, then close."""
        self.close_connection = True
        if self.headers.get("Expect", "").lower() == "100-continue":
            return  # the client waits for our answer before sending the body
        try:
            self.connection.settimeout(_DRAIN_SECONDS)
            left = min(length, _DRAIN_LIMIT)
            while left > 0:
                chunk = self.rfile.read1(min(left, 65536))  # type: ignore[attr-defined]
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            pass

    def _declares_body(self) -> bool:
        length = (self.headers.get("Content-Length") or "0").strip()
        return bool(self.headers.get("Transfer-Encoding")) or length != "0"

    def _read_body(self, length: int) -> bytes:
        self._body_read = True
        try:
            data = self.rfile.read(length)
        except (socket.timeout, TimeoutError):
            self.close_connection = True
            raise Refused(408, f"body not received within {self.timeout} s") from None
        if len(data) != length:
            self.close_connection = True
            raise Refused(400, f"body ended after {len(data)} of {length} bytes")
        return data

    def _json_body(self) -> dict[str, Any]:
        """An optional JSON object body (POST /pause, /resume, /reload take `{}` or nothing)."""
        length = self._content_length(_JSON_BODY_LIMIT)
        data = self._read_body(length) if length else b""
        if not data.strip():
            return {}
        ctype = self.headers.get_content_type()
        if ctype != "application/json":
            raise Refused(415, f"expected an application/json body, got {ctype}")
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise Refused(400, f"malformed JSON body: {exc}") from None
        if not isinstance(value, dict):
            raise Refused(400, f"the JSON body must be an object, got {type(value).__name__}")
        return value

    def handle_expect_100(self) -> bool:
        """Answer a too-large upload before the client sends it (curl does this)."""
        try:
            self._authorize()
            limit = self.server.api.settings.max_upload_bytes if self.path == "/source" else _JSON_BODY_LIMIT
            self._content_length(limit)
        except Refused as exc:
            self.close_connection = True
            self._refuse(exc)
            return False
        return super().handle_expect_100()

    # -- routes -----------------------------------------------------------------------
    def do_GET(self) -> None:
        self._dispatch({"/health": self._health, "/health/ready": self._health, "/health/live": self._live,
                        "/metrics": self._metrics, "/status": self._status})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_POST(self) -> None:
        self._dispatch({
            "/source": self._source, "/pause": self._pause, "/resume": self._resume, "/reload": self._reload,
        })

    def do_PUT(self) -> None:
        self._dispatch({})  # 405 on a known path, 404 elsewhere

    do_DELETE = do_PATCH = do_PUT

    def _dispatch(self, routes: dict[str, Any]) -> None:
        path = self.path.split("?", 1)[0]
        self._body_read = False
        try:
            handler = routes.get(path)
            if handler is None:
                if path in _KNOWN_PATHS:
                    self.close_connection = True
                    raise Refused(405, f"{self.command} {path} is not supported; use {_allowed(path)}",
                                  {"Allow": _allowed(path)})
                raise Refused(404, f"no endpoint {path}; try /health, /metrics, /status, /source, "
                                   "/pause, /resume, /reload")
            if not path.startswith("/health"):  # probes need no token
                self._authorize()
            handler()
        except Refused as exc:
            if not self._body_read and self._declares_body():
                # Refused before its body was read: on a kept-alive connection that body
                # would be parsed as the next request.
                self.close_connection = True
            self._refuse(exc)
        except (socket.timeout, TimeoutError, ConnectionError, BrokenPipeError):
            self.close_connection = True
        except Exception:  # a bug: the client gets a 500, the stream goes on
            log.exception("api handler crashed", extra=kv(path=path))
            self.close_connection = True
            try:
                self._send_json(500, {"error": "internal error; see the daemon's log"})
            except OSError:
                pass

    def _health(self) -> None:
        ready, body = self.server.api.control.health()
        self._send_json(200 if ready else 503, body)

    def _live(self) -> None:
        _, body = self.server.api.control.health()
        self._send_json(200 if body["live"] else 503, body)

    def _metrics(self) -> None:
        self._send(200, self.server.api.metrics.render(), METRICS_CONTENT_TYPE)

    def _status(self) -> None:
        self._send_json(200, self.server.api.control.status())

    def _source(self) -> None:
        settings = self.server.api.settings
        ctype = self.headers.get_content_type()
        if ctype not in IMAGE_TYPES:
            length = self.headers.get("Content-Length") or "0"
            self._drain_and_close(int(length) if length.isdigit() else 0)
            raise Refused(415, f"Content-Type must be one of {', '.join(IMAGE_TYPES)}; got {ctype} "
                               "(send the file itself as the body: curl --data-binary @face.jpg "
                               "-H 'Content-Type: image/jpeg' …/source)")
        length = self._content_length(settings.max_upload_bytes)
        if length == 0:
            raise Refused(411 if self.headers.get("Content-Length") is None else 400,
                          "send the image as the request body with a Content-Length")
        data = self._read_body(length)
        name = "uploaded image"
        try:
            header = read_header(data, name)
        except InputError as exc:
            raise Refused(415, str(exc)) from None
        if header.width * header.height > settings.max_upload_pixels:  # before any decoding
            raise Refused(413, f"{name}: {header.format} header says {header.width}×{header.height} pixels, "
                               f"over the limit of {settings.max_upload_pixels} (service.max_upload_pixels)")
        try:
            image = decode_image(data, max_pixels=settings.max_upload_pixels, name=name)
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        try:
            self.server.api.control.set_source_image(image)
        except NoFaceError as exc:
            raise Refused(422, str(exc)) from None
        except StreamswapError as exc:
            raise Refused(409, str(exc)) from None
        self._send_json(200, {"ok": True, "width": image.shape[1], "height": image.shape[0]})

    def _pause(self) -> None:
        self._no_options(self._json_body())
        self.server.api.control.pause()
        self._send_json(200, {"ok": True, "paused": True})

    def _resume(self) -> None:
        self._no_options(self._json_body())
        self.server.api.control.resume()
        self._send_json(200, {"ok": True, "paused": False})

    def _reload(self) -> None:
        self._no_options(self._json_body())
        try:
            result = self.server.api.control.reload()
        except StreamswapError as exc:
            raise Refused(400, f"reload refused, the running configuration is kept: {exc}") from None
        self._send_json(200, {"ok": True, **result})

    @staticmethod
    def _no_options(body: dict[str, Any]) -> None:
        if body:
            raise Refused(400, f"unknown field(s) {', '.join(sorted(body))}; this endpoint takes no options")


