"""Prometheus metrics of the daemon, in their own CollectorRegistry (no process globals).

`Metrics` is a `pipeline.stats.PipelineObserver`: the Pipeline calls it for every frame,
so each call is a counter increment or a histogram observation (a lock and a few adds).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from streamswap.redact import redact_uri

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Per-stage times: sub-millisecond tracking up to a stalled second.
STAGE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.033, 0.05, 0.1, 0.2, 0.5, 1.0)
# Glass-to-glass: one frame at 60 fps (17 ms) up to seconds of buffering.
LATENCY_BUCKETS = (0.017, 0.033, 0.05, 0.066, 0.083, 0.1, 0.133, 0.166, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)


class GpuMemoryCollector(Collector):
    """GPU memory in use and total of the device this process works on, read through
    cuda-python — only when the process already uses CUDA (never loads CUDA just to be
    scraped, and never touches other devices, which would create a context on each)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        cudart = _loaded_cudart()
        if cudart is None:
            return
        try:
            err, device = cudart.cudaGetDevice()
            if int(err) != 0:
                return
            err, free, size = cudart.cudaMemGetInfo()
            if int(err) != 0:
                return
        except Exception:  # a scrape must never fail because of the GPU probe
            log.debug("GPU memory probe failed", exc_info=True)
            return
        used = GaugeMetricFamily(
            "streamswap_gpu_memory_used_bytes", "GPU memory in use (all processes)", labels=["device"]
        )
        total = GaugeMetricFamily("streamswap_gpu_memory_total_bytes", "GPU memory size", labels=["device"])
        used.add_metric([str(device)], float(size - free))
        total.add_metric([str(device)], float(size))
        yield used
        yield total


def _loaded_cudart() -> Any:
    for name in ("cuda.bindings.runtime", "cuda.cudart"):
        module = sys.modules.get(name)
        if module is not None:
            return module
    return None


class Metrics:
    """Frames in/out/dropped, per-stage and glass-to-glass histograms, reconnects, errors,
    API requests, readiness; GPU memory when CUDA is in use."""

    def __init__(self, gpu: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames_in_total = Counter("streamswap_frames_in", "Frames read from the input", registry=r)
        self.frames_out_total = Counter("streamswap_frames_out", "Frames written to the outputs", registry=r)
        self.frames_dropped_total = Counter(
            "streamswap_frames_dropped", "Frames dropped, by reason", ["reason"], registry=r
        )
        self.stage_seconds = Histogram(
            "streamswap_stage_seconds",
            "Time per frame in each pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.latency_seconds = Histogram(
            "streamswap_glass_to_glass_seconds",
            "Capture to output-write latency per frame",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.reconnects_total = Counter("streamswap_reconnects", "Input/output reconnects", ["what"], registry=r)
        self.output_frames_total = Counter(
            "streamswap_output_frames", "Frames written, per output", ["output"], registry=r
        )
        self.output_dropped_total = Counter(
            "streamswap_output_dropped",
            "Frames an output lost (fell behind, failed, stopped), per output",
            ["output", "reason"],
            registry=r,
        )
        self.errors_total = Counter("streamswap_stage_errors", "Stage failures", ["stage"], registry=r)
        self.api_requests_total = Counter(
            "streamswap_api_requests", "Control API requests", ["method", "path", "code"], registry=r
        )
        self.ready = Gauge("streamswap_ready", "1 when the daemon is ready (frames flowing)", registry=r)
        self.paused = Gauge("streamswap_paused", "1 while swapping is paused", registry=r)
        self.pipeline_restarts_total = Counter(
            "streamswap_pipeline_restarts", "Pipeline re-opens after the input ended or failed", registry=r
        )
        if gpu:
            r.register(GpuMemoryCollector())

    # -- PipelineObserver -------------------------------------------------------------
    def frame_in(self) -> None:
        self.frames_in_total.inc()

    def frame_dropped(self, reason: str) -> None:
        self.frames_dropped_total.labels(reason).inc()

    def frame_out(self, latency_s: float) -> None:
        self.frames_out_total.inc()
        self.latency_seconds.observe(latency_s)

    def stage_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def stage_error(self, stage: str) -> None:
        self.errors_total.labels(stage).inc()

    def reconnect(self, what: str) -> None:
        self.reconnects_total.labels(redact_uri(what)).inc()  # a sink's name is its address

    def output_written(self, sink: str) -> None:
        self.output_frames_total.labels(sink).inc()

    def output_dropped(self, sink: str, reason: str) -> None:
        self.output_dropped_total.labels(sink, reason).inc()

    # -- exposition -------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)

    def observe_api(self, method: str, path: str, code: int) -> None:
        self.api_requests_total.labels(method, path, str(code)).inc()
