"""Turn URI strings into sources and sinks (see ARCHITECTURE.md, "Sources and sinks are URIs").

Inputs:  test://[pattern][?width=&height=&fps=&frames=], test://photo[?path=...],
         v4l2:///dev/videoN[?width=&height=&fps=&format=mjpeg], /dev/videoN,
         avfoundation://0 (macOS), dshow://Camera Name (Windows), webcam://0 (this platform's),
         rtsp(s)://, rtmp(s)://, srt://, http(s)://, udp://, file://path, path/to/file.
Outputs: vcam://, vcam:///dev/videoN, rtmp(s)://host/app/key, file.{mp4,mov,mkv,flv},
         file://path.ext, display://, null://.
"""

from __future__ import annotations

import math
import os
import stat
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from streamswap.errors import InputError, OutputError
from streamswap.files import check_output_file, kind_of
from streamswap.io.avsink import FILE_FORMATS, AvSink
from streamswap.io.avsource import AvSource, OpenSpec
from streamswap.io.base import Sink, Source
from streamswap.io.display import DisplaySink, NullSink
from streamswap.io.reconnect import Backoff, ReconnectingSink, ReconnectingSource
from streamswap.io.settings import IoSettings
from streamswap.io.testsrc import PatternSource, PhotoSource
from streamswap.io.vcam import VcamSink
from streamswap.safeyaml import shorten

NETWORK_INPUTS = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "http", "https", "udp")
INPUT_SCHEMES = ("test", "v4l2", "avfoundation", "dshow", "webcam", "file") + NETWORK_INPUTS
OUTPUT_SCHEMES = ("vcam", "rtmp", "rtmps", "file", "display", "null")


def _check_port(uri: str, error: type[InputError] | type[OutputError]) -> None:
    """A network URI's port must be 1..65535 (urllib raises a bare ValueError later)."""
    try:
        port = urlsplit(uri).port
    except ValueError:
        netloc = urlsplit(uri).netloc.rpartition("@")[2]
        raise error(f"{uri}: the port in {shorten(netloc)} is not a number from 1 to 65535") from None
    if port == 0:
        raise error(f"{uri}: port 0 is not a port; use 1 to 65535 (RTMP's is 1935)")


def _query(uri: str) -> tuple[Any, dict[str, str]]:
    parts = urlsplit(uri)
    return parts, {k: v[-1] for k, v in parse_qs(parts.query).items()}


def _number(query: dict[str, str], key: str, uri: str, kind: type = int) -> Any:
    if key not in query:
        return None
    try:
        value = kind(query[key])
    except ValueError:
        raise InputError(f"{uri}: {key}={shorten(query[key])} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{uri}: {key} must be a positive number, got {shorten(query[key])}")
    return value


def _scheme(uri: str) -> str:
    head, sep, _ = uri.partition("://")
    # A Windows drive letter ("C:\\x.mp4") or a plain path has no scheme.
    return head.lower() if sep and len(head) > 1 else ""


def output_kind(uri: str) -> str:
    """What an output URI names: "file", "network" (rtmp), "vcam", "display" or "null"
    (unknown schemes count as files here; `open_sink` reports them)."""
    scheme = _scheme(uri.strip())
    if scheme in ("rtmp", "rtmps"):
        return "network"
    if scheme in ("vcam", "display", "null"):
        return scheme
    return "file"


def input_kind(uri: str) -> str:
    """What an input URI names: "test", "camera", "network" or "file"."""
    uri = uri.strip()
    scheme = _scheme(uri)
    if scheme == "test":
        return "test"
    if scheme in ("v4l2", "avfoundation", "dshow", "webcam") or uri.startswith("/dev/video"):
        return "camera"
    if scheme in NETWORK_INPUTS:
        return "network"
    return "file"


