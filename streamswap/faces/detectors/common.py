"""What every detector shares: the preallocated letterbox input, session shape checks, and
turning decoded arrays into sorted, clipped `Face` objects."""

from __future__ import annotations

from typing import NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from streamswap.errors import ConfigError, ModelError
from streamswap.faces.detectors.nms import nms
from streamswap.faces.settings import DetectorSettings
from streamswap.faces.types import Face
from streamswap.inference.base import Session, TensorInfo, model_file
from streamswap.ops.cpu import letterbox, letterbox_geometry


class Detector(Protocol):
    def detect(self, bgr: np.ndarray) -> list[Face]: ...


def model_label(session: Session, model: str | None, contract: str) -> str:
    """How error messages name the model: the file when known, else the configured name."""
    path = model_file(session)
    name = str(path) if path is not None else (model or contract)
    return f"{name} ({contract} detector)"


class InputNorm(NamedTuple):
    """How a detector normalises its letterboxed input: (x − mean) · scale, RGB or BGR."""

    mean: float
    scale: float
    rgb: bool


class DetectorClass(Protocol):
    """A detector adapter class: how it normalises its input (calibration data is made the
    same way), and its constructor."""

    input_norm: InputNorm

    def __call__(self, session: Session, settings: DetectorSettings) -> Detector: ...


class LetterboxInput:
    """A square NCHW float32 input buffer, allocated once; each frame is resized to fit and
    placed at the top-left, the rest stays at the normalised value of black."""

    def __init__(self, size: int, mean: float, scale: float, rgb: bool) -> None:
        self.size = size
        self.mean = np.float32(mean)
        self.scale = np.float32(scale)
        self.rgb = rgb
        self.buffer = np.empty((1, 3, size, size), dtype=np.float32)
        self._placed: tuple[int, int] | None = None  # (h, w) of the last placed image
        self._resized = np.empty((0, 0, 3), np.uint8)

    def fill(self, bgr: np.ndarray) -> float:
        """Letterbox `bgr` (H×W×3 uint8) into the buffer; returns input pixels per frame pixel."""
        h, w = bgr.shape[:2]
        placed = letterbox_geometry(h, w, self.size)
        new_size = self._placed != placed
        if new_size:
            self._placed = placed
            self._resized = np.empty((*placed, 3), np.uint8)  # reused while frames keep their size
        # The padding is written once per frame size (ops.cpu.letterbox, the detect stage's
        # CPU twin of the device kernel).
        return letterbox(
            bgr, self.buffer, float(self.mean), float(self.scale), self.rgb, resized=self._resized, pad=new_size
        )


@runtime_checkable
class DecodesOnDevice(Protocol):
    """A detector the GPU frame path can run (every LetterboxDetector): its network's
    session, its letterbox input (geometry, normalisation), the decoder of one run's
    outputs by name (the device does the rest), and `detect` for images that are not a
    frame slot (tools, source photos)."""

    session: Session
    input_name: str
    input: LetterboxInput
    label: str

    def decode_outputs(
        self, outputs: dict[str, np.ndarray], scale: float, frame_shape: tuple[int, ...]
    ) -> list[Face]: ...

    def detect(self, bgr: np.ndarray) -> list[Face]: ...


class LetterboxDetector:
    """What the single-input, letterboxed detectors share: opening the session with its size
    check, and `detect` = fill the input, run, `decode`.

    A subclass sets `contract`, builds `self.input` (a LetterboxInput) and `self.output_names`
    (model order), and implements `decode(outputs, scale, frame_shape)` (SCRFD, YuNet,
    YOLOFace); BlazeFace keeps the opening and input and has its own two-output `detect`."""

    contract = ""
    input: LetterboxInput
    output_names: list[str]

    def _open(self, session: Session, settings: DetectorSettings) -> int | None:
        """Keep the session and settings; returns the input size the model fixes (None: dynamic)."""
        self.session = session
        self.settings = settings
        self.label = model_label(session, settings.model, self.contract)
        self.input_name, fixed = check_image_input(session, self.label, None)
        return fixed

    def _input_size(self, fixed: int | None, multiple: int = 32) -> int:
        """The model's fixed size, else faces.detector.size, which must be a multiple of `multiple`."""
        size = fixed if fixed is not None else self.settings.size
        if size % multiple:
            raise ConfigError(f"faces.detector.size: {size} must be a multiple of {multiple} for {self.label}")
        return size

    def detect(self, bgr: np.ndarray) -> list[Face]:
        """Faces in `bgr` (H×W×3 uint8), frame coordinates, best first."""
        scale = self.input.fill(bgr)
        return self.decode_outputs(self.session.run({self.input_name: self.input.buffer}), scale, bgr.shape)

    def decode_outputs(self, outputs: dict[str, np.ndarray], scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        """Faces from one run's outputs by name (the host and the device path share it)."""
        return self.decode([outputs[n] for n in self.output_names], scale, frame_shape)

    def decode(self, outputs: list[np.ndarray], scale: float, frame_shape: tuple[int, ...]) -> list[Face]:
        raise NotImplementedError

    def finish(
        self,
        boxes: Sequence[np.ndarray],
        scores: Sequence[np.ndarray],
        kps: Sequence[np.ndarray],
        scale: float,
        frame_shape: tuple[int, ...],
        nms_offset: float = 0.0,
    ) -> list[Face]:
        """Per-stride candidates (input pixels) -> NMS -> faces in frame pixels."""
        if not len(scores):
            return []
        all_boxes = np.concatenate(boxes) / scale
        all_kps = np.concatenate(kps) / scale
        all_scores = np.concatenate(scores)
        keep = nms(all_boxes, all_scores, self.settings.nms_iou, offset=nms_offset)
        return finish_faces(all_boxes[keep], all_scores[keep], all_kps[keep], frame_shape, self.settings.max_faces)


def static_dims(info: TensorInfo) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in info.shape)


