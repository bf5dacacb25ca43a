"""The control API: FastAPI routes served by uvicorn (`service.httpserver`) in a thread.

    GET  /health   readiness: 200 when frames flow, 503 while loading, re-opening or stalled;
                   the JSON body also says `live` (GET /health/ready and /health/live answer
                   each alone: /health/live stays 200 while models load or an input is lost)
    GET  /metrics  Prometheus text
    GET  /status   JSON snapshot of the pipeline (addresses with their secrets masked)
    POST /source   a face image (image/jpeg, image/png, ...) -> new identity at the next frame
    POST /pause    swapping off (frames keep flowing)   POST /resume   swapping on
    POST /reload   re-read the config file (same as SIGHUP)
    POST /login    {"token": "..."} -> a session cookie for a browser page; POST /logout
    GET  /openapi.json  this API's OpenAPI description

Every refusal is a 4xx (or 503 when busy) with a JSON body `{"error": "..."}`; nothing a
client sends can stop the stream. Order of checks: Host (every request), then the token
(all but the health probes and /login), then for POSTs the Origin and the content type
(JSON or an image: never a form encoding a cross-site page could send), then the body,
read with a size cap and a deadline before anything is decoded. Control calls run in
worker threads under `service.request_timeout_s`, so the event loop (and /health) never
waits on the daemon.

Other modules add routes with `ControlApi(..., routers=[router])`: a FastAPI `APIRouter`
whose routes use `Depends(require_auth)` (token or session cookie) and, for POSTs,
`Depends(require_same_origin)`; `api_context(request)` gives the control facade, metrics,
settings and `call()` for blocking work. Streaming answers (StreamingResponse) work as usual.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyCookie, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from streamswap.errors import Busy, ConfigError, InputError, NoFaceError, StreamswapError
from streamswap.io.images import decode_image, read_header
from streamswap.logs import kv
from streamswap.redact import redact_text, redact_uri
from streamswap.service.access import (
    SESSION_TTL_S,
    HostPolicy,
    Sessions,
    bearer_matches,
)
from streamswap.service.control import PeopleControl
from streamswap.service.httpserver import MAX_HEADER_BYTES, DrainPolicy, HttpServer, answer_and_close, drain_body
from streamswap.service.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from streamswap.service.metrics import Metrics
from streamswap.service.settings import ServiceSettings, needs_token, parse_bind

log = logging.getLogger(__name__)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/tiff", "image/gif")
JSON_BODY_LIMIT = 64 * 1024
# Deeper JSON is refused before parsing (Python's parser would recurse until it fails).
JSON_MAX_DEPTH = 32
# A health probe answers within this, whatever the daemon is doing (503 past it).
HEALTH_DEADLINE_S = 2.0
SESSION_COOKIE = "streamswap_session"
MAX_HEADERS = 100
_HEALTH_PATHS = ("/health", "/health/live", "/health/ready")


class DaemonControl(Protocol):
    """What the API drives: the daemon's control facade (health, and the RuntimeControl
    calls with a reload() that re-reads the config and answers what it applied)."""

    def health(self) -> tuple[bool, dict[str, Any]]: ...
    def status(self) -> dict[str, Any]: ...
    def set_source_image(self, image_bgr: Any) -> None: ...
    def pause(self) -> None: ...
    def resume(self) -> None: ...
    def reload(self) -> dict[str, Any]: ...
    def people(self) -> PeopleControl | None: ...


class Refused(Exception):
    """A 4xx/503 answer: status code and the message the client gets."""

    def __init__(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class ApiContext:
    """What route handlers reach through `api_context(request)`."""

    settings: ServiceSettings
    control: DaemonControl
    metrics: Metrics
    token: str | None
    hosts: HostPolicy
    cookie_name: str = SESSION_COOKIE
    sessions: Sessions = field(default_factory=Sessions)
    _limiters: dict[str, anyio.CapacityLimiter] = field(default_factory=dict)

    @property
    def drain(self) -> DrainPolicy:
        return DrainPolicy(self.settings.max_upload_bytes, self.settings.client_timeout_s)

    def limiter(self, kind: str) -> anyio.CapacityLimiter:
        """Worker-thread pools by kind, so a stuck reload cannot starve the probes and at
        most one upload is decoded at a time (bounded memory under hostile uploads)."""
        if kind not in self._limiters:  # created lazily: anyio wants the running loop
            self._limiters[kind] = anyio.CapacityLimiter({"health": 4, "upload": 1}.get(kind, 4))
        return self._limiters[kind]

    async def call(
        self, fn: Callable[..., Any], *args: Any, kind: str = "control", timeout: float | None = None
    ) -> Any:
        """`fn(*args)` in a worker thread, answered 503 if it takes longer than `timeout`
        (default service.request_timeout_s); the call itself then runs to its end."""
        timeout = self.settings.request_timeout_s if timeout is None else timeout
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True, limiter=self.limiter(kind))
        except TimeoutError:
            raise Refused(
                503,
                f"the daemon did not answer within {timeout:g} s; the request may still take effect (see /status)",
                {"Retry-After": "1"},
            ) from None

    def authorized(self, request: Request) -> bool:
        if not self.token:
            return True
        if bearer_matches(request.headers.get("authorization"), self.token):
            return True
        return self.sessions.valid(request.cookies.get(self.cookie_name))


def api_context(request: Request) -> ApiContext:
    return request.app.state.api


# Declared for the OpenAPI description; the checks themselves are in require_auth.
_bearer_doc = HTTPBearer(auto_error=False, description="service.token or $STREAMSWAP_API_TOKEN")
_cookie_doc = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="set by POST /login")


async def require_auth(request: Request, _b: Any = Security(_bearer_doc), _c: Any = Security(_cookie_doc)) -> None:
    """Route dependency: the bearer token (exactly), or a session cookie from /login."""
    ctx = api_context(request)
    if ctx.authorized(request):
        return
    header = request.headers.get("authorization")
    if not header or header.split(" ", 1)[0].lower() != "bearer":
        raise Refused(
            401,
            "missing bearer token: send `Authorization: Bearer TOKEN`",
            {"WWW-Authenticate": 'Bearer realm="streamswap"'},
        )
    raise Refused(401, "wrong bearer token", {"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def require_same_origin(request: Request) -> None:
    """Route dependency for state-changing requests: a browser must send them from our
    own origin (or an allowed host); requests without Origin (curl, scripts) pass."""
    ctx = api_context(request)
    origin = request.headers.get("origin")
    if not ctx.hosts.allows_origin(origin, request.headers.get("host")):
        raise Refused(
            403,
            f"cross-site request refused (Origin {origin!r}); call the API from its own "
            "page or a script, or add the host to service.allowed_hosts",
        )
    if request.headers.get("sec-fetch-site") == "cross-site" and origin is None:
        raise Refused(403, "cross-site request refused (Sec-Fetch-Site: cross-site)")


def _content_type(request: Request) -> str | None:
    raw = request.headers.get("content-type")
    return None if raw is None else raw.split(";", 1)[0].strip().lower()


def _declared_length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    return None if raw is None else int(raw)  # h11 has checked it is one run of digits


def _declares_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or (_declared_length(request) or 0) > 0


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body, refused (413) past `limit` bytes — from Content-Length before
    reading, or while reading a chunked one — and (408) when it takes over `timeout`."""
    request.state.body_read = True
    length = _declared_length(request)
    if length is not None and "transfer-encoding" in request.headers:
        raise Refused(400, "both Content-Length and Transfer-Encoding; send one of them")
    if length is not None and length > limit:
        request.state.body_read = False  # not read: the connection must close after the answer
        raise Refused(413, f"body is {length} bytes, over the limit of {limit} bytes")
    data = bytearray()
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                data += chunk
                if len(data) > limit:
                    request.state.body_read = False
                    raise Refused(413, f"body is over the limit of {limit} bytes")
    except TimeoutError:
        request.state.body_read = False
        raise Refused(408, f"body not received within {timeout:g} s") from None
    return bytes(data)