def open_source(uri: str, settings: IoSettings, *, live: bool | None = None, loop: bool = False) -> Source:
    """Build (not open) the source a URI names.

    `live` None = by kind: cameras, network streams and test:// are live, files are not.
    A live file is paced at its own frame rate (a stand-in for a camera); a non-live file
    is read as fast as the pipeline takes it, losing nothing. Live network inputs and
    cameras reconnect when lost (io.reconnect) with synthetic frames meanwhile. `loop`: a
    live file starts again at its end, inside the one source (io.loop; serve).
    """
    uri = uri.strip()
    scheme = _scheme(uri)
    if scheme == "test":
        return _test_source(uri, settings, True if live is None else live)
    if scheme in ("v4l2", "avfoundation", "dshow", "webcam") or uri.startswith("/dev/video"):
        return _device_source(uri, scheme, settings, True if live is None else live)
    if scheme in NETWORK_INPUTS:
        _check_port(uri, InputError)
        return _network_source(uri, scheme, settings, True if live is None else live)
    if scheme == "file":
        path = unquote(urlsplit(uri).path)
    elif scheme == "":
        path = uri
    else:
        raise InputError(
            f"{uri}: unknown input scheme {scheme!r}; supported: "
            + ", ".join(f"{s}://" for s in INPUT_SCHEMES)
            + ", /dev/videoN or a file path"
        )
    if loop and live:
        from streamswap.io.loop import LoopingSource

        _file_source(path, settings, True)  # checked now: a missing file is the user's error
        return LoopingSource(lambda: _file_source(path, settings, True), name=path)
    return _file_source(path, settings, bool(live))


def _test_source(uri: str, settings: IoSettings, live: bool) -> Source:
    parts, query = _query(uri)
    kind = (parts.netloc or parts.path.strip("/") or "pattern").lower()
    width = _number(query, "width", uri) or settings.width or 640
    height = _number(query, "height", uri) or settings.height or 480
    fps = Fraction(_number(query, "fps", uri, float) or settings.fps or 30).limit_denominator(1001)
    frames = _number(query, "frames", uri)
    if kind == "pattern":
        return PatternSource(width, height, fps, live, frames)
    if kind == "photo":
        return PhotoSource(query.get("path"), width, height, fps, live, frames)
    raise InputError(f"{uri}: unknown test source {kind!r}; use test://pattern or test://photo?path=IMAGE")


def _size(settings: IoSettings) -> tuple[int, int] | None:
    return (settings.width, settings.height) if settings.width and settings.height else None


def _device_source(uri: str, scheme: str, settings: IoSettings, live: bool) -> Source:
    parts, query = _query(uri)
    width = _number(query, "width", uri) or settings.width
    height = _number(query, "height", uri) or settings.height
    fps = _number(query, "fps", uri, float) or settings.fps
    pixel_format = query.get("format") or settings.pixel_format
    if scheme == "webcam":
        scheme = {"darwin": "avfoundation", "win32": "dshow"}.get(sys.platform, "v4l2")
        device = parts.netloc or parts.path.strip("/") or "0"
        if scheme == "v4l2" and device.isdigit():
            device = f"/dev/video{device}"
    elif scheme in ("avfoundation", "dshow"):
        device = unquote(parts.netloc + parts.path).lstrip("/") or "0"
    else:
        scheme = "v4l2"
        device = parts.path if parts.scheme else uri.split("?", 1)[0]
        if not device.startswith("/"):
            raise InputError(f"{uri}: expected v4l2:///dev/videoN (three slashes, an absolute device path)")
    if scheme == "dshow" and not device.startswith("video="):
        device = f"video={device}"
    options: dict[str, str] = {}
    if width and height:
        options["video_size"] = f"{width}x{height}"
    if fps:
        options["framerate"] = f"{fps:g}"
    if pixel_format:
        # v4l2 calls it input_format; avfoundation/dshow take pixel_format / vcodec.
        if scheme == "v4l2":
            options["input_format"] = pixel_format
        elif scheme == "dshow" and pixel_format == "mjpeg":
            options["vcodec"] = "mjpeg"
        else:
            options["pixel_format"] = pixel_format
    if scheme == "v4l2" and not Path(device).exists():
        raise InputError(f"{uri}: {device} does not exist; list the cameras with `streamswap cameras`")
    spec = OpenSpec(device, "device", format=scheme, options=options)
    return _live_or_plain(spec, settings, live, uri, fps, (width, height) if width and height else None)


def _network_source(uri: str, scheme: str, settings: IoSettings, live: bool) -> Source:
    options: dict[str, str] = {
        # Low delay: probe briefly. (Not fflags=nobuffer: it throws away the packets read
        # while probing, often the first keyframe, so the picture starts a GOP later.)
        "flags": "low_delay",
        "probesize": "1000000",
        "analyzeduration": "1000000",
    }
    read_us = str(int(settings.read_timeout_s * 1_000_000))
    if scheme in ("rtsp", "rtsps"):
        options.update(rtsp_transport=settings.rtsp_transport, timeout=read_us, max_delay="500000")
    elif scheme in ("http", "https"):
        options.update(rw_timeout=read_us)
    elif scheme == "srt":
        options.update(rw_timeout=read_us)
    spec = OpenSpec(uri, "network", options=options, timeout=(settings.open_timeout_s, settings.read_timeout_s))
    return _live_or_plain(spec, settings, live, uri, settings.fps, _size(settings))


