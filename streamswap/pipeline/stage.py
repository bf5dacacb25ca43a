"""What a pipeline stage is. The pipeline knows stages, not models.

A stage has a name, owns its resources (models, buffers, later its CUDA stream: only its
own thread touches them, so it needs no lock), processes one frame item at a time and
declares what the pipeline does with a frame it failed on. The pipeline runs each stage
on its own thread between two bounded `FrameQueue`s, in the order it was given them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from streamswap.io.base import VideoFormat
from streamswap.pipeline.frame_queue import FrameItem


@dataclass(frozen=True)
class ErrorPolicy:
    """What happens to a frame whose stage raised. The frame always goes on (a live
    video never stops for one bad frame); the failure is counted, logged once per streak,
    and a streak of `pipeline.max_stage_errors` turns the status "degraded"."""

    # The stage writes pixels: the pipeline copies the frame before the stage and puts
    # the copy back after a failure, so a half-changed frame never leaves
    # (`pipeline.restore_on_error`; one preallocated buffer per such stage).
    restore_frame: bool = False
    # The stage produces the frame's faces: after a failure the frame carries none.
    clear_faces: bool = False


class Stage(Protocol):
    """One step of the frame path (detect, swap, …); see the module docstring."""

    name: str
    error_policy: ErrorPolicy
    # False: the stage also runs while the pipeline is paused (e.g. the output label);
    # a pausable stage is skipped then and the frame passes through it untouched.
    pausable: bool

    def start(self, video: VideoFormat, live: bool) -> None:
        """A pipeline is about to run: its frames' format and rate, and whether the input
        is live (paced by the source, frames dropped when behind) or a file (lossless)."""
        ...

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        """Work on one frame in place (`item.faces` carries what earlier stages found).
        Called from the stage's own thread only."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the pipeline's status shows about this stage (e.g. the identity in use)."""
        ...

    def close(self) -> None:
        """The pipeline ended; release what the stage holds (it may be started again
        by a later pipeline, so models stay loaded)."""
        ...
