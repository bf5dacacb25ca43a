"""Keep a run alive across a lost input or output: reopen in the background with back-off.

`ReconnectingSource` wraps a live input. While the input is lost, `read_into` keeps
returning synthetic frames (the last frame again, or a "no signal" card) at the nominal
frame rate, so the outputs never stall; timestamps continue monotonically across the gap.
`ReconnectingSink` wraps a network output. While it is down, its frames are dropped and
counted, and the other outputs carry on (each output has its own pipeline thread).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import av
import cv2
import numpy as np

from streamswap.errors import StreamswapError
from streamswap.io.avsource import AvSource, SourceLost, error_text
from streamswap.io.base import AudioFormat, FrameMeta, Sink, VideoFormat
from streamswap.io.timeline import Timeline
from streamswap.logs import kv
from streamswap.redact import redact_uri

log = logging.getLogger(__name__)


class Backoff:
    """Exponential back-off delays: initial, doubled each failure, capped at maximum."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial


class _Reopener:
    """A background thread calling `attempt()` with back-off until it returns an object."""

    def __init__(
        self,
        what: str,
        attempt: Callable[[], Any],
        backoff: Backoff,
        stop: threading.Event,
        on_failure: Callable[[], None],
        discard: Callable[[Any], None],
    ) -> None:
        self.result: Any = None
        self.done = threading.Event()
        self._what = what
        self._attempt = attempt
        self._backoff = backoff
        self._stop = stop
        self._on_failure = on_failure
        self._discard = discard
        self._thread = threading.Thread(target=self._run, name=f"reconnect {what}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.result = self._attempt()
            except Exception as exc:  # network/device errors of every kind: retry
                self._on_failure()
                delay = self._backoff.next()
                log.info("reconnect failed", extra=kv(what=self._what, error=_short(exc), retry_in_s=delay))
                self._stop.wait(delay)
                continue
            self._backoff.reset()
            if self._stop.is_set():  # closed while we were connecting: nobody will take it
                self._discard(self.result)
                self.result = None
            self.done.set()
            return

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)


class ReconnectingSource:
    """A live `AvSource` that survives losing its input. Implements `io.base.Source`."""

    live = True

    def __init__(
        self, make: Callable[[tuple[int, int] | None], AvSource], *, name: str, on_loss: str, backoff: Backoff
    ) -> None:
        self.name = redact_uri(name)  # shown in status, metrics labels and logs
        self._make = make
        self._on_loss = on_loss
        self._backoff = backoff
        self._inner: AvSource | None = None
        self._format: VideoFormat | None = None
        self._audio_format: AudioFormat | None = None
        self._stop = threading.Event()
        self._reopener: _Reopener | None = None
        self._hold: np.ndarray | None = None  # the frame repeated while the input is lost
        self._timeline = Timeline()  # the first input's time base
        self._next_tick = 0.0
        self._interval = 0.0  # one frame in seconds, fixed by open()
        self._counts: dict[str, int] = {
            "frames": 0,
            "synthetic": 0,
            "reconnects": 0,
            "reconnect_failures": 0,
            "decode_errors": 0,
            "demux_errors": 0,
        }

    @property
    def counters(self) -> dict[str, int]:
        """Own counts plus the decoder errors of every input opened so far (live)."""
        counts = dict(self._counts)
        inner = self._inner
        if inner is not None:
            for key in ("decode_errors", "demux_errors"):
                counts[key] += inner.counters.get(key, 0)
        return counts

    def open(self) -> VideoFormat:
        inner = self._make(None)
        self._format = fmt = inner.open()
        self._audio_format = inner.audio
        self._timeline.start(fmt)
        self._interval = 1 / float(fmt.fps)
        self._install(inner, first=True)
        return self._format

    @property
    def audio(self) -> AudioFormat | None:
        return self._audio_format

    def _install(self, inner: AvSource, first: bool = False) -> None:
        assert self._format is not None
        fmt = inner.format
        assert fmt is not None
        if not first:
            self._timeline.continue_with(fmt, inner.first_pts)
            self._counts["reconnects"] += 1
            log.warning("input reconnected", extra=kv(input=self.name))
        self._inner = inner

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        assert self._format is not None, "open() first"
        while True:
            if self._stop.is_set():
                return None
            inner = self._inner
            if inner is not None:
                try:
                    meta = inner.read_into(out)
                except (SourceLost, av.error.FFmpegError, OSError) as exc:
                    meta, reason = None, _short(exc)
                else:
                    reason = "end of stream"
                if meta is not None:
                    return self._stamp(meta, inner)
                if self._stop.is_set():
                    return None
                self._lose(inner, reason)
            elif self._reopener is not None and self._reopener.done.is_set() and self._reopener.result:
                self._install(self._reopener.result)
                self._reopener = None
                continue
            return self._synthetic(out)

    def _stamp(self, meta: FrameMeta, inner: AvSource) -> FrameMeta:
        assert inner.format is not None
        self._next_tick = time.monotonic() + self._interval
        self._counts["frames"] += 1
        return self._timeline.stamp(meta, inner.format)

    def _lose(self, inner: AvSource, reason: str) -> None:
        assert self._format is not None
        log.warning("input lost; reconnecting", extra=kv(input=self.name, reason=reason, on_loss=self._on_loss))
        fmt = self._format
        if self._hold is None:
            self._hold = np.empty((fmt.height, fmt.width, 3), np.uint8)
        if self._on_loss != "repeat" or not inner.last_frame_into(self._hold):
            _no_signal_card(self._hold)
        for key in ("decode_errors", "demux_errors"):
            self._counts[key] += inner.counters.get(key, 0)
        self._inner = None
        # Close the dead input off this thread: closing a stalled socket can block.
        threading.Thread(target=inner.close, name="close lost input", daemon=True).start()
        size = (fmt.width, fmt.height)

        def attempt() -> AvSource:
            source = self._make(size)
            try:
                source.open()
            except BaseException:
                source.close()
                raise
            return source

        self._reopener = _Reopener(
            self.name, attempt, self._backoff, self._stop, self._count_failure, discard=lambda source: source.close()
        )

    def _count_failure(self) -> None:
        self._counts["reconnect_failures"] += 1

    def _synthetic(self, out: np.ndarray) -> FrameMeta:
        assert self._format is not None and self._hold is not None
        now = time.monotonic()
        if self._next_tick > now:
            self._stop.wait(self._next_tick - now)
        self._next_tick = max(self._next_tick + self._interval, time.monotonic() - 1)
        np.copyto(out, self._hold)
        index, pts = self._timeline.next_synthetic()
        meta = FrameMeta(index=index, pts=pts, capture_time=time.monotonic(), synthetic=True)
        self._counts["synthetic"] += 1
        return meta

    def take_audio(self) -> list[Any]:
        inner = self._inner
        return [] if inner is None else self._timeline.shift_audio(inner.take_audio())

    def close(self) -> None:
        self._stop.set()
        if self._reopener is not None:
            self._reopener.join(timeout=1.0)
            if self._reopener.done.is_set() and self._reopener.result is not None:
                self._reopener.result.close()
        if self._inner is not None:
            self._inner.close()
            self._inner = None


