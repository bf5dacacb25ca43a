"""LabelStage: the responsible-use label (io.label) drawn on every frame, after the face
stages and whether or not swapping is paused, so every output carries it."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamswap.io.base import VideoFormat
from streamswap.io.label import Labeler
from streamswap.io.settings import LabelSettings
from streamswap.pipeline.frame_queue import FrameItem
from streamswap.pipeline.stage import ErrorPolicy


class LabelStage:
    """Draws the label into each frame in place (its own thread, its own patch buffers)."""

    name = "label"
    error_policy = ErrorPolicy(restore_frame=False)
    pausable = False  # a paused pipeline's frames are labelled too

    def __init__(self, settings: LabelSettings) -> None:
        self._labeler = Labeler(settings)

    def start(self, video: VideoFormat, live: bool) -> None:
        pass

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        self._labeler.draw(frame)

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