def _live_or_plain(
    spec: OpenSpec, settings: IoSettings, live: bool, name: str, fps: float | None, size: tuple[int, int] | None
) -> Source:
    def make(fixed: tuple[int, int] | None) -> AvSource:
        return AvSource(
            spec, live=live, pace=False, size=fixed or size, fps=fps, name=name, threads=settings.decoder_threads
        )

    if live and settings.reconnect:
        backoff = Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        return ReconnectingSource(make, name=name, on_loss=settings.on_loss, backoff=backoff)
    return make(None)


def _local_path(uri: str) -> str:
    """The file a URI or path names ("" for cameras, streams and test sources)."""
    scheme = _scheme(uri)
    if scheme == "file":
        return unquote(urlsplit(uri).path)
    return uri if scheme == "" and not uri.startswith("/dev/video") else ""


def _file_source(path: str, settings: IoSettings, live: bool) -> AvSource:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: input file does not exist; check the --input path") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read input file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        # A FIFO would block the open until a writer comes, a device never ends: only
        # regular files are file inputs (cameras are v4l2://, streams have URLs).
        raise InputError(
            f"{path}: is {kind_of(mode)}, not a video file; give a video file path, "
            "a camera (v4l2:///dev/videoN) or a stream URL"
        )
    pace = {"auto": live, "realtime": True, "fast": False}[settings.file_pacing]
    spec = OpenSpec(path, "file")
    return AvSource(
        spec, live=live, pace=pace, size=_size(settings), fps=settings.fps, name=path, threads=settings.decoder_threads
    )


def open_sink(uri: str, settings: IoSettings, protect: Sequence[str] = ()) -> Sink:
    """Build (not open) the sink a URI names. Network outputs reconnect when they drop.

    A file output that is one of `protect` (the input, the source photos) is refused; an
    existing one too unless settings.existing_output says overwrite or rename."""
    uri = uri.strip()
    scheme = _scheme(uri)
    if scheme == "vcam":
        parts = urlsplit(uri)
        device = parts.path or settings.vcam_device or None
        return VcamSink(device, settings.vcam_fps, name=uri)
    if scheme == "null":
        return NullSink(uri)
    if scheme == "display":
        return DisplaySink(uri)
    if scheme in ("rtmp", "rtmps"):
        _check_port(uri, OutputError)
        first = AvSink(uri, "flv", settings, network=True)

        def make() -> Sink:
            # The encoder probed by the first connection is reused by reconnections.
            return AvSink(uri, "flv", settings, network=True, encoder=first.encoder)

        if not settings.reconnect:
            return first
        pending = [first]

        def make_next() -> Sink:
            return pending.pop() if pending else make()

        return ReconnectingSink(
            make_next, name=uri, backoff=Backoff(settings.reconnect_initial_s, settings.reconnect_max_s)
        )
    if scheme in ("file", ""):
        path = unquote(urlsplit(uri).path) if scheme == "file" else uri
        suffix = Path(path).suffix.lower()
        if suffix not in FILE_FORMATS:
            raise OutputError(
                f"{uri}: unsupported output file type {suffix or '(none)'!r}; use "
                + ", ".join(sorted(FILE_FORMATS))
                + " or a URI scheme: "
                + ", ".join(f"{s}://" for s in OUTPUT_SCHEMES)
            )
        if not Path(path).resolve().parent.is_dir():
            raise OutputError(f"{uri}: folder {Path(path).parent} does not exist; create it first")
        check_output_file(path, settings.existing_output, [_local_path(p) for p in protect], error=OutputError)
        return AvSink(
            path,
            FILE_FORMATS[suffix],
            settings,
            network=False,
            move_existing_aside=settings.existing_output == "rename",
        )
    raise OutputError(
        f"{uri}: unknown output scheme {scheme!r}; supported: "
        + ", ".join(f"{s}://" for s in OUTPUT_SCHEMES)
        + " or a file path ending in "
        + "/".join(sorted(FILE_FORMATS))
    )
