"""Small value types shared by every face stage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Order of the 5 alignment points everywhere (insightface's order, image left/right:
# "left eye" is the eye with the smaller x on a frontal face).
KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")


@dataclass
class Face:
    """One detected face in frame coordinates (pixels of the full frame)."""

    box: np.ndarray  # (4,) float32: x1, y1, x2, y2
    score: float
    kps: np.ndarray  # (5, 2) float32, KEYPOINT_NAMES order
    landmarks: np.ndarray | None = None  # (468, 3) float32 dense mesh, when a landmarker ran
    embedding: np.ndarray | None = None  # (512,) float32, L2-normalised, when recognised
    track_id: int | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # detector-specific points
    source: str | None = None  # which identity replaces it, set by selection ("" = the main source)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return float(self.box[0] + self.box[2]) / 2, float(self.box[1] + self.box[3]) / 2
