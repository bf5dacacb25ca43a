"""Settings of the real-time pipeline: queue sizes, drop policy, error tolerance, stats."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.typedconfig import choices, limits


@dataclass
class PipelineSettings:
    # Frames that may wait between two stages (each queue between capture, the stages and
    # the outputs holds this many). 1 keeps live latency lowest and still keeps every stage
    # busy (measured with `streamswap bench pipeline`); more absorbs jitter.
    queue_size: int = field(default=1, metadata=limits(min=1, max=64))
    # Frames each output may fall behind the others (its own queue): live, an output that
    # falls further behind (a slow server) drops its oldest waiting frame, counted for that
    # output, instead of holding up the others; a file run waits for it instead.
    output_queue_size: int = field(default=2, metadata=limits(min=1, max=64))
    # What happens when the first queue is full: "auto" follows the source (a live source
    # drops the oldest unprocessed frame, a file blocks and loses nothing), or force one.
    policy: str = field(default="auto", metadata=choices("auto", "drop-oldest", "block"))
    # Seconds between stats lines (terminal) / stats log records.
    stats_interval: float = field(default=1.0, metadata=limits(min=0.1, max=3600))
    # Recent frames kept for latency percentiles and per-stage means (bounded memory).
    stats_window: int = field(default=300, metadata=limits(min=10, max=100000))
    # Consecutive failures of one stage after which status() reports "degraded".
    max_stage_errors: int = field(default=10, metadata=limits(min=1, max=100000))
    # Copy a frame before swapping it so a swap that fails half-way leaves it untouched
    # (one preallocated buffer, one memcpy per frame with faces).
    restore_on_error: bool = True
    # Seconds stop() waits for in-flight frames to drain before closing the outputs.
    drain_timeout: float = field(default=10.0, metadata=limits(min=0.0, max=600))