def json_depth_ok(data: bytes, max_depth: int = JSON_MAX_DEPTH) -> bool:
    """False when brackets nest deeper than `max_depth` (strings skipped), checked before
    json.loads so a 30 000-deep document is a 400, not a RecursionError."""
    depth = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > max_depth:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


async def json_object(request: Request) -> dict[str, Any]:
    """An optional JSON object body. A Content-Type, when given, must be application/json
    (a form encoding is what a cross-site HTML form sends, so it is refused even empty)."""
    ctype = _content_type(request)
    if ctype is not None and ctype != "application/json":
        raise Refused(415, f"expected an application/json body (or none), got {ctype}")
    data = await read_body(request, JSON_BODY_LIMIT, api_context(request).settings.client_timeout_s)
    if not data.strip():
        return {}
    if ctype is None:
        raise Refused(415, "a body needs `Content-Type: application/json`")
    if not json_depth_ok(data):
        raise Refused(400, f"malformed JSON body: nested deeper than {JSON_MAX_DEPTH} levels")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Refused(400, f"malformed JSON body: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise Refused(400, f"the JSON body must be an object, got {type(value).__name__}")
    return value


def _no_options(body: dict[str, Any]) -> None:
    if body:
        names = ", ".join(sorted(str(k)[:40] for k in body)[:10])
        raise Refused(400, f"unknown field(s) {names}; this endpoint takes no options")


def redact_status(value: Any) -> Any:
    """A JSON-able status with every string that holds an address passed through redact_uri."""
    if isinstance(value, dict):
        return {k: redact_status(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_status(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_uri(value) if value.split("://", 1)[0].isalnum() else redact_text(value)
    return value


# -- routes --------------------------------------------------------------------------
def get_route(router: APIRouter, path: str, **kw: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """GET `path` (in the OpenAPI description) and HEAD (answered alike, not described)."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        router.api_route(path, methods=["GET"], **kw)(fn)
        router.api_route(
            path, methods=["HEAD"], include_in_schema=False, **{k: v for k, v in kw.items() if k == "response_class"}
        )(fn)
        return fn

    return register


_ERR = {"description": "refused", "content": {"application/json": {"example": {"error": "what was wrong"}}}}
probes = APIRouter(tags=["health"])
control = APIRouter(tags=["control"], dependencies=[Depends(require_auth)])
session = APIRouter(tags=["session"])


@get_route(probes, "/health", responses={503: {"description": "not ready"}})
@get_route(probes, "/health/ready", include_in_schema=False)
async def health(request: Request) -> JSONResponse:
    """Readiness: 200 while frames flow, 503 while loading, re-opening or stalled (no token needed)."""
    ready, body = await _health(request)
    return JSONResponse(body, 200 if ready else 503)


@get_route(probes, "/health/live", responses={503: {"description": "not live"}})
async def live(request: Request) -> JSONResponse:
    """Liveness: 200 while the daemon itself turns (also while models load or the input is lost)."""
    _, body = await _health(request)
    return JSONResponse(body, 200 if body.get("live") else 503)


async def _health(request: Request) -> tuple[bool, dict[str, Any]]:
    ctx = api_context(request)
    try:
        return await ctx.call(ctx.control.health, kind="health", timeout=HEALTH_DEADLINE_S)
    except Refused:
        return False, {
            "live": False,
            "ready": False,
            "error": f"the daemon did not answer within {HEALTH_DEADLINE_S:g} s",
        }


@get_route(control, "/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    ctx = api_context(request)
    data = await ctx.call(ctx.metrics.render, kind="health")
    return Response(data, media_type=METRICS_CONTENT_TYPE)


@get_route(control, "/status")
async def status(request: Request) -> JSONResponse:
    """JSON snapshot of the pipeline: state, fps, latency, drops, errors, source identity."""
    ctx = api_context(request)
    return JSONResponse(redact_status(await ctx.call(ctx.control.status)))


@control.post(
    "/source",
    dependencies=[Depends(require_same_origin)],
    responses={413: _ERR, 415: _ERR, 422: _ERR, 409: _ERR, 503: _ERR},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in IMAGE_TYPES},
        }
    },
)
async def source(request: Request) -> JSONResponse:
    """A face photo as the request body: its identity is swapped in from the next frame."""
    ctx = api_context(request)
    image, _ = await upload_image(request, ctx.control.set_source_image, "source")
    return JSONResponse({"ok": True, "width": image.shape[1], "height": image.shape[0]})


async def upload_image(request: Request, use: Callable[[Any], Any], path: str) -> tuple[Any, Any]:
    """The request body as a decoded BGR image (content type, size and header pixel count
    checked before anything is decoded), and `use(image)` run in a worker thread while this
    upload still holds the one-at-a-time upload slot (bounded memory). A photo without a
    face is a 422, another StreamswapError from `use` a 409."""
    ctx = api_context(request)
    settings = ctx.settings
    ctype = _content_type(request)
    if ctype not in IMAGE_TYPES:
        raise Refused(
            415,
            f"Content-Type must be one of {', '.join(IMAGE_TYPES)}; got {ctype} "
            "(send the file itself as the body: curl --data-binary @face.jpg "
            f"-H 'Content-Type: image/jpeg' …/{path})",
        )
    if _declared_length(request) == 0:
        raise Refused(400, "send the image as the request body")
    # One upload read and decoded at a time (bounded memory); the others wait their turn.
    limiter = ctx.limiter("upload")
    try:
        with anyio.fail_after(settings.request_timeout_s):
            await limiter.acquire()
    except TimeoutError:
        raise Refused(503, "other uploads are being processed; retry shortly", {"Retry-After": "1"}) from None
    try:
        data = await read_body(request, settings.max_upload_bytes, settings.client_timeout_s)
        if not data:
            raise Refused(
                411 if "content-length" not in request.headers else 400,
                "send the image as the request body with a Content-Length",
            )
        name = "uploaded image"
        try:
            header = read_header(data, name)
        except InputError as exc:
            raise Refused(415, str(exc)) from None
        if header.width * header.height > settings.max_upload_pixels:  # before any decoding
            raise Refused(
                413,
                f"{name}: {header.format} header says {header.width}×{header.height} pixels, "
                f"over the limit of {settings.max_upload_pixels} (service.max_upload_pixels)",
            )
        try:
            image = await ctx.call(lambda: decode_image(data, max_pixels=settings.max_upload_pixels, name=name))  # noqa: F821 (awaited before the del below)
        except InputError as exc:
            raise Refused(400, str(exc)) from None
        del data
        try:
            result = await ctx.call(use, image)
        except NoFaceError as exc:
            raise Refused(422, str(exc)) from None
        except Busy as exc:
            raise Refused(503, str(exc), {"Retry-After": "1"}) from None
        except StreamswapError as exc:
            raise Refused(409, str(exc)) from None
    finally:
        limiter.release()
    return image, result


@control.post("/pause", dependencies=[Depends(require_same_origin)], responses={400: _ERR, 415: _ERR})
async def pause(request: Request) -> JSONResponse:
    """Swapping off: frames keep flowing, unswapped. Body: none or `{}`."""
    ctx = api_context(request)
    _no_options(await json_object(request))
    await ctx.call(ctx.control.pause)
    return JSONResponse({"ok": True, "paused": True})


@control.post("/resume", dependencies=[Depends(require_same_origin)], responses={400: _ERR, 415: _ERR})
async def resume(request: Request) -> JSONResponse:
    """Swapping on again. Body: none or `{}`."""
    ctx = api_context(request)
    _no_options(await json_object(request))
    await ctx.call(ctx.control.resume)
    return JSONResponse({"ok": True, "paused": False})


@control.post("/reload", dependencies=[Depends(require_same_origin)], responses={400: _ERR, 415: _ERR, 503: _ERR})
async def reload(request: Request) -> JSONResponse:
    """Re-read the config file (as SIGHUP): `applied` and `restart_required` keys."""
    ctx = api_context(request)
    _no_options(await json_object(request))
    try:
        result = await ctx.call(ctx.control.reload)
    except Busy as exc:
        raise Refused(
            503, f"reload not applied, the running configuration is kept: {exc}", {"Retry-After": "1"}
        ) from None
    except StreamswapError as exc:
        raise Refused(400, f"reload refused, the running configuration is kept: {redact_text(str(exc))}") from None
    return JSONResponse({"ok": True, **result})


@get_route(control, "/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@session.post("/login", dependencies=[Depends(require_same_origin)], responses={401: _ERR, 415: _ERR})
async def login(request: Request) -> JSONResponse:
    """`{"token": "..."}` -> a session cookie (HttpOnly, SameSite=Strict) that a browser
    page uses instead of the Authorization header. Without a configured token: no-op."""
    ctx = api_context(request)
    body = await json_object(request)
    if not ctx.token:
        return JSONResponse({"ok": True, "token_required": False})
    given = body.get("token")
    if not isinstance(given, str) or not bearer_matches(f"Bearer {given}", ctx.token):
        raise Refused(401, "wrong token")
    response = JSONResponse({"ok": True, "token_required": True})
    response.set_cookie(
        ctx.cookie_name, ctx.sessions.open(), max_age=int(SESSION_TTL_S), httponly=True, samesite="strict", path="/"
    )
    return response


@session.post("/logout", dependencies=[Depends(require_same_origin)])
async def logout(request: Request) -> JSONResponse:
    """Ends the browser session of the cookie sent."""
    ctx = api_context(request)
    ctx.sessions.close(request.cookies.get(ctx.cookie_name))
    response = JSONResponse({"ok": True})
    response.delete_cookie(ctx.cookie_name, path="/", httponly=True, samesite="strict")
    return response


# -- errors --------------------------------------------------------------------------
_METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


# Starlette types every exception handler as taking any Exception: these narrow to the
# class they are registered for.
async def _refused(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, Refused):
        raise exc
    headers = dict(exc.headers)
    if _declares_body(request) and not getattr(request.state, "body_read", False):
        # Refused before its body was read: that body must not be parsed as the next
        # request, and a large one is not worth reading, so the connection ends here.
        try:
            await drain_body(request.scope, request.receive, api_context(request).drain)
        except Exception:  # the client went away meanwhile
            pass
        headers["Connection"] = "close"
    context = kv(
        client=request.client.host if request.client else "?",
        method=request.method,
        path=request.url.path[:200],
        code=exc.code,
        error=exc.message,
    )
    (log.error if exc.code >= 500 and exc.code != 503 else log.warning)("api request refused", extra=context)
    return JSONResponse({"error": exc.message}, exc.code, headers=headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Routing misses (404/405) in the same JSON shape as every other refusal."""
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = (
            f"no endpoint {request.url.path[:200]}; try /health, /metrics, /status, /source, /pause, /resume, /reload"
        )
    elif exc.status_code == 405:
        # Every method some route takes on this path (GET and HEAD are registered apart,
        # routers nest), asked of the routes themselves.
        def takes(method: str) -> bool:
            scope = {**request.scope, "method": method}
            return any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes)

        allowed = [m for m in _METHOD_ORDER if takes(m)]
        headers["Allow"] = ", ".join(m for m in allowed if m)
        message = f"{request.method} {request.url.path} is not supported; use {headers['Allow']}"
    else:
        message = str(exc.detail)
    return await _refused(request, Refused(exc.status_code, message, headers))


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the client gets a 500 without a traceback, the stream goes on."""
    return JSONResponse({"error": "internal error; see the daemon's log"}, 500, headers={"Connection": "close"})


class _Guard:
    """Outermost ASGI layer: the Host check (before anything else, probes included), the
    API request counter, and one log line with the traceback for a handler that crashed."""

    def __init__(self, app: FastAPI, ctx: ApiContext) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def counted_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        headers = scope["headers"]
        host = next((v.decode("latin-1") for k, v in headers if k == b"host"), None)
        try:
            size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            size += sum(len(k) + len(v) + 4 for k, v in headers)
            if size > MAX_HEADER_BYTES or len(headers) > MAX_HEADERS:
                # h11 caps a header block that arrives in pieces; one that arrives whole is
                # measured here.
                await answer_and_close(
                    scope,
                    receive,
                    counted_send,
                    431,
                    f"request headers too large (over {MAX_HEADER_BYTES} bytes or {MAX_HEADERS} fields)",
                    drain=self.ctx.drain,
                )
            elif not self.ctx.hosts.allows(host):
                log.warning("api request refused: unknown Host", extra=kv(host=(host or "")[:100]))
                await answer_and_close(
                    scope,
                    receive,
                    counted_send,
                    403,
                    f"Host {(host or '')[:100]!r} is not this API's address; add the "
                    "name to service.allowed_hosts to use it",
                    drain=self.ctx.drain,
                )
            else:
                await self.app(scope, receive, counted_send)
        except Exception:
            log.exception("api handler crashed", extra=kv(method=scope.get("method"), path=scope.get("path", "")[:200]))
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "other"
            self.ctx.metrics.observe_api(scope.get("method", "?"), label, status)


def build_app(ctx: ApiContext, routers: Sequence[APIRouter] = ()) -> _Guard:
    """The ASGI app: the built-in routes, then `routers` from other modules."""
    app = FastAPI(
        title="streamswap control API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        description=(__doc__ or "").split("\n\n", 2)[1],
    )
    app.state.api = ctx
    app.add_exception_handler(Refused, _refused)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _crashed)
    for router in (probes, control, session, *routers):
        app.include_router(router)
    return _Guard(app, ctx)


class ControlApi:
    """Owns the HTTP server thread. `start()` binds (raising ConfigError on a bad or busy
    address, or a non-local address without a token); `close()` stops it."""

    def __init__(
        self,
        settings: ServiceSettings,
        control: DaemonControl,
        metrics: Metrics,
        token: str | None,
        routers: Sequence[APIRouter] = (),
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
            raise ConfigError(
                "the API token (service.token or $STREAMSWAP_API_TOKEN) is too short: "
                "use at least 16 characters, e.g. `openssl rand -hex 32`"
            )
        self.control = control
        self.metrics = metrics
        self.token = token
        self.routers = list(routers)
        self._server: HttpServer | None = None

    def start(self) -> None:
        server = HttpServer(
            self.host,
            self.port,
            header_timeout_s=self.settings.client_timeout_s,
            max_connections=self.settings.max_connections,
            drain=DrainPolicy(self.settings.max_upload_bytes, self.settings.client_timeout_s),
        )
        self.port = server.port  # the real port when 0 was asked for
        server.start(self._app())
        self._server = server
        log.info("control API listening", extra=kv(address=f"{self.host}:{self.port}", token=bool(self.token)))

    def _app(self) -> _Guard:
        ctx = ApiContext(
            settings=self.settings,
            control=self.control,
            metrics=self.metrics,
            token=self.token,
            hosts=HostPolicy(self.host, list(self.settings.allowed_hosts)),
            # cookies are per host, not per port: one name per daemon (streamswap@cam0, @cam1)
            cookie_name=f"{SESSION_COOKIE}_{self.port}",
        )
        return build_app(ctx, self.routers)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.running

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
