"""LoopingSource: a file input played again from its start each time it ends, inside one
source, for `streamswap serve` (a file there stands in for a camera that never ends).

The pipeline, and so every output, stays open across loops: one recording holds every
loop, an RTMP output is published once. Frame indices and timestamps (video and audio)
continue where the previous loop stopped, so the outputs see one steady stream.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from streamswap.errors import InputError
from streamswap.io.avsource import AvSource
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.io.timeline import Timeline
from streamswap.logs import kv

log = logging.getLogger(__name__)


class LoopingSource:
    """A paced file `AvSource`, started again at its end. Implements `io.base.Source`."""

    live = True

    def __init__(self, make: Callable[[], AvSource], *, name: str) -> None:
        self.name = name
        self._make = make
        self._inner: AvSource | None = None
        self._format: VideoFormat | None = None
        self._audio_format: AudioFormat | None = None
        self._timeline = Timeline()  # the first loop's time base
        self._loop_frames = 0
        self._closed = False
        self._counts: dict[str, int] = {"frames": 0, "loops": 0, "decode_errors": 0, "demux_errors": 0}

    @property
    def counters(self) -> dict[str, int]:
        """Own counts plus the decoder errors of the loop being played."""
        counts = dict(self._counts)
        inner = self._inner
        if inner is not None:
            for key in ("decode_errors", "demux_errors"):
                counts[key] += inner.counters.get(key, 0)
        return counts

    def open(self) -> VideoFormat:
        inner = self._make()
        self._format = fmt = inner.open()
        self._audio_format = inner.audio
        self._timeline.start(fmt)
        self._inner = inner
        return fmt

    @property
    def audio(self) -> AudioFormat | None:
        return self._audio_format

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        assert self._format is not None, "open() first"
        for _ in range(2):  # this loop's next frame, or the next loop's first
            inner = self._inner
            if inner is None or self._closed:
                return None
            meta = inner.read_into(out)
            if meta is not None:
                return self._stamp(meta, inner)
            if self._closed:
                return None
            if self._loop_frames == 0:
                raise InputError(f"{self.name}: the file has no frame to play; give a video with frames")
            self._next_loop(inner)
        return None

    def _next_loop(self, finished: AvSource) -> None:
        """Open the file again (errors end the input: the daemon's supervisor takes over)."""
        assert self._format is not None
        for key in ("decode_errors", "demux_errors"):
            self._counts[key] += finished.counters.get(key, 0)
        self._inner = None
        finished.close()
        inner = self._make()
        self._timeline.continue_with(inner.open(), inner.first_pts)
        self._inner = inner
        self._loop_frames = 0
        self._counts["loops"] += 1
        log.info("input looped", extra=kv(input=self.name, loop=self._counts["loops"]))

    def _stamp(self, meta: FrameMeta, inner: AvSource) -> FrameMeta:
        assert inner.format is not None
        self._loop_frames += 1
        self._counts["frames"] += 1
        return self._timeline.stamp(meta, inner.format)

    def take_audio(self) -> list[Any]:
        inner = self._inner
        return [] if inner is None else self._timeline.shift_audio(inner.take_audio())

    def close(self) -> None:
        self._closed = True
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()
