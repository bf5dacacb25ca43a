"""Virtual camera output (pyvirtualcam: v4l2loopback on Linux, OBS on macOS/Windows)."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import numpy as np

from streamswap.errors import OutputError
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.logs import kv

log = logging.getLogger(__name__)

V4L2LOOPBACK_HINT = (
    "load the v4l2loopback kernel module first: "
    "sudo apt install v4l2loopback-dkms && "
    "sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=streamswap exclusive_caps=1 "
    "(then use vcam:///dev/video10)"
)


class VcamSink:
    """Sends BGR frames to a virtual camera at its frame rate. Implements `io.base.Sink`.

    Pacing never blocks the output stage: a frame that arrives earlier than half a frame
    interval before its slot is skipped (counted), so a faster pipeline cannot build up
    latency and a slower one simply gets its frames shown as they come.
    """

    def __init__(self, device: str | None, fps: float | None, name: str) -> None:
        self.name = name
        self.device = device
        self.fps = fps
        self._camera: Any = None
        self._interval = 0.0
        self._next_due = 0.0
        self.counters: dict[str, int] = {"frames": 0, "skipped": 0}

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        try:
            import pyvirtualcam
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise OutputError(f"{self.name}: pyvirtualcam is not installed ({exc}); pip install pyvirtualcam") from None
        fps = float(self.fps or video.fps)
        try:
            self._camera = pyvirtualcam.Camera(
                video.width, video.height, fps, fmt=pyvirtualcam.PixelFormat.BGR, device=self.device
            )
        except (RuntimeError, ValueError, OSError) as exc:
            hint = (
                V4L2LOOPBACK_HINT
                if sys.platform.startswith("linux")
                else ("install OBS Studio and start its virtual camera once so its driver is registered")
            )
            raise OutputError(f"{self.name}: no virtual camera ({exc}); {hint}") from None
        self._interval = 1.0 / fps
        self._next_due = time.monotonic()
        log.info(
            "virtual camera opened",
            extra=kv(output=self.name, device=self._camera.device, fps=fps, size=f"{video.width}x{video.height}"),
        )

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        now = time.monotonic()
        if now < self._next_due - self._interval / 2:
            self.counters["skipped"] += 1
            return
        # Catch up after a stall instead of bursting frames.
        self._next_due = max(self._next_due + self._interval, now)
        self._camera.send(frame)
        self.counters["frames"] += 1

    def write_audio(self, packets: list[Any]) -> None:
        pass  # a camera has no sound

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()
