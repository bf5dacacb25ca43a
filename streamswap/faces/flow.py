"""Following faces between detector frames when there is no landmarker: pyramidal
Lucas-Kanade optical flow on a small grey crop around each face.

Without this a tracked face is held where the detector last saw it, so with the detector
running every N frames the swap lags a moving head by up to N − 1 frames of motion. Here the
face's key points and a grid of points over its box are followed from the previous frame
into this one, a similarity transform (shift, scale, rotation) is fitted to the points that
were found (RANSAC: a hand passing by does not drag the face along), and the box and key
points are moved by it. The work is per face and ROI-sized: a crop of the box plus a margin,
scaled down to at most `work_side` pixels, converted to grey once per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from streamswap.faces.types import Face

# Lucas-Kanade: window, pyramid levels, stop criteria.
_LK_WINDOW = (15, 15)
_LK_LEVELS = 2
_LK_CRITERIA = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)
_GRID = 5  # points per side of the grid over the face box
_MIN_POINTS = 6  # fewer found points than this: the face is held instead


@dataclass
class _Crop:
    x0: int
    y0: int
    scale: float  # crop pixels per frame pixel
    grey: np.ndarray


class FaceFlow:
    """Remembers a grey crop around each tracked face and follows the faces into the next
    frame. Used by the detect stage's thread only."""

    def __init__(self, margin: float = 0.4, work_side: int = 160) -> None:
        self.margin = margin
        self.work_side = work_side
        self._crops: dict[int, _Crop] = {}

    def reset(self) -> None:
        self._crops.clear()

    def remember(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        """Keep the crops of `faces` (by track id) to follow them into the next frame."""
        self._crops = {}
        for face in faces:
            if face.track_id is not None:
                crop = self._crop(frame, face.box)
                if crop is not None:
                    self._crops[face.track_id] = crop

    def follow(self, frame: np.ndarray, faces: Sequence[Face]) -> list[Face]:
        """`faces` (the previous frame's, with track ids) moved to where they are in `frame`;
        a face whose motion cannot be measured keeps its place."""
        out = []
        for face in faces:
            prev = self._crops.get(face.track_id) if face.track_id is not None else None
            moved = self._follow_one(frame, face, prev) if prev is not None else None
            out.append(moved if moved is not None else face)
        return out

    # --- internals ------------------------------------------------------------------------
    def _crop(self, frame: np.ndarray, box: np.ndarray, like: _Crop | None = None) -> _Crop | None:
        h, w = frame.shape[:2]
        if like is None:
            x1, y1, x2, y2 = (float(v) for v in box)
            mx, my = (x2 - x1) * self.margin, (y2 - y1) * self.margin
            x0, y0 = max(int(x1 - mx), 0), max(int(y1 - my), 0)
            xe, ye = min(int(x2 + mx) + 1, w), min(int(y2 + my) + 1, h)
            if xe - x0 < 8 or ye - y0 < 8:
                return None
            scale = min(1.0, self.work_side / max(xe - x0, ye - y0))
        else:  # the same region of this frame, to compare with the remembered crop
            x0, y0, scale = like.x0, like.y0, like.scale
            xe = x0 + int(round(like.grey.shape[1] / scale))
            ye = y0 + int(round(like.grey.shape[0] / scale))
            xe, ye = min(xe, w), min(ye, h)
        roi = frame[y0:ye, x0:xe]
        if scale < 1.0:
            size = (
                like.grey.shape[1::-1]
                if like is not None
                else (max(int(round((xe - x0) * scale)), 1), max(int(round((ye - y0) * scale)), 1))
            )
            roi = cv2.resize(roi, size, interpolation=cv2.INTER_LINEAR)  # 15× cheaper than AREA; LK smooths
        grey = cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY)
        if like is not None and grey.shape != like.grey.shape:
            return None  # the region left the frame
        return _Crop(x0, y0, scale, grey)

    def _follow_one(self, frame: np.ndarray, face: Face, prev: _Crop) -> Face | None:
        cur = self._crop(frame, face.box, like=prev)
        if cur is None:
            return None
        x1, y1, x2, y2 = (float(v) for v in face.box)
        gx, gy = np.meshgrid(np.linspace(x1, x2, _GRID + 2)[1:-1], np.linspace(y1, y2, _GRID + 2)[1:-1])
        points = np.concatenate(
            [face.kps[:, :2].astype(np.float32), np.stack([gx.ravel(), gy.ravel()], 1).astype(np.float32)]
        )
        local = ((points - [prev.x0, prev.y0]) * prev.scale).astype(np.float32).reshape(-1, 1, 2)
        found, status, _ = cv2.calcOpticalFlowPyrLK(
            prev.grey, cur.grey, local, None, winSize=_LK_WINDOW, maxLevel=_LK_LEVELS, criteria=_LK_CRITERIA
        )
        ok = status.reshape(-1).astype(bool)
        if ok.sum() < _MIN_POINTS:
            return None
        src = local.reshape(-1, 2)[ok] / prev.scale + [prev.x0, prev.y0]
        dst = found.reshape(-1, 2)[ok] / cur.scale + [cur.x0, cur.y0]
        matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=2.0)
        if matrix is None or inliers is None or int(inliers.sum()) < _MIN_POINTS:
            return None
        return _moved(face, matrix.astype(np.float32))


def _moved(face: Face, matrix: np.ndarray) -> Face:
    """`face` with its box, key points, landmarks and extra points mapped by the 2×3
    similarity `matrix`."""

    def apply(xy: np.ndarray) -> np.ndarray:
        moved: np.ndarray = xy @ matrix[:, :2].T + matrix[:, 2]
        return moved

    x1, y1, x2, y2 = (float(v) for v in face.box)
    centre = apply(np.array([[(x1 + x2) / 2, (y1 + y2) / 2]], np.float32))[0]
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    hw, hh = (x2 - x1) / 2 * scale, (y2 - y1) / 2 * scale
    kps = face.kps.copy()
    kps[:, :2] = apply(face.kps[:, :2].astype(np.float32))
    landmarks = None
    if face.landmarks is not None:
        landmarks = face.landmarks.copy()
        landmarks[:, :2] = apply(face.landmarks[:, :2].astype(np.float32))
    extra = {k: apply(np.asarray(v, np.float32).reshape(-1, 2)).reshape(np.shape(v)) for k, v in face.extra.items()}
    return Face(
        box=np.array([centre[0] - hw, centre[1] - hh, centre[0] + hw, centre[1] + hh], np.float32),
        score=face.score,
        kps=kps,
        landmarks=landmarks,
        embedding=face.embedding,
        track_id=face.track_id,
        extra=extra,
    )
