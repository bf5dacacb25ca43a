"""Generated inputs for demos and tests: a moving pattern with a drawn face, or a photo
gliding across the frame. No audio. Nothing frame-sized is allocated per frame."""

from __future__ import annotations

import importlib.util
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamswap.errors import InputError
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat, check_frame_size
from streamswap.io.images import read_image


def default_photo() -> Path | None:
    """insightface's group photo t1.jpg when the wheel is installed (the `demo` extra)."""
    spec = importlib.util.find_spec("insightface")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "images" / "t1.jpg"
    return path if path.is_file() else None


class _Generated:
    """Pacing, pts and counting shared by the generated sources (time base = 1/fps)."""

    def __init__(self, width: int, height: int, fps: Fraction, live: bool, frames: int | None) -> None:
        self.live = live
        self.name = "test://"
        check_frame_size(width, height, "test://")  # before anything is drawn
        self.width = width - width % 2
        self.height = height - height % 2
        self.fps = Fraction(fps).limit_denominator(1001)
        self.frames = frames
        self.frames_total = frames  # for progress
        self._index = 0
        self._t0 = 0.0
        self.counters: dict[str, int] = {"frames": 0}

    def open(self) -> VideoFormat:
        self._t0 = time.monotonic()
        self._prepare()
        return VideoFormat(self.width, self.height, self.fps, 1 / self.fps)

    def _prepare(self) -> None:
        raise NotImplementedError

    def _draw(self, out: np.ndarray, index: int) -> None:
        raise NotImplementedError

    @property
    def audio(self) -> AudioFormat | None:
        return None

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        i = self._index
        if self.frames is not None and i >= self.frames:
            return None
        if self.live:  # a camera delivers at its rate, not faster
            delay = self._t0 + float(i / self.fps) - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._draw(out, i)
        self._index += 1
        self.counters["frames"] += 1
        return FrameMeta(index=i, pts=i, capture_time=time.monotonic())

    def take_audio(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class PatternSource(_Generated):
    """Colour bars drifting sideways with a cartoon face moving on a Lissajous path."""

    def _prepare(self) -> None:
        w, h = self.width, self.height
        bars = np.array(
            [(192, 192, 192), (0, 192, 192), (192, 192, 0), (0, 192, 0), (192, 0, 192), (0, 0, 192), (192, 0, 0)],
            np.uint8,
        )
        cols = (np.arange(2 * w) * len(bars) // w) % len(bars)
        self._strip = np.ascontiguousarray(np.broadcast_to(bars[cols], (h, 2 * w, 3)))

    def _draw(self, out: np.ndarray, i: int) -> None:
        w, h = self.width, self.height
        shift = (i * 2) % w
        np.copyto(out, self._strip[:, shift : shift + w])
        t = i / float(self.fps)
        r = max(min(w, h) // 6, 8)
        cx = int(w / 2 + (w / 2 - r * 1.3) * np.sin(t * 0.7))
        cy = int(h / 2 + (h / 2 - r * 1.5) * np.sin(t * 1.1))
        draw_face(out, cx, cy, r)
        cv2.putText(
            out, f"{i}", (8, h - 10), cv2.FONT_HERSHEY_SIMPLEX, max(h / 600, 0.4), (255, 255, 255), 1, cv2.LINE_AA
        )


def draw_face(img: np.ndarray, cx: int, cy: int, r: int) -> None:
    """A cartoon face of radius `r` at (cx, cy), drawn in place."""
    cv2.ellipse(img, (cx, cy), (int(r * 0.8), r), 0, 0, 360, (140, 170, 225), -1, cv2.LINE_AA)
    eye_y, eye_dx, eye_r = cy - r // 4, int(r * 0.33), max(r // 9, 1)
    for ex in (cx - eye_dx, cx + eye_dx):
        cv2.ellipse(img, (ex, eye_y), (eye_r * 2, eye_r), 0, 0, 360, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, (ex, eye_y), eye_r, (60, 40, 20), -1, cv2.LINE_AA)
    cv2.line(img, (cx, cy - r // 8), (cx - r // 10, cy + r // 5), (90, 120, 180), max(r // 20, 1), cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy + r // 2), (r // 3, r // 8), 0, 0, 180, (60, 60, 170), max(r // 15, 1), cv2.LINE_AA)


class PhotoSource(_Generated):
    """A still photo gliding back and forth across a dark background (a demo "camera")."""

    def __init__(
        self, path: str | None, width: int, height: int, fps: Fraction, live: bool, frames: int | None
    ) -> None:
        super().__init__(width, height, fps, live, frames)
        found = Path(path) if path else default_photo()
        if found is None:
            raise InputError(
                "test://photo: no photo given and insightface's t1.jpg is not installed; "
                "use test://photo?path=/path/to/photo.jpg (or install the 'demo' extra)"
            )
        self.path = found
        self.name = f"test://photo?path={found}"

    def _prepare(self) -> None:
        img = read_image(self.path)  # regular files only, size and pixel caps
        w, h = self.width, self.height
        scale = min(0.8 * h / img.shape[0], 0.8 * w / img.shape[1])
        size = (max(int(img.shape[1] * scale), 2), max(int(img.shape[0] * scale), 2))
        self._photo = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        self._background = np.full((h, w, 3), 32, np.uint8)
        self._travel = w - size[0]

    def _draw(self, out: np.ndarray, i: int) -> None:
        ph, pw = self._photo.shape[:2]
        np.copyto(out, self._background)
        period = 2 * max(self._travel, 1)
        step = (i * 3) % period
        x = step if step <= self._travel else period - step
        y = (self.height - ph) // 2
        out[y : y + ph, x : x + pw] = self._photo
