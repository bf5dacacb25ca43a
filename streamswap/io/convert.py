"""Pixel conversions between PyAV frames and BGR slot buffers, without per-frame scaler set-up.

Measured at 1920×1080 on the 2-core dev machine (tests/ generate the clip; `bench` numbers
are the source of truth):
- decode side, yuv420p → BGR at the run size: copying the three planes into one
  persistent I420 buffer + `cv2.cvtColor(YUV2BGR_I420, dst=slot)` ≈ 0.7 ms and allocates
  nothing; one persistent swscale context (`VideoReformatter`) + copy into the slot
  ≈ 0.9 ms, but PyAV allocates a new BGR frame per call. So: the cv2 path for the common
  case (yuv420p, BT.601/unspecified matrix, limited range, already the run's size), the
  reformatter for everything else (other pixel formats, BT.709, full range, rescaling
  after a resolution change).
- encode side, BGR slot → yuv420p: `VideoFrame.from_ndarray(...).reformat()` ≈ 14 ms
  (copy + a new scaler each call), `from_numpy_buffer` + persistent reformatter ≈ 4 ms,
  `cv2.cvtColor(BGR2YUV_I420)` into a persistent buffer + copying the planes into one
  reused `VideoFrame` ≈ 0.6 ms. The last is used (same BT.601 limited-range matrix as
  swscale's default, so colours match the decode side).
"""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter


class BgrWriter:
    """Writes decoded frames as BGR at a fixed size into caller-owned buffers.

    One instance per source: the swscale context is cached across frames and only rebuilt
    when the input geometry or format changes (e.g. a resolution change mid-stream).
    """

    def __init__(self, width: int, height: int) -> None:
        self.width = width
        self.height = height
        self._reformatter = VideoReformatter()
        self._i420 = np.empty((height * 3 // 2, width), np.uint8) if not (width % 2 or height % 2) else None
        self.fast_frames = 0  # frames that took the allocation-free cv2 path

    def write(self, frame: av.VideoFrame, out: np.ndarray) -> None:
        """Convert `frame` into `out` (H×W×3 uint8 BGR at this writer's size)."""
        if self._fast(frame):
            h, w, i420 = self.height, self.width, self._i420
            assert i420 is not None
            y, u, v = frame.planes
            y_part, u_part, v_part = _i420_planes(i420, h, w)
            y_part[:] = _plane_view(y, h, w)
            u_part[:] = _plane_view(u, h // 2, w // 2)
            v_part[:] = _plane_view(v, h // 2, w // 2)
            cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420, dst=out)
            self.fast_frames += 1
            return
        bgr = self._reformatter.reformat(frame, width=self.width, height=self.height, format="bgr24")
        np.copyto(out, bgr.to_ndarray())

    def _fast(self, frame: av.VideoFrame) -> bool:
        return (
            self._i420 is not None
            and frame.width == self.width
            and frame.height == self.height
            and frame.format.name == "yuv420p"
            and frame.colorspace in _BT601
            and frame.color_range != _FULL_RANGE
        )


# cv2's I420 conversion uses the BT.601 limited-range matrix, which is also what
# swscale assumes for untagged video.
_BT601 = {2, 5, 6}  # AVCOL_SPC_UNSPECIFIED, BT470BG, SMPTE170M
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


class YuvFrameFiller:
    """BGR arrays → one reused yuv420p `VideoFrame` for an encoder."""

    def __init__(self, width: int, height: int) -> None:
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs an even width and height")
        self.width = width
        self.height = height
        self._i420 = np.empty((height * 3 // 2, width), np.uint8)
        self._frame = av.VideoFrame(width, height, "yuv420p")
        self._frame.colorspace = av.video.reformatter.Colorspace.ITU601
        self._frame.color_range = av.video.reformatter.ColorRange.MPEG

    def fill(self, bgr: np.ndarray, pts: int | None, time_base: Fraction) -> av.VideoFrame:
        """Convert `bgr` into the reused frame and stamp it; the encoder copies it on send."""
        h, w = self.height, self.width
        cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420, dst=self._i420)
        frame = self._frame
        # An encoder that still holds a reference (frame threading) gets its own copy.
        frame.make_writable()
        y, u, v = frame.planes
        y_part, u_part, v_part = _i420_planes(self._i420, h, w)
        _plane_view(y, h, w)[:] = y_part
        _plane_view(u, h // 2, w // 2)[:] = u_part
        _plane_view(v, h // 2, w // 2)[:] = v_part
        frame.pts = pts
        frame.time_base = time_base
        return frame


def _i420_planes(i420: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y (h×w), U and V (h/2 × w/2) views of OpenCV's I420 buffer ((h·3/2)×w, planes back to
    back). Sliced by bytes, not rows: when h/2 is odd (480×270, 1080×1350) a chroma plane
    ends in the middle of a row of the (h·3/2)×w shape."""
    flat = i420.reshape(-1)
    y_end, c = h * w, (h // 2) * (w // 2)
    return (
        flat[:y_end].reshape(h, w),
        flat[y_end : y_end + c].reshape(h // 2, w // 2),
        flat[y_end + c : y_end + 2 * c].reshape(h // 2, w // 2),
    )


def _plane_view(plane: av.video.plane.VideoPlane, rows: int, cols: int) -> np.ndarray:
    # Through a memoryview (no copy): numpy's stub lists concrete buffer types, not PyAV's.
    return np.frombuffer(memoryview(plane), np.uint8).reshape(rows, plane.line_size)[:, :cols]
