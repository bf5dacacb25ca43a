"""FaceMesh (MediaPipe, 468 points, bundled): dense landmarks on a detector crop.

Contract of the converted graph: input N×3×192×192 RGB in [0, 1] (the batch axis is made
dynamic at conversion so all faces of a frame run in one call); outputs N×1404×1×1 (468 ×
x, y, z in crop pixels; z on the x scale) and N×1×1×1 face-presence logits. The crop is a
square of 1.5× the detector box's long side around its centre, rotated so the eye line is
level (as MediaPipe builds its ROI), warped straight from the frame (only that region is read).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.align import invert_affine, source_roi
from streamswap.faces.mesh_topology import LEFT_EYE, NOSE_TIP, NUM_LANDMARKS, RIGHT_EYE
from streamswap.faces.types import Face
from streamswap.inference.base import Session, model_file
from streamswap.ops.cpu import Box, crops_to_tensor, warp_crops

INPUT_SIZE = 192
ROI_SCALE = 1.5
# The input is RGB planes in [0, 1]: x · 1/255 + 0 per channel (ops.crops_to_tensor).
INPUT_SCALE = np.full(3, 1 / 255, dtype=np.float32)
INPUT_BIAS = np.zeros(3, dtype=np.float32)

# Mouth corners (the other index facts are in mesh_topology). "First" = image-left on a
# frontal, unmirrored face (the subject's right), matching our KEYPOINT_NAMES order.
FIRST_MOUTH_CORNER = 61
SECOND_MOUTH_CORNER = 291


class Landmarker(Protocol):
    """Dense landmarks for several faces in one call (`FaceMesh`); `last_presence` holds
    each face's presence probability from the last call."""

    last_presence: np.ndarray

    def landmarks_many(self, bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray: ...


def five_points_from_mesh(landmarks: np.ndarray) -> np.ndarray:
    """(468, 2|3) mesh -> (5, 2) float32 alignment points: eye centres (mean of each eye
    contour), nose tip, mouth corners, in KEYPOINT_NAMES order (image-left eye first:
    MediaPipe's RIGHT_EYE, the subject's right)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] < 2:
        raise ValueError(f"expected a (468, 2|3) face mesh, got {lm.shape}")
    xy = lm[:, :2]
    return np.stack(
        [
            xy[list(RIGHT_EYE)].mean(axis=0),
            xy[list(LEFT_EYE)].mean(axis=0),
            xy[NOSE_TIP],
            xy[FIRST_MOUTH_CORNER],
            xy[SECOND_MOUTH_CORNER],
        ]
    ).astype(np.float32)


def attach_mesh(face: Face, landmarks: np.ndarray) -> None:
    """Store the mesh on `face` and replace its 5 key points with the mesh-derived ones
    (BlazeFace's provisional mouth corners become real ones)."""
    face.landmarks = np.asarray(landmarks, dtype=np.float32)
    face.kps = five_points_from_mesh(face.landmarks)


def crop_transform(face: Face, size: int = INPUT_SIZE) -> np.ndarray:
    """(2, 3) affine from frame pixels to the FaceMesh crop of `face` (size × size)."""
    x1, y1, x2, y2 = (float(v) for v in face.box)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    side = max(x2 - x1, y2 - y1, 1.0) * ROI_SCALE
    (ex0, ey0), (ex1, ey1) = face.kps[0], face.kps[1]
    angle = math.atan2(float(ey1 - ey0), float(ex1 - ex0))  # eye-line tilt, radians
    s = size / side
    cos, sin = math.cos(angle) * s, math.sin(angle) * s
    # Rotate by -angle about the box centre, scale, and move the centre to the crop centre.
    return np.array(
        [[cos, sin, size / 2 - cos * cx - sin * cy], [-sin, cos, size / 2 + sin * cx - cos * cy]], dtype=np.float64
    )


@dataclass(frozen=True)
class MeshCrops:
    """Where the FaceMesh crops of a batch of faces come from: per face the frame → crop
    matrix, its inverse (crop → frame: what the warp samples through and the decode maps
    back with) and the frame box the warp reads (only that region)."""

    matrices: list[np.ndarray]
    inverses: list[np.ndarray]
    boxes: list[Box]


def mesh_crops(faces: Sequence[Face], frame_shape: tuple[int, ...], size: int = INPUT_SIZE) -> MeshCrops:
    """The crop geometry of `faces` in a frame of `frame_shape` (host and device alike)."""
    matrices = [crop_transform(face, size) for face in faces]
    inverses = [invert_affine(m) for m in matrices]
    return MeshCrops(matrices, inverses, [source_roi(inv, size, size, frame_shape) for inv in inverses])


def decode_mesh(mesh: np.ndarray, flags: np.ndarray, crops: MeshCrops, out: np.ndarray, presence: np.ndarray) -> None:
    """The model's outputs for n faces (mesh N×1404…, presence logits N×1…) → `out`
    (n, 468, 3) landmarks in frame coordinates (z on the frame-pixel scale) and `presence`
    (n,) probabilities. The one decoder of the host FaceMesh and its device twin."""
    n = len(crops.matrices)
    points = np.asarray(mesh, dtype=np.float32).reshape(n, NUM_LANDMARKS, 3)
    logits = np.asarray(flags, dtype=np.float32).reshape(n)
    for i, (m, inverse) in enumerate(zip(crops.matrices, crops.inverses)):
        pts = points[i]
        out[i, :, :2] = pts[:, :2] @ inverse[:, :2].T + inverse[:, 2]
        out[i, :, 2] = pts[:, 2] / math.hypot(m[0, 0], m[0, 1])
    presence[:] = 1.0 / (1.0 + np.exp(-np.clip(logits, -80, 80)))


class FaceMesh:
    """468-point FaceMesh landmarker over an `inference.base.Session`.

    Holds preallocated crop/input buffers: use one instance per stage thread. The crops
    are the CPU twins of the device path's ops (`ops.cpu.warp_crops`, `crops_to_tensor`),
    so `faces.device.DeviceLandmarker` feeds the engine the same tensor."""

    input_size = INPUT_SIZE  # the crop side of the contract (tests shrink it for the simulator)

    def __init__(self, session: Session, max_batch: int = 8) -> None:
        self.session = session
        size = self.input_size
        self.label = label = f"{model_file(session) or 'facemesh'} (facemesh)"
        inputs, outputs = list(session.inputs), list(session.outputs)
        shape = tuple(inputs[0].shape) if len(inputs) == 1 else ()
        if len(shape) != 4 or tuple(shape[1:]) != (3, size, size):
            raise ModelError(
                f"{label}: expected one input N×3×{size}×{size}, the model has "
                f"{', '.join(f'{i.name}{list(i.shape)}' for i in inputs)}; convert it again: "
                "streamswap models fetch facemesh"
            )
        sizes = {self._numel(o.shape): o.name for o in outputs}
        if len(outputs) != 2 or NUM_LANDMARKS * 3 not in sizes or 1 not in sizes:
            raise ModelError(
                f"{label}: expected outputs N×1404×1×1 and N×1×1×1, the model has "
                f"{', '.join(f'{o.name}{list(o.shape)}' for o in outputs)}; convert it again: "
                "streamswap models fetch facemesh"
            )
        self.input_name = inputs[0].name
        self.mesh_name, self.flag_name = sizes[NUM_LANDMARKS * 3], sizes[1]
        self.batched = not (isinstance(shape[0], int) and shape[0] > 0)  # dynamic batch axis
        self.max_batch = max_batch if self.batched else 1
        self._buffer = np.empty((self.max_batch, 3, size, size), dtype=np.float32)
        self._crops = np.empty((self.max_batch, size, size, 3), dtype=np.uint8)
        self.last_presence: np.ndarray = np.zeros((0,), dtype=np.float32)

    @staticmethod
    def _numel(shape: Sequence[object]) -> int | None:
        n = 1
        for d in list(shape)[1:]:
            if not isinstance(d, int) or d <= 0:
                return None
            n *= d
        return n

    def landmarks(self, bgr: np.ndarray, face: Face) -> np.ndarray:
        """(468, 3) float32 landmarks of `face` in frame coordinates (z in frame-pixel scale)."""
        one: np.ndarray = self.landmarks_many(bgr, [face])[0]
        return one

    def landmarks_many(self, bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """(N, 468, 3) landmarks of all `faces`, batched into as few model calls as allowed.
        `last_presence` then holds each face's presence probability (low = not a face)."""
        out = np.empty((len(faces), NUM_LANDMARKS, 3), dtype=np.float32)
        presence = np.empty((len(faces),), dtype=np.float32)
        for start in range(0, len(faces), self.max_batch):
            chunk = faces[start : start + self.max_batch]
            n = len(chunk)
            crops = mesh_crops(chunk, bgr.shape, self.input_size)
            warp_crops(bgr, crops.inverses, crops.boxes, self._crops[:n])
            crops_to_tensor(self._crops[:n], self._buffer[:n], INPUT_SCALE, INPUT_BIAS, rgb=True)
            result = self.session.run({self.input_name: self._buffer[:n]})
            end = start + n
            decode_mesh(result[self.mesh_name], result[self.flag_name], crops, out[start:end], presence[start:end])
        self.last_presence = presence
        return out


@adapter("landmarker", "facemesh")
def _facemesh(parts: AdapterParts) -> FaceMesh:
    return FaceMesh(require_session(parts))