def check_image_input(session: Session, label: str, size: int | None) -> tuple[str, int | None]:
    """The detector's one image input: (name, fixed square size or None when dynamic).

    Raises ModelError when the model has another number of inputs or a non-square,
    non-3-channel fixed shape, or a fixed size different from `size` when one is demanded.
    """
    inputs = list(session.inputs)
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ModelError(
            f"{label}: expected one image input N×3×H×W, the model has "
            f"{', '.join(f'{i.name}{list(i.shape)}' for i in inputs) or 'none'}; "
            "check that the file follows this detector's contract (faces.detector.contract)"
        )
    dims = static_dims(inputs[0])
    if dims[1] not in (None, 3):
        raise ModelError(f"{label}: input {inputs[0].name} has {dims[1]} channels, expected 3 (NCHW)")
    h, w = dims[2], dims[3]
    if h is not None and w is not None and h != w:
        raise ModelError(f"{label}: input {inputs[0].name} is {h}×{w}; only square inputs are supported")
    fixed = h if h is not None else w
    if fixed is not None and size is not None and fixed != size:
        raise ModelError(
            f"{label}: the model's input is fixed at {fixed}×{fixed} but {size} was asked for; "
            f"set faces.detector.size: {fixed}"
        )
    return inputs[0].name, fixed


def check_output_dims(label: str, outputs: Sequence[TensorInfo], expected: Sequence[tuple[int | None, int]]) -> None:
    """Check each output's (rows, last dim) where the model states them; rows None = any."""
    if len(outputs) != len(expected):
        raise ModelError(
            f"{label}: expected {len(expected)} outputs, the model has {len(outputs)} "
            f"({', '.join(o.name for o in outputs)}); check faces.detector.contract"
        )
    for info, (rows, last) in zip(outputs, expected):
        dims = static_dims(info)
        if not 2 <= len(dims) <= 3 or (len(dims) == 3 and dims[0] not in (None, 1)):
            raise ModelError(f"{label}: output {info.name} has shape {list(info.shape)}, expected (1,) N×{last}")
        if (
            dims[-1] is not None
            and dims[-1] != last
            or (rows is not None and dims[-2] is not None and dims[-2] != rows)
        ):
            raise ModelError(
                f"{label}: output {info.name} has shape {list(info.shape)}, expected (1,) {rows or 'N'}×{last}"
            )


def as_rows(value: np.ndarray, label: str, name: str, rows: int, last: int) -> np.ndarray:
    """An output as a (rows, last) array, with or without a leading batch axis of 1."""
    arr = np.asarray(value)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.shape != (rows, last):
        raise ModelError(
            f"{label}: output {name} has shape {list(np.shape(value))} at run time, "
            f"expected (1,) {rows}×{last}; the model does not follow this detector's contract"
        )
    return arr


def finish_faces(
    boxes: np.ndarray,
    scores: np.ndarray,
    kps: np.ndarray,
    frame_shape: tuple[int, ...],
    max_faces: int,
    extra: dict[str, np.ndarray] | None = None,
) -> list[Face]:
    """Faces in frame coordinates: boxes clipped to the frame (key points are kept as the model
    put them, since alignment needs their true geometry even off-frame), boxes left empty by the
    clip dropped, the `max_faces` best kept, sorted by score desc, then x1, then y1."""
    h, w = frame_shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    idx = np.flatnonzero(valid)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    # Best max_faces by score first (stable), then the deterministic final order.
    idx = idx[np.argsort(-scores[idx].astype(np.float64), kind="stable")][:max_faces]
    order = sorted(idx.tolist(), key=lambda i: (-float(scores[i]), float(boxes[i, 0]), float(boxes[i, 1])))
    faces = []
    for i in order:
        faces.append(
            Face(
                box=boxes[i].copy(),
                score=float(scores[i]),
                kps=np.asarray(kps[i], dtype=np.float32).reshape(5, 2).copy(),
                extra={k: np.asarray(v[i], dtype=np.float32).copy() for k, v in (extra or {}).items()},
            )
        )
    return faces
