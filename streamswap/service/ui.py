"""The control page: static HTML/JS/CSS shipped in the package (service/static, no CDN),
and the routes it needs beside the control API's own (/status, /source, /pause, /resume,
/login):

    GET /               the page (no token needed to load it; it asks for one when the API does)
    GET /ui/{file}      its script and style sheet
    GET /preview.mjpg   the live preview: MJPEG (multipart/x-mixed-replace), at most
                        service.preview_fps frames a second, each part with X-Frame-Index
    GET /preview.jpg    one preview frame (X-Frame-Index: the output frame's index); waits
                        for a frame newer than ?after=SEQ when given
    GET /events         recent log events (?after=SEQ)

The preview and events need the token (or the session cookie of POST /login), like every
control route. Frames are taken and encoded only while someone watches (service.preview).
"""

from __future__ import annotations

import contextlib
import logging
from importlib import resources
from typing import Any, AsyncIterator, Iterator

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from streamswap.logs import kv
from streamswap.service.api import Refused, api_context, get_route, require_auth
from streamswap.service.control import PeopleControl, StageSet
from streamswap.service.events import EventLog
from streamswap.service.preview import PreviewTap

log = logging.getLogger(__name__)

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
BOUNDARY = "streamswapframe"
# The page and its files: nothing from elsewhere, no inline script (a strict CSP holds).
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# A preview stream with no new frame for this long sends the last one again, so a paused
# or stalled pipeline still shows a picture and a gone client is noticed.
_KEEPALIVE_S = 2.0


def static_file(name: str) -> bytes:
    return (resources.files("streamswap.service") / "static" / name).read_bytes()


