"""The control page's live preview: a tap on the frames leaving for the outputs.

While nobody watches it costs one integer test per frame. While someone does, at most
`fps` frames a second are copied (into one buffer allocated when the size is first seen)
by the output stage; a viewer's thread scales and encodes that copy as JPEG once, and
every viewer shares the result. The output stage never waits: when a viewer is encoding
the buffer, the frame is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamswap.io.base import FrameMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreviewFrame:
    jpeg: bytes
    index: int  # the output frame's index in its pipeline (FrameMeta.index)
    seq: int  # increases with every frame the tap took (across pipelines)


class PreviewTap:
    """A pipeline observer with `output_frame` (see pipeline.stats.PipelineObserver)."""

    def __init__(
        self, fps: float = 10.0, max_width: int = 960, quality: int = 75, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = 1.0 / fps
        self.max_width = max_width
        self.quality = quality
        self._clock = clock
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self._buffer: np.ndarray | None = None
        self._buffer_lock = threading.Lock()  # held by the copy (output stage) or the encoder
        self._taken_at = -1e9
        self._seq = 0  # the copy in _buffer
        self._index = -1
        self._encoded: PreviewFrame | None = None  # the JPEG of the latest encoded copy
        self._encode_lock = threading.Lock()  # one encoder at a time; the others reuse its JPEG
        self.frames_taken = 0
        self.frames_encoded = 0

    # -- viewers -------------------------------------------------------------------------
    @property
    def viewers(self) -> int:
        return self._viewers

    def watch(self) -> "_Viewer":
        """`with tap.watch():` frames are taken only while at least one viewer is inside."""
        return _Viewer(self)

    def _add(self, n: int) -> None:
        with self._viewers_lock:
            self._viewers += n

    # -- the output stage's side ---------------------------------------------------------
    def output_frame(self, frame: np.ndarray, meta: FrameMeta) -> None:
        if not self._viewers:
            return
        now = self._clock()
        if now - self._taken_at < self.interval:
            return
        if not self._buffer_lock.acquire(blocking=False):
            return  # being encoded: skip this frame rather than wait
        try:
            if self._buffer is None or self._buffer.shape != frame.shape:
                self._buffer = np.empty_like(frame)  # once per frame size, not per frame
            np.copyto(self._buffer, frame)
            self._taken_at = now
            self._seq += 1
            self._index = meta.index
            self.frames_taken += 1
        finally:
            self._buffer_lock.release()

    # Pipeline observer calls the tap does not need.
    def frame_in(self) -> None: ...
    def frame_dropped(self, reason: str) -> None: ...
    def frame_out(self, latency_s: float) -> None: ...
    def stage_time(self, stage: str, seconds: float) -> None: ...
    def stage_error(self, stage: str) -> None: ...
    def reconnect(self, what: str) -> None: ...

    # -- the viewers' side ---------------------------------------------------------------
    @property
    def seq(self) -> int:
        return self._seq

    def latest(self, after: int = 0) -> PreviewFrame | None:
        """The JPEG of the newest frame taken, if newer than `after` (a seq), else None.
        Encodes it when no viewer has yet (blocking: call from a worker thread)."""
        if self._seq <= after:
            return None
        with self._encode_lock:
            done = self._encoded
            if done is not None and done.seq == self._seq:
                return done
            import cv2

            with self._buffer_lock:  # the output stage skips frames meanwhile, never waits
                if self._buffer is None:
                    return None
                seq, index = self._seq, self._index
                image = self._buffer
                height, width = image.shape[:2]
                if width > self.max_width:
                    size = (self.max_width, max(int(round(height * self.max_width / width)) // 2 * 2, 2))
                    image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                log.warning("preview frame could not be encoded")
                return None
            self._encoded = PreviewFrame(data.tobytes(), index, seq)
            self.frames_encoded += 1
            return self._encoded


class _Viewer:
    def __init__(self, tap: PreviewTap) -> None:
        self.tap = tap

    def __enter__(self) -> PreviewTap:
        self.tap._add(1)
        return self.tap

    def __exit__(self, *exc: Any) -> None:
        self.tap._add(-1)
