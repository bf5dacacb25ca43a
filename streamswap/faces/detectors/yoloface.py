"""YOLOFace (FaceFusion `yoloface_8n.onnx`, a YOLOv8-face export).

Input 1×3×S×S (640), BGR, x/255, frame letterboxed to the top-left. One output 1×20×A
(A = Σ (S/stride)² over strides 8, 16, 32 = 8400 at 640), rows already decoded in input
pixels: [cx, cy, w, h, score, (x, y, visibility) × 5]. Key points come in our order (eyes,
nose, mouth corners; image-left first).
"""

from __future__ import annotations

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.detectors.common import InputNorm, LetterboxDetector, LetterboxInput, static_dims
from streamswap.faces.settings import DetectorSettings
from streamswap.faces.types import Face
from streamswap.inference.base import Session

STRIDES = (8, 16, 32)
ROW_LEN = 20


def anchor_count(size: int) -> int:
    return sum((size // s) ** 2 for s in STRIDES)


class YoloFaceDetector(LetterboxDetector):
    """YOLOFace decoder: threshold, NMS, letterbox removal."""

    contract = "yoloface"
    input_norm = InputNorm(mean=0.0, scale=1 / 255, rgb=False)  # (x − mean) · scale, channel order

    def __init__(self, session: Session, settings: DetectorSettings) -> None:
        self.size = size = self._input_size(self._open(session, settings), STRIDES[-1])
        self.anchors = anchor_count(size)
        outputs = list(session.outputs)
        dims = static_dims(outputs[0]) if len(outputs) == 1 else ()
        if (
            len(outputs) != 1
            or len(dims) not in (2, 3)
            or dims[-2] not in (None, ROW_LEN)
            or dims[-1] not in (None, self.anchors)
            or (len(dims) == 3 and dims[0] not in (None, 1))
        ):
            raise ModelError(
                f"{self.label}: expected one output 1×{ROW_LEN}×{self.anchors}, the model has "
                f"{', '.join(f'{o.name}{list(o.shape)}' for o in outputs)}; check faces.detector.contract"
            )
        self.output_name = outputs[0].name
        self.output_names = [self.output_name]
        self.input = LetterboxInput(size, *self.input_norm)

    def decode(self, outputs: list[np.ndarray] | np.ndarray, scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        """The raw (1,) 20×A output (alone or as a one-item list) -> faces.
        `scale`: input pixels per frame pixel."""
        output = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        raw = np.asarray(output)
        if raw.ndim == 3 and raw.shape[0] == 1:
            raw = raw[0]
        if raw.shape != (ROW_LEN, self.anchors):
            raise ModelError(
                f"{self.label}: output {self.output_name} has shape {list(np.shape(output))} "
                f"at run time, expected (1,) {ROW_LEN}×{self.anchors}"
            )
        hits = np.flatnonzero(raw[4] >= self.settings.score_threshold)
        if hits.size == 0:
            return []
        rows = raw[:, hits].T.astype(np.float64)
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kps = rows[:, 5:].reshape(-1, 5, 3)[:, :, :2]
        return self.finish([boxes], [rows[:, 4]], [kps], scale, frame_shape)