def build_router(tap: PreviewTap, events: EventLog) -> APIRouter:
    """The page's routes, for `ControlApi(..., routers=[...])`."""
    page = APIRouter(tags=["page"])
    watched = APIRouter(tags=["page"], dependencies=[Depends(require_auth)])

    @get_route(page, "/", response_class=Response, include_in_schema=False)
    async def index() -> Response:
        return Response(static_file("index.html"), media_type=STATIC_FILES["index.html"], headers=_PAGE_HEADERS)

    @get_route(page, "/ui/{name}", response_class=Response, include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in STATIC_FILES or name == "index.html":
            raise Refused(404, f"no page file {name[:100]}")
        return Response(static_file(name), media_type=STATIC_FILES[name], headers=_PAGE_HEADERS)

    @watched.get("/preview.mjpg", response_class=StreamingResponse)
    async def preview_stream(request: Request) -> StreamingResponse:
        """The output as MJPEG for an <img>: frames are taken only while it is open."""
        ctx = api_context(request)

        async def parts() -> AsyncIterator[bytes]:
            with tap.watch():
                log.info(
                    "preview viewer connected",
                    extra=kv(client=request.client.host if request.client else "?", viewers=tap.viewers),
                )
                seq = tap.seq  # frames taken from now on, not one left from an earlier viewer
                waited = 0.0
                try:
                    while True:
                        frame = await anyio.to_thread.run_sync(tap.latest, seq, limiter=ctx.limiter("preview"))
                        if frame is None and waited >= _KEEPALIVE_S:
                            frame = await anyio.to_thread.run_sync(tap.latest, 0, limiter=ctx.limiter("preview"))
                        if frame is None:
                            await anyio.sleep(tap.interval / 2)
                            waited += tap.interval / 2
                            continue
                        seq, waited = frame.seq, 0.0
                        yield (
                            (
                                f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(frame.jpeg)}\r\n"
                                f"X-Frame-Index: {frame.index}\r\n\r\n"
                            ).encode()
                            + frame.jpeg
                            + b"\r\n"
                        )
                        await anyio.sleep(tap.interval)
                finally:
                    log.info("preview viewer gone", extra=kv(viewers=tap.viewers - 1))

        return StreamingResponse(
            parts(),
            media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    @get_route(watched, "/preview.jpg", response_class=Response, responses={503: {"description": "no frame"}})
    async def preview_still(request: Request, after: int = 0, timeout: float = 5.0) -> Response:
        """One preview frame newer than `after` (a seq from X-Preview-Seq), within `timeout` s."""
        ctx = api_context(request)
        timeout = min(max(timeout, 0.0), 30.0)
        with tap.watch():
            with anyio.move_on_after(timeout):
                while True:
                    frame = await anyio.to_thread.run_sync(tap.latest, after, limiter=ctx.limiter("preview"))
                    if frame is not None:
                        return Response(
                            frame.jpeg,
                            media_type="image/jpeg",
                            headers={
                                "Cache-Control": "no-store",
                                "X-Frame-Index": str(frame.index),
                                "X-Preview-Seq": str(frame.seq),
                            },
                        )
                    await anyio.sleep(tap.interval / 2)
        raise Refused(
            503, f"no output frame within {timeout:g} s (is the pipeline running? see /status)", {"Retry-After": "1"}
        )

    @get_route(watched, "/events")
    async def recent_events(after: int = 0) -> JSONResponse:
        """Recent log events (INFO and up), newer than `after`."""
        seq, items = events.since(after)
        return JSONResponse({"seq": seq, "events": items})

    router = APIRouter()
    router.include_router(page)
    router.include_router(watched)
    return router


class PageParts:
    """The tap, the event log and the router of one control page (daemon or `run --ui`)."""

    def __init__(self, settings: Any) -> None:
        self.tap = PreviewTap(fps=settings.preview_fps, max_width=settings.preview_width)
        self.events = EventLog()
        self.router = build_router(self.tap, self.events)

    def start(self) -> "PageParts":
        """Start collecting log events for the page."""
        self.events.attach()
        return self

    def close(self) -> None:
        self.events.detach()


class RunControl:
    """The control API's DaemonControl for `streamswap run --ui`: one pipeline (pause,
    source face, selection and mapping), no reload (that is the daemon's: `streamswap serve`)."""

    def __init__(self, runtime: Any, stages: StageSet | None = None) -> None:
        self.runtime = runtime  # the Pipeline (pause, status)
        self.stages = stages  # its face stages (identities), None when nothing is swapped

    def health(self) -> tuple[bool, dict[str, Any]]:
        state = self.runtime.status()["state"]
        ready = state in ("running", "degraded")
        return ready, {"ready": ready, "live": True, "state": state}

    def status(self) -> dict[str, Any]:
        return self.runtime.status()

    def set_source_image(self, image_bgr: Any) -> None:
        """Prepared on the stages' identity worker (one at a time), switched at the next
        frame boundary."""
        if self.stages is None:
            from streamswap.errors import StreamswapError

            raise StreamswapError("this pipeline has no face swapper; start it with --source FACE.jpg")
        self.stages.set_source_images([image_bgr])

    def people(self) -> PeopleControl | None:
        """Who is swapped into whom, for /faces/selection and /faces/map."""
        return None if self.stages is None else self.stages.people

    def pause(self) -> None:
        self.runtime.pause()

    def resume(self) -> None:
        self.runtime.resume()

    def reload(self) -> dict[str, Any]:
        from streamswap.errors import StreamswapError

        raise StreamswapError("`streamswap run` has no config reload; restart it, or use `streamswap serve`")


@contextlib.contextmanager
def serve_page(runtime: Any, stages: Any, config: Any, parts: PageParts, metrics: Any) -> Iterator[Any]:
    """The control API with the page for one `run` pipeline, while the block runs."""
    import os

    from streamswap.errors import ConfigError
    from streamswap.service.api import ControlApi
    from streamswap.service.settings import TOKEN_ENV

    if config.service.api is None:
        raise ConfigError("--ui needs an address: set service.api or pass --api HOST:PORT")
    token = config.service.token or os.environ.get(TOKEN_ENV) or None
    from streamswap.service.faces_api import router as faces_router

    control = RunControl(runtime, stages)
    # Without face stages there is nothing to select: no such routes (the page hides the card).
    routers = ([faces_router] if control.people() is not None else []) + [parts.router]
    api = ControlApi(config.service, control, metrics, token, routers=routers)
    api.start()
    log.info(f"control page: {api.url}/", extra=kv(token=bool(token)))
    try:
        yield api
    finally:
        api.close()
