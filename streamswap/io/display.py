"""A preview window (OpenCV HighGUI) and a sink that discards frames."""

from __future__ import annotations

import os
import sys
from typing import Any

import cv2
import numpy as np

from streamswap.errors import OutputError
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat


class DisplaySink:
    """Shows frames in a window. Implements `io.base.Sink`; call from one thread only."""

    def __init__(self, name: str = "display://", title: str = "streamswap") -> None:
        self.name = name
        self.title = title
        self._open = False
        self.counters: dict[str, int] = {"frames": 0}

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        if sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        ):
            raise OutputError(
                f"{self.name}: no display (DISPLAY is not set); run it in a desktop session, "
                "or use vcam:// or a file output instead"
            )
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
            cv2.resizeWindow(self.title, video.width, video.height)
        except cv2.error as exc:
            raise OutputError(f"{self.name}: cannot open a window ({exc}); use vcam:// or a file instead") from None
        self._open = True

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        cv2.imshow(self.title, frame)
        cv2.waitKey(1)  # lets HighGUI paint
        self.counters["frames"] += 1

    def write_audio(self, packets: list[Any]) -> None:
        pass

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
            except cv2.error:
                pass


class NullSink:
    """Discards frames (benchmarks, dry runs). Implements `io.base.Sink`."""

    def __init__(self, name: str = "null://") -> None:
        self.name = name
        self.counters: dict[str, int] = {"frames": 0, "audio_packets": 0}

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        pass

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        self.counters["frames"] += 1

    def write_audio(self, packets: list[Any]) -> None:
        self.counters["audio_packets"] += len(packets)

    def close(self) -> None:
        pass
