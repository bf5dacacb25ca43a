"""SCRFD / RetinaFace (insightface det_*, scrfd_2.5g, retinaface_10g): the 9-output layout.

Input 1×3×S×S (S 160–640, multiple of 32), frame letterboxed to the top-left of a black
square, RGB, (x − 127.5)/128. Outputs, by position: scores for strides 8, 16, 32 (N×1,
sigmoid applied), box distances (N×4), 5 key points (N×10), with or without a leading batch
axis; N = (S/stride)² × 2 anchors. Anchor centres (x·stride, y·stride), row-major, each twice.
Box = centre ∓ distance·stride; key point = centre + offset·stride; ÷ letterbox scale.
"""

from __future__ import annotations

import logging

import numpy as np

from streamswap.errors import ConfigError
from streamswap.faces.detectors.common import InputNorm, LetterboxDetector, LetterboxInput, as_rows, check_output_dims
from streamswap.faces.settings import DetectorSettings
from streamswap.faces.types import Face
from streamswap.inference.base import Session
from streamswap.logs import kv

log = logging.getLogger(__name__)

STRIDES = (8, 16, 32)
ANCHORS_PER_CELL = 2
MIN_SIZE, MAX_SIZE, SIZE_STEP = 160, 640, 32


def anchor_centres(size: int, stride: int) -> np.ndarray:
    """(N, 2) float32 anchor centres in input pixels for one stride, each repeated per cell."""
    cells = size // stride
    ys, xs = np.mgrid[0:cells, 0:cells]
    centres = (np.stack([xs, ys], axis=-1).reshape(-1, 2) * stride).astype(np.float32)
    return np.repeat(centres, ANCHORS_PER_CELL, axis=0)


class ScrfdDetector(LetterboxDetector):
    """SCRFD/RetinaFace decoder over a session with the 9-output contract."""

    contract = "scrfd"
    input_norm = InputNorm(mean=127.5, scale=1 / 128, rgb=True)  # (x − mean) · scale, channel order

    def __init__(self, session: Session, settings: DetectorSettings) -> None:
        fixed = self._open(session, settings)
        size = fixed if fixed is not None else settings.size
        if fixed is None and not (MIN_SIZE <= size <= MAX_SIZE and size % SIZE_STEP == 0):
            raise ConfigError(
                f"faces.detector.size: {size} is not usable by the SCRFD/RetinaFace detector "
                f"{self.label}; use {MIN_SIZE}–{MAX_SIZE} in steps of {SIZE_STEP} (e.g. 640)"
            )
        if fixed is not None and fixed != settings.size:
            # A model exported at a fixed size decides; the setting is only a request.
            log.info(
                "detector input size fixed by the model",
                extra=kv(model=self.label, size=fixed, requested=settings.size),
            )
        self.size = size = self._input_size(fixed, STRIDES[-1])
        self.rows = [(size // s) ** 2 * ANCHORS_PER_CELL for s in STRIDES]
        outputs = list(session.outputs)
        check_output_dims(
            self.label,
            outputs,
            [(n, 1) for n in self.rows] + [(n, 4) for n in self.rows] + [(n, 10) for n in self.rows],
        )
        self.output_names = [o.name for o in outputs]
        self.centres = [anchor_centres(size, s) for s in STRIDES]
        self.input = LetterboxInput(size, *self.input_norm)

    def decode(self, outputs: list[np.ndarray], scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        """The 9 raw outputs (model order) -> faces. `scale`: input pixels per frame pixel."""
        names = self.output_names
        boxes_list, scores_list, kps_list = [], [], []
        for i, stride in enumerate(STRIDES):
            n = self.rows[i]
            scores = as_rows(outputs[i], self.label, names[i], n, 1)[:, 0]
            hits = np.flatnonzero(scores >= self.settings.score_threshold)
            if hits.size == 0:
                continue
            dist = as_rows(outputs[i + 3], self.label, names[i + 3], n, 4)[hits] * stride
            offs = as_rows(outputs[i + 6], self.label, names[i + 6], n, 10)[hits] * stride
            centres = self.centres[i][hits]
            boxes_list.append(np.concatenate([centres - dist[:, :2], centres + dist[:, 2:]], axis=1))
            kps_list.append(offs.reshape(-1, 5, 2) + centres[:, None, :])
            scores_list.append(scores[hits])
        # Pixel-inclusive IoU (+1), as the reference decoder does, so the kept set matches it.
        return self.finish(boxes_list, scores_list, kps_list, scale, frame_shape, nms_offset=1.0)
