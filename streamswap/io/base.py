"""Contracts between io/ (PyAV, pyvirtualcam) and pipeline/. io/ knows nothing about faces.

A Source decodes into caller-owned BGR buffers (the pipeline's preallocated slots) at a
fixed output size; a Sink consumes BGR frames plus the source's audio packets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Protocol, runtime_checkable

import numpy as np

# The frame sizes a run handles. Below 16×16 there is no picture (and encoders refuse it);
# above 8192 a side or 40 megapixels (8K UHD is 33) every preallocated slot would be
# hundreds of MB. Odd sizes are rounded down to even (H.264 4:2:0 needs it).
MIN_FRAME_SIDE = 16
MAX_FRAME_SIDE = 8192
MAX_FRAME_PIXELS = 40_000_000


def check_frame_size(width: int, height: int, name: str) -> None:
    """Raise InputError unless a width×height frame (after rounding down to even) is one a
    run can carry; called before any frame-sized buffer is allocated."""
    from streamswap.errors import InputError

    if width < MIN_FRAME_SIDE or height < MIN_FRAME_SIDE:
        raise InputError(
            f"{name}: the video is {width}×{height} pixels, too small to process "
            f"(at least {MIN_FRAME_SIDE}×{MIN_FRAME_SIDE}); use a larger input or set "
            "io.width/io.height to scale it up"
        )
    if width > MAX_FRAME_SIDE or height > MAX_FRAME_SIDE or width * height > MAX_FRAME_PIXELS:
        raise InputError(
            f"{name}: the video is {width}×{height} pixels, larger than a run handles "
            f"(at most {MAX_FRAME_SIDE} a side and {MAX_FRAME_PIXELS // 1_000_000} "
            "megapixels); set io.width/io.height to scale it down"
        )


@dataclass(frozen=True)
class VideoFormat:
    """The frame geometry and timing every stage and sink agrees on for one run."""

    width: int
    height: int
    fps: Fraction  # nominal frame rate (pacing, encoder settings)
    time_base: Fraction  # unit of FrameMeta.pts


@dataclass(frozen=True)
class AudioFormat:
    """The source's audio stream, for sinks that pass it through or re-encode it."""

    codec: str  # e.g. "aac"
    sample_rate: int
    channels: int
    time_base: Fraction
    stream: Any = field(default=None, compare=False)  # the PyAV input stream (codec params)


@dataclass
class FrameMeta:
    """Per-frame metadata that travels with a slot index through the rings."""

    index: int  # sequence number assigned by the source, 0, 1, 2, ... (output order)
    pts: int | None  # source presentation timestamp in VideoFormat.time_base
    capture_time: float  # time.monotonic() when the frame left the decoder
    synthetic: bool = False  # True for repeat / "no signal" frames made while reconnecting
    stage_times: dict[str, float] = field(default_factory=dict)  # stage -> monotonic end time


class Source(Protocol):
    """A video input. `read_into` fills a preallocated H×W×3 uint8 BGR buffer.

    Built by `io.uri.open_source(uri, settings, live=...)`; `open()` must be called before
    reading. `read_into` and `close` are called from one thread (the capture stage);
    `take_audio` may be called from another. Counters (frames, decode_errors, synthetic,
    reconnects, ...) are plain ints, read without locking for status/metrics.
    """

    live: bool  # True: never wait for the consumer (drop policy); False: lossless (block)
    name: str  # the URI, for logs and metrics

    @property
    def counters(self) -> dict[str, int]:
        """frames, decode_errors, synthetic, reconnects, ... (read for status/metrics)."""
        ...

    def open(self) -> VideoFormat:
        """Open the input and return the output format (size fixed for the whole run)."""
        ...

    @property
    def audio(self) -> AudioFormat | None:
        """The audio stream to pass through, when the input has one (after open)."""
        ...

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        """Decode the next frame into `out` (resized to the run's size). None at the end.

        A file ends; a live network input or camera (reconnecting) only ends after
        close() was requested, returning synthetic frames while it is lost. One call
        blocks at most about io.read_timeout_s (network) or one frame interval (paced)."""
        ...

    def take_audio(self) -> list[Any]:
        """Audio packets demuxed since the last call (av.Packet), in order; may be empty."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Reconnects(Protocol):
    """A sink whose connection can be down while it reconnects (a network output)."""

    @property
    def up(self) -> bool: ...


@runtime_checkable
class KnowsLength(Protocol):
    """A source that may know how many frames it has (a file), for progress."""

    frames_total: int | None


class Sink(Protocol):
    """A video output. Frames arrive in order; `write` must not keep a reference to `frame`."""

    name: str  # the URI it was made from, for logs and metrics
    counters: dict[str, int]  # frames, dropped, reconnects, ... (for status/metrics)

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        """Start the output; raises OutputError (with what to do) when it cannot."""
        ...

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        """Encode/show one frame; raises OutputError on failure (network sinks from
        `open_sink` with io.reconnect never raise: they reconnect in the background and
        count drops)."""
        ...

    def write_audio(self, packets: list[Any]) -> None: ...

    def close(self) -> None:
        """Flush and finalise (a playable file with its index, a closed stream)."""
        ...
