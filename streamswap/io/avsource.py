"""A PyAV input (file, network URL or capture device) decoding into caller-owned BGR slots."""

from __future__ import annotations

import io
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import numpy as np

from streamswap.errors import InputError
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat, check_frame_size
from streamswap.io.convert import BgrWriter
from streamswap.logs import kv
from streamswap.redact import redact_uri

log = logging.getLogger(__name__)

# Audio packets kept for take_audio(); a consumer that never asks must not grow memory.
MAX_AUDIO_BACKLOG = 1024
# Consecutive demux errors after which a file input is treated as ended.
MAX_DEMUX_ERRORS = 16
DEFAULT_FPS = Fraction(30)


class SourceLost(Exception):
    """A live input stopped delivering (network drop, unplugged camera, end of stream)."""


@dataclass
class OpenSpec:
    """How to open one input with PyAV."""

    url: str
    kind: str  # "file" | "network" | "device"
    format: str | None = None  # demuxer / device name ("v4l2", "avfoundation", "dshow")
    options: dict[str, str] = field(default_factory=dict)
    timeout: tuple[float, float] | None = None  # (open, read) seconds for network inputs


class AvSource:
    """Decodes one PyAV input. Implements `io.base.Source`.

    live=True: decoder slice threading only (frame threading would add frames of delay);
    live=False: frame threading. pace=True: each frame is handed out when its pts is due
    (a file standing in for a camera; io.file_pacing decides it for files).
    Decoder errors skip the frame and count it; on a live input a read failure or the end
    of the stream raises `SourceLost` for `ReconnectingSource` to handle.

    `fps` (io.fps) on a file or network input converts the rate: each decoded frame goes to
    the output frame nearest its timestamp, so frames are dropped (lower rate) or the
    previous one repeated (higher rate) and the duration stays the same. A camera is asked
    for `fps` when it is opened instead (`io.uri`).
    """

    def __init__(
        self,
        spec: OpenSpec,
        *,
        live: bool,
        pace: bool,
        size: tuple[int, int] | None = None,
        fps: float | Fraction | None = None,
        name: str | None = None,
        threads: int = 0,
    ) -> None:
        self.spec = spec
        self.live = live
        self.threads = threads  # decoder threads; 0 = FFmpeg's choice (one per core)
        self.pace = pace
        self.name = redact_uri(name or spec.url)  # shown in status, metrics labels and logs
        self._size = size
        self._fps = Fraction(fps).limit_denominator(1001) if fps else None
        self._container: Any = None
        self._video: Any = None
        self._audio_stream: Any = None
        self._audio_format: AudioFormat | None = None
        self._template_holder: Any = None
        self._demux: Any = None
        self._frames: deque[Any] = deque()
        self._audio: deque[Any] = deque()
        self._writer: BgrWriter | None = None
        self._format: VideoFormat | None = None
        self._index = 0
        self._eof = False
        self._pace_origin: tuple[float, float] | None = None  # (monotonic, seconds of pts)
        self._convert = False  # io.fps differs from the input's rate: convert by timestamp
        self._repeats = 0  # frames still to repeat before the current one (rate conversion)
        self.frames_total: int | None = None  # a file's frame count when known (progress)
        self._lock = threading.Lock()  # guards the audio queue
        self._read_lock = threading.Lock()  # held while decoding; close() defers to it
        self._close_requested = False
        self.last_frame: Any = None  # last decoded frame (av.VideoFrame), for repeats
        self.first_pts: int | None = None
        self.counters: dict[str, int] = {
            "frames": 0,
            "decode_errors": 0,
            "demux_errors": 0,
            "audio_dropped": 0,
            "rate_dropped": 0,
            "rate_repeated": 0,
        }

    # --- open -------------------------------------------------------------------------
    def open(self) -> VideoFormat:
        spec = self.spec
        started = time.monotonic()
        try:
            self._container = av.open(spec.url, format=spec.format, options=dict(spec.options), timeout=spec.timeout)
        except FileNotFoundError:
            raise InputError(f"{self.name}: no such file; check the --input path") from None
        except (av.error.FFmpegError, OSError) as exc:
            why = error_text(exc)
            if isinstance(exc, av.error.ProtocolNotFoundError):
                scheme = spec.url.partition("://")[0]
                raise InputError(
                    f"{self.name}: this FFmpeg build (in the PyAV wheel) cannot read "
                    f"{scheme}:// inputs; use another protocol (rtsp, rtmp, http) or "
                    "a PyAV built against an FFmpeg with it"
                ) from None
            if spec.timeout and time.monotonic() - started >= min(spec.timeout) * 0.9:
                # A server that accepts but never answers: FFmpeg's own words for it vary
                # ("Invalid data found when processing input" for RTSP), so say what happened.
                why = f"no answer within {time.monotonic() - started:.0f} s: {why}"
            raise InputError(f"{self.name}: cannot open input ({why}); {_hint(spec)}") from None
        container = self._container
        # Cover art in a music file shows up as a one-picture "video" stream: not a video.
        videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
        if not videos:
            kinds = sorted({s.type for s in container.streams})
            self.close()
            if "audio" in kinds:
                raise InputError(
                    f"{self.name}: audio-only input (no video stream); give a video file, "
                    "camera or stream with a picture"
                )
            raise InputError(f"{self.name}: no video stream (found: {', '.join(kinds) or 'nothing'})")
        video = videos[0]
        # Frame threading queues frames inside the decoder: fine for files, latency on live.
        video.thread_type = "SLICE" if self.live else "AUTO"
        if self.threads:
            video.codec_context.thread_count = self.threads
        if self.live:
            video.codec_context.flags |= av.codec.context.Flags.low_delay
        self._video = video
        streams = [video]
        if container.streams.audio:
            self._audio_format = self._make_audio_format(container.streams.audio[0])
            if self._audio_format is not None:
                self._audio_stream = container.streams.audio[0]
                streams.append(self._audio_stream)
        self._demux = container.demux(*streams)
        # The first frame fixes the run's size when none was asked for (some streams only
        # know theirs after decoding) and gives the pts origin.
        try:
            first = self._next_frame()
        except SourceLost as exc:
            self.close()
            raise InputError(f"{self.name}: input failed while starting ({exc}); {_hint(spec)}") from None
        if first is None:
            self.close()
            raise InputError(f"{self.name}: no decodable video frame; the file may be empty or corrupt")
        self._frames.appendleft(first)
        width, height = self._size or (first.width, first.height)
        try:
            check_frame_size(width, height, self.name)  # before the writer's buffers
        except InputError:
            self.close()
            raise
        width, height = width - width % 2, height - height % 2  # 4:2:0 encoders need even sizes
        own_fps = video.average_rate or video.guessed_rate or video.base_rate or DEFAULT_FPS
        own_fps = Fraction(own_fps).limit_denominator(1001)
        fps = self._fps or own_fps
        time_base = video.time_base or Fraction(1, 90000)
        self.first_pts = first.pts
        self._convert = fps != own_fps and spec.kind in ("file", "network") and first.pts is not None
        if spec.kind == "file":
            self.frames_total = _frame_count(container, video, fps, self._convert)
        self._writer = BgrWriter(width, height)
        self._format = VideoFormat(width=width, height=height, fps=fps, time_base=time_base)
        log.info(
            "input opened",
            extra=kv(
                input=self.name,
                codec=video.codec_context.name,
                size=f"{first.width}x{first.height}",
                out=f"{width}x{height}",
                fps=float(fps),
                audio=self._audio_format is not None,
                live=self.live,
                paced=self.pace,
                frames=self.frames_total,
                **({"converted_from_fps": float(own_fps)} if self._convert else {}),
            ),
        )
        return self._format

    def _make_audio_format(self, stream: Any) -> AudioFormat | None:
        # A copy of the codec parameters that outlives this container, so sinks can
        # (re)create their audio stream after the input has been closed or reconnected.
        cc = stream.codec_context
        holder = av.open(io.BytesIO(), "w", format="matroska")
        try:
            template = holder.add_stream_from_template(stream)
        except (ValueError, av.error.FFmpegError) as exc:
            log.warning(
                "input audio cannot be carried; output without sound",
                extra=kv(input=self.name, codec=cc.name, error=error_text(exc)),
            )
            return None
        self._template_holder = holder
        return AudioFormat(
            codec=cc.name,
            sample_rate=cc.sample_rate or 0,
            channels=cc.channels or 0,
            time_base=stream.time_base,
            stream=template,
        )

    @property
    def audio(self) -> AudioFormat | None:
        return self._audio_format

    @property
    def format(self) -> VideoFormat | None:
        return self._format

    def last_frame_into(self, out: np.ndarray) -> bool:
        """Convert the last decoded frame into `out` again (repeats while reconnecting)."""
        if self.last_frame is None or self._writer is None:
            return False
        self._writer.write(self.last_frame, out)
        return True

    # --- reading ----------------------------------------------------------------------
    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        """Decode the next frame into `out`; None at the end of a file."""
        assert self._writer is not None and self._format is not None, "open() first"
        with self._read_lock:
            if self._container is None:
                return None  # closed meanwhile
            try:
                return self._read(out)
            finally:
                if self._close_requested:
                    self._close_now()

    def _read(self, out: np.ndarray) -> FrameMeta | None:
        assert self._writer is not None
        frame = (
            self._next_converted()
            if self._convert
            else (self._frames.popleft() if self._frames else self._next_frame())
        )
        if frame is None:
            if self.live and self.spec.kind != "file":
                raise SourceLost("end of stream")
            return None
        if self._convert:  # the output frame's own time on the new rate's grid
            pts = (self.first_pts or 0) + self._synth_pts()
        else:
            pts = frame.pts if frame.pts is not None else self._synth_pts()
        if self.pace:
            self._wait_for(pts)
        # Captured when it is due (after pacing): a paced file stands in for a camera.
        capture_time = time.monotonic()
        self._writer.write(frame, out)
        self.last_frame = frame  # decoded frame, converted again only if it must be repeated
        meta = FrameMeta(index=self._index, pts=pts, capture_time=capture_time)
        self._index += 1
        self.counters["frames"] += 1
        return meta

    def _next_converted(self) -> Any:
        """The decoded frame for output frame number `self._index` at the run's fps: the
        frame whose timestamp rounds to it; frames rounding to an output frame already
        given are dropped, a gap repeats the previous frame."""
        assert self._format is not None
        if self._repeats:
            self._repeats -= 1
            self.counters["rate_repeated"] += 1
            return self.last_frame
        while True:
            frame = self._frames.popleft() if self._frames else self._next_frame()
            if frame is None:
                return None
            if frame.pts is None:
                return frame
            seconds = float((frame.pts - (self.first_pts or 0)) * self._format.time_base)
            slot = round(seconds * self._format.fps)
            if slot < self._index:
                self.counters["rate_dropped"] += 1
                continue
            if slot > self._index and self.last_frame is not None:
                # Output frames before this one show the previous picture again.
                self._frames.appendleft(frame)
                self._repeats = slot - self._index - 1
                self.counters["rate_repeated"] += 1
                return self.last_frame
            return frame

    def _synth_pts(self) -> int:
        assert self._format is not None
        return int(self._index / self._format.fps / self._format.time_base)

    def _wait_for(self, pts: int) -> None:
        assert self._format is not None
        at = float(pts * self._format.time_base)
        now = time.monotonic()
        if self._pace_origin is None:
            self._pace_origin = (now, at)
            return
        due = self._pace_origin[0] + (at - self._pace_origin[1])
        if due > now:
            time.sleep(due - now)

    def _next_frame(self) -> Any:
        """The next decoded video frame, queueing audio packets on the way; None at the end."""
        while not self._frames:
            if self._eof:
                return None
            packet = self._next_packet()
            try:
                if packet is None:  # end of input: drain the decoder
                    self._eof = True
                    self._frames.extend(self._video.decode(None))
                    continue
                if packet.stream is self._audio_stream:
                    if packet.size:
                        self._queue_audio(packet)
                    continue
                for frame in packet.decode():
                    if frame.is_corrupt:  # concealed garbage: skip it like a failed decode
                        self.counters["decode_errors"] += 1
                        continue
                    self._frames.append(frame)
            except av.error.EOFError:
                self._eof = True
            except av.error.FFmpegError as exc:
                # A corrupt packet: skip it, count it, keep going.
                self.counters["decode_errors"] += 1
                log.debug("decode error", extra=kv(input=self.name, error=error_text(exc)))
        return self._frames.popleft()

    def _next_packet(self) -> Any:
        errors = 0
        while True:
            try:
                return next(self._demux)
            except StopIteration:
                return None
            except (av.error.FFmpegError, OSError) as exc:
                if self.spec.kind != "file":
                    raise SourceLost(error_text(exc)) from exc
                self.counters["demux_errors"] += 1
                errors += 1
                log.warning("input read error", extra=kv(input=self.name, error=error_text(exc)))
                if errors >= MAX_DEMUX_ERRORS:
                    return None
                # The generator died with the exception; continue from the current position.
                streams = [s for s in (self._video, self._audio_stream) if s is not None]
                self._demux = self._container.demux(*streams)

    def _queue_audio(self, packet: Any) -> None:
        with self._lock:
            if len(self._audio) >= MAX_AUDIO_BACKLOG:
                self._audio.popleft()
                self.counters["audio_dropped"] += 1
            self._audio.append(packet)

    def take_audio(self) -> list[Any]:
        """Audio packets demuxed since the last call, in order."""
        with self._lock:
            packets = list(self._audio)
            self._audio.clear()
        return packets

    def close(self) -> None:
        """Close the input. From another thread during a read, the reading thread closes
        it when that read returns (closing under a running demuxer would crash FFmpeg)."""
        if not self._read_lock.acquire(timeout=0.2):
            self._close_requested = True
            if not self._read_lock.acquire(blocking=False):  # the reader closes it
                return
        try:
            self._close_now()
        finally:
            self._read_lock.release()

    def _close_now(self) -> None:
        self._close_requested = False
        container, self._container = self._container, None
        self._demux = None
        self._frames.clear()
        if container is not None:
            try:
                container.close()
            except (av.error.FFmpegError, OSError) as exc:
                log.debug("input close failed", extra=kv(input=self.name, error=error_text(exc)))


def _frame_count(container: Any, video: Any, fps: Fraction, converted: bool) -> int | None:
    """How many frames a file gives at `fps`: the stream's count when it is read at its own
    rate and the container knows it, else duration × fps (None when neither is known)."""
    if video.frames and not converted:
        return int(video.frames)
    if video.duration and video.time_base:
        seconds = float(video.duration * video.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return max(int(round(seconds * float(fps))), 1)


def error_text(exc: BaseException) -> str:
    """What went wrong, in FFmpeg's/the OS's words (strerror when there is one), for
    messages and logs of inputs and outputs."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).strip() or type(exc).__name__


def _hint(spec: OpenSpec) -> str:
    if spec.kind == "device":
        return "check that the camera exists, is not used by another program and you may read it (group 'video')"
    if spec.kind == "network":
        return "check the URL, that the stream is up and reachable, and io.open_timeout_s / io.read_timeout_s"
    return "check that the file is a readable video"