def _no_signal_card(img: np.ndarray) -> None:
    h, w = img.shape[:2]
    img[:] = (48, 48, 48)
    text = "NO SIGNAL"
    scale = max(w / 640, 0.5)
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    cv2.putText(
        img, text, ((w - tw) // 2, (h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (220, 220, 220), 2, cv2.LINE_AA
    )


class ReconnectingSink:
    """A network output that reopens itself when it fails. Implements `io.base.Sink`;
    `make()` builds a fresh, unopened inner sink.

    It is written from the pipeline's own thread for this output, behind its own bounded
    queue: a stalled server only fills that queue (the pipeline drops and counts this
    output's oldest frames), it never holds up the other outputs. `write` never raises:
    while the connection is down the frame is dropped and counted (`dropped`), and the
    connection is tried again with back-off (a refused connect returns at once; a server
    that does not answer costs at most io.open_timeout_s of this output's own thread).
    """

    def __init__(self, make: Callable[[], Sink], *, name: str, backoff: Backoff) -> None:
        self.name = redact_uri(name)
        self._make = make
        self._backoff = backoff
        self._inner: Sink | None = None
        self._video: VideoFormat | None = None
        self._audio: AudioFormat | None = None
        self._next_attempt = 0.0
        self._closed = False
        self.counters: dict[str, int] = {"frames": 0, "dropped": 0, "reconnects": 0, "reconnect_failures": 0}

    @property
    def up(self) -> bool:
        return self._inner is not None

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        self._video, self._audio = video, audio
        inner = self._make()
        inner.open(video, audio)  # the first open fails loudly: a wrong URL is a user error
        self._inner = inner

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        inner = self._connected()
        if inner is None:
            self.counters["dropped"] += 1
            return
        try:
            inner.write(frame, meta)
            self.counters["frames"] += 1
        except (StreamswapError, av.error.FFmpegError, OSError) as exc:
            self.counters["dropped"] += 1
            self._lose(inner, exc)

    def write_audio(self, packets: list[Any]) -> None:
        inner = self._inner
        if not packets or inner is None:
            return
        try:
            inner.write_audio(packets)
        except (StreamswapError, av.error.FFmpegError, OSError) as exc:
            self._lose(inner, exc)

    def _connected(self) -> Sink | None:
        """The open connection; while there is none, a new attempt once its back-off is up."""
        if self._inner is None and not self._closed and time.monotonic() >= self._next_attempt:
            self._reconnect()
        return self._inner

    def _lose(self, inner: Sink, exc: BaseException) -> None:
        log.warning("output lost; reconnecting", extra=kv(output=self.name, error=_short(exc)))
        self._inner = None
        _close_quietly(inner)
        self._next_attempt = time.monotonic() + self._backoff.next()

    def _reconnect(self) -> None:
        assert self._video is not None, "open() first"
        sink = self._make()
        try:
            sink.open(self._video, self._audio)
        except Exception as exc:  # network errors of every kind: retry later
            _close_quietly(sink)
            self.counters["reconnect_failures"] += 1
            delay = self._backoff.next()
            self._next_attempt = time.monotonic() + delay
            log.info("reconnect failed", extra=kv(what=self.name, error=_short(exc), retry_in_s=delay))
            return
        self._backoff.reset()
        self._inner = sink
        self.counters["reconnects"] += 1
        log.warning("output reconnected", extra=kv(output=self.name))

    def close(self) -> None:
        """Close the connection (what was written is flushed by the inner sink)."""
        self._closed = True
        inner, self._inner = self._inner, None
        if inner is not None:
            inner.close()


def _close_quietly(sink: Any) -> None:
    try:
        sink.close()
    except Exception as exc:  # already broken; closing is best effort
        log.debug("close after failure", extra=kv(error=_short(exc)))


def _short(exc: BaseException) -> str:
    return error_text(exc).splitlines()[0][:200]  # one log line per retry
