"""YuNet (OpenCV zoo `face_detection_yunet_2023mar.onnx`, MIT).

Input 1×3×S×S BGR in 0–255 (no normalisation), frame letterboxed to the top-left (OpenCV
pads bottom-right to a multiple of 32: the same thing). Twelve outputs `cls_8/16/32`,
`obj_8/16/32` (N×1), `bbox_8/16/32` (N×4), `kps_8/16/32` (N×10), N = (S/stride)², one
anchor per cell, row-major. Decoding (as OpenCV's FaceDetectorYN): score = √(cls·obj)
(each clipped to [0, 1]); centre = (col + dx, row + dy)·stride; size = exp(dw, dh)·stride;
key point = (col + kx, row + ky)·stride. Key points: subject's right eye (image left), left
eye, nose tip, mouth corners (image left first) — our order.
"""

from __future__ import annotations

import numpy as np

from streamswap.faces.detectors.common import InputNorm, LetterboxDetector, LetterboxInput, as_rows, check_output_dims
from streamswap.faces.settings import DetectorSettings
from streamswap.faces.types import Face
from streamswap.inference.base import Session

STRIDES = (8, 16, 32)
OUTPUT_NAMES = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)


def grid(size: int, stride: int) -> np.ndarray:
    """(N, 2) float32 (col, row) of each cell, row-major."""
    cells = size // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    return np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)


class YuNetDetector(LetterboxDetector):
    """YuNet decoder over a session with the 12-output contract."""

    contract = "yunet"
    input_norm = InputNorm(mean=0.0, scale=1.0, rgb=False)  # (x − mean) · scale, channel order

    def __init__(self, session: Session, settings: DetectorSettings) -> None:
        self.size = size = self._input_size(self._open(session, settings), STRIDES[-1])
        self.rows = [(size // s) ** 2 for s in STRIDES]
        outputs = list(session.outputs)
        by_name = {o.name: o for o in outputs}
        # OpenCV's export names them; other exports may not: then take them by position.
        ordered = [by_name[n] for n in OUTPUT_NAMES] if set(OUTPUT_NAMES) <= set(by_name) else outputs
        check_output_dims(self.label, ordered, [(n, last) for last in (1, 1, 4, 10) for n in self.rows])
        self.output_names = [o.name for o in ordered]
        self.grids = [grid(size, s) for s in STRIDES]
        self.input = LetterboxInput(size, *self.input_norm)

    def decode(self, outputs: list[np.ndarray], scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        """The 12 raw outputs (cls, obj, bbox, kps × strides 8/16/32) -> faces."""
        names = self.output_names
        boxes_list, scores_list, kps_list = [], [], []
        for i, stride in enumerate(STRIDES):
            n = self.rows[i]
            cls = np.clip(as_rows(outputs[i], self.label, names[i], n, 1)[:, 0], 0, 1)
            obj = np.clip(as_rows(outputs[i + 3], self.label, names[i + 3], n, 1)[:, 0], 0, 1)
            scores = np.sqrt(cls.astype(np.float64) * obj)
            hits = np.flatnonzero(scores >= self.settings.score_threshold)
            if hits.size == 0:
                continue
            bbox = as_rows(outputs[i + 6], self.label, names[i + 6], n, 4)[hits].astype(np.float64)
            kps = as_rows(outputs[i + 9], self.label, names[i + 9], n, 10)[hits].astype(np.float64)
            cells = self.grids[i][hits]
            centre = (cells + bbox[:, :2]) * stride
            half = np.exp(np.minimum(bbox[:, 2:], 20.0)) * stride / 2  # bounded: no inf boxes
            boxes_list.append(np.concatenate([centre - half, centre + half], axis=1))
            kps_list.append((kps.reshape(-1, 5, 2) + cells[:, None, :]) * stride)
            scores_list.append(scores[hits])
        return self.finish(boxes_list, scores_list, kps_list, scale, frame_shape)
