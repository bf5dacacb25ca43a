"""Pipeline observability: the observer protocol (implemented by the service's Prometheus
metrics and by `Stats`) and `Stats`, the in-process numbers behind status() and the
terminal stats line. Memory is bounded: recent samples live in fixed-size rings."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from streamswap.io.base import FrameMeta
from streamswap.logs import kv

log = logging.getLogger(__name__)

STAGES = ("capture", "detect", "swap", "output")


@runtime_checkable
class PipelineObserver(Protocol):
    def frame_in(self) -> None: ...
    def frame_dropped(self, reason: str) -> None: ...
    def frame_out(self, latency_s: float) -> None:
        """Glass-to-glass latency: capture time → written to the sinks."""
        ...

    def stage_time(self, stage: str, seconds: float) -> None: ...
    def stage_error(self, stage: str) -> None: ...
    def reconnect(self, what: str) -> None: ...
    def output_written(self, sink: str) -> None:
        """One frame reached output `sink` (its URI)."""
        ...

    def output_dropped(self, sink: str, reason: str) -> None:
        """Output `sink` lost one frame: it fell behind (live), failed, or was stopped."""
        ...


@runtime_checkable
class FrameTap(Protocol):
    """An observer that also looks at each frame as it leaves for the outputs (the control
    page's preview): read-only, called from the last stage's thread; it must return at once
    (copy or skip)."""

    def output_frame(self, frame: np.ndarray, meta: FrameMeta) -> None: ...


class ObserverFanout:
    """Calls every observer; one failing observer never breaks the pipeline."""

    def __init__(self, observers: Sequence[PipelineObserver]) -> None:
        self.observers = list(observers)

    def _each(self, call: Callable[[PipelineObserver], None], name: str) -> None:
        for obs in self.observers:
            try:
                call(obs)
            except Exception:  # an observer bug must not stop the video
                log.exception("observer failed", extra=kv(observer=type(obs).__name__, call=name))

    def frame_in(self) -> None:
        self._each(lambda o: o.frame_in(), "frame_in")

    def frame_dropped(self, reason: str) -> None:
        self._each(lambda o: o.frame_dropped(reason), "frame_dropped")

    def frame_out(self, latency_s: float) -> None:
        self._each(lambda o: o.frame_out(latency_s), "frame_out")

    def stage_time(self, stage: str, seconds: float) -> None:
        self._each(lambda o: o.stage_time(stage, seconds), "stage_time")

    def stage_error(self, stage: str) -> None:
        self._each(lambda o: o.stage_error(stage), "stage_error")

    def reconnect(self, what: str) -> None:
        self._each(lambda o: o.reconnect(what), "reconnect")

    def output_written(self, sink: str) -> None:
        self._each(lambda o: o.output_written(sink), "output_written")

    def output_dropped(self, sink: str, reason: str) -> None:
        self._each(lambda o: o.output_dropped(sink, reason), "output_dropped")


class SampleRing:
    """The last `size` float samples in a preallocated array."""

    def __init__(self, size: int) -> None:
        self._data = np.zeros(size, dtype=np.float64)
        self._n = 0

    def add(self, value: float) -> None:
        self._data[self._n % len(self._data)] = value
        self._n += 1

    def values(self) -> np.ndarray:
        return self._data[: min(self._n, len(self._data))]

    def __len__(self) -> int:
        return min(self._n, len(self._data))


class Stats:
    """Counters, fps, latency percentiles and per-stage ms of one run. Thread-safe."""

    def __init__(self, window: int = 300, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._window = window
        self.frames_in = 0
        self.frames_out = 0
        self.dropped: dict[str, int] = defaultdict(int)
        self.errors: dict[str, int] = defaultdict(int)
        self.reconnects: dict[str, int] = defaultdict(int)
        # Per output (URI): frames written and frames that output lost.
        self.outputs: dict[str, dict[str, int]] = {}
        self._latency = SampleRing(window)
        self._stage: dict[str, SampleRing] = {}
        self._in_times = SampleRing(window)
        self._out_times = SampleRing(window)
        self.started = clock()

    # -- PipelineObserver -------------------------------------------------------------
    def frame_in(self) -> None:
        with self._lock:
            self.frames_in += 1
            self._in_times.add(self._clock())

    def frame_dropped(self, reason: str) -> None:
        with self._lock:
            self.dropped[reason] += 1

    def frame_out(self, latency_s: float) -> None:
        with self._lock:
            self.frames_out += 1
            self._out_times.add(self._clock())
            self._latency.add(latency_s)

    def stage_time(self, stage: str, seconds: float) -> None:
        with self._lock:
            ring = self._stage.get(stage)
            if ring is None:
                ring = self._stage[stage] = SampleRing(self._window)
            ring.add(seconds)

    def stage_error(self, stage: str) -> None:
        with self._lock:
            self.errors[stage] += 1

    def _output(self, sink: str) -> dict[str, int]:
        counts = self.outputs.get(sink)
        if counts is None:
            counts = self.outputs[sink] = {"written": 0, "dropped": 0}
        return counts

    def output_written(self, sink: str) -> None:
        with self._lock:
            self._output(sink)["written"] += 1

    def output_dropped(self, sink: str, reason: str) -> None:
        with self._lock:
            self._output(sink)["dropped"] += 1

    def reconnect(self, what: str) -> None:
        with self._lock:
            self.reconnects[what] += 1

    # -- readings ---------------------------------------------------------------------
    def _fps(self, times: SampleRing, now: float) -> float:
        stamps = times.values()
        recent = stamps[stamps >= now - 2.0]  # fps over the last two seconds
        if len(recent) < 2:
            return 0.0
        span = max(now - float(recent.min()), 1e-9)
        return (len(recent) - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able view: counts, fps in/out, latency p50/p95 (ms), per-stage mean ms."""
        with self._lock:
            now = self._clock()
            lat = self._latency.values()
            p50, p95 = (np.percentile(lat, [50, 95]) * 1000.0).tolist() if len(lat) else (None, None)
            return {
                "frames_in": self.frames_in,
                "frames_out": self.frames_out,
                "dropped": sum(self.dropped.values()),
                "dropped_by_reason": dict(self.dropped),
                "errors": dict(self.errors),
                "reconnects": dict(self.reconnects),
                # per output (URI): frames written and frames that output lost
                "output_frames": {name: dict(counts) for name, counts in self.outputs.items()},
                "fps_in": round(self._fps(self._in_times, now), 2),
                "fps_out": round(self._fps(self._out_times, now), 2),
                "latency_ms_p50": None if p50 is None else round(p50, 2),
                "latency_ms_p95": None if p95 is None else round(p95, 2),
                "stage_ms": {
                    name: round(float(ring.values().mean()) * 1000.0, 2)
                    for name, ring in self._stage.items()
                    if len(ring)
                },
                "uptime_s": round(now - self.started, 1),
            }


def format_stats_line(snap: dict[str, Any]) -> str:
    """One human line: `fps 29.9→29.8 | drops 0 | latency p50 41 ms p95 55 ms | detect 12.1 ms …`."""

    def ms(v: float | None) -> str:  # a decimal below 10 ms, so a fast run does not read "0 ms"
        return "–" if v is None else f"{v:.1f}" if v < 10 else f"{v:.0f}"

    stages = " ".join(f"{k} {v:.1f}" for k, v in snap.get("stage_ms", {}).items())
    errors = sum(snap.get("errors", {}).values())
    line = (
        f"in {snap['frames_in']} out {snap['frames_out']} | "
        f"fps {snap['fps_in']:.1f}→{snap['fps_out']:.1f} | drops {snap['dropped']} | "
        f"latency p50 {ms(snap['latency_ms_p50'])} ms p95 {ms(snap['latency_ms_p95'])} ms"
    )
    if stages:
        line += f" | ms: {stages}"
    every = snap.get("detect_every")
    if every is not None and (every > 1 or snap.get("detect_adaptive")):
        # the detector's period; "auto" while it follows the measured times (live input)
        line += f" | detect 1/{every}" + (" auto" if snap.get("detect_adaptive") else "")
    if errors:
        line += f" | errors {errors}"
    output_drops = {k: v["dropped"] for k, v in snap.get("output_frames", {}).items() if v["dropped"]}
    if output_drops:
        line += " | output drops " + " ".join(f"{k} {v}" for k, v in output_drops.items())
    reconnects = sum(snap.get("reconnects", {}).values())
    if reconnects:
        line += f" | reconnects {reconnects}"
    return line
