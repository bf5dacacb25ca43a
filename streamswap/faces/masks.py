"""Masks that limit where a swap is blended in, for every swapper: FaceMesh regions (which
parts of the face are replaced), an occlusion model (xseg contract: hands, microphones,
hair in front of the face stay the target's) and a face parser (BiSeNet contract:
per-pixel classes).

Every mask is produced in a caller-given space: a (2, 3) affine `matrix` from frame pixels
to that space and its size. A neural swapper passes its crop matrix, the mesh swapper its
frame region, so one mask is combined (multiplied) with whatever feathered mask the
swapper already blends with. Values are float32 in [0, 1]; 1 = replace, 0 = keep.

The model masks run on their own aligned crop of the target, all faces of a frame in one
call, before the swap changes any pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from streamswap.errors import ConfigError, ModelError
from streamswap.faces.align import align_matrix, invert_affine, transform_points, warp_crop
from streamswap.faces.mesh_topology import (
    FACE_OVAL,
    LEFT_EYE,
    LEFT_EYEBROW,
    LIPS_INNER,
    LIPS_OUTER,
    NUM_LANDMARKS,
    RIGHT_EYE,
    RIGHT_EYEBROW,
)
from streamswap.faces.settings import MASK_REGIONS
from streamswap.faces.types import Face
from streamswap.inference.base import Session

REGIONS = MASK_REGIONS
# Nose: bridge, sides, alae and tip (the polygon is their convex hull).
NOSE = (
    168,
    6,
    197,
    195,
    5,
    4,
    1,
    19,
    94,
    2,
    98,
    327,
    129,
    358,
    49,
    279,
    48,
    278,
    64,
    294,
    102,
    331,
    115,
    344,
    217,
    437,
    188,
    412,
    122,
    351,
    245,
    465,
)
# BiSeNet (CelebAMask-HQ) classes of each region.
PARSER_CLASSES = {"skin": (1,), "brows": (2, 3), "eyes": (4, 5), "nose": (10,), "mouth": (11,), "lips": (12, 13)}
OCCLUDER_SIZE, PARSER_SIZE = 256, 512
_SHIFT = 4


def _fill(mask: np.ndarray, polygons: Sequence[np.ndarray], value: float) -> None:
    pts = [np.round(np.asarray(p) * (1 << _SHIFT)).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, value, cv2.LINE_AA, _SHIFT)


def region_polygons(pts: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Each region's polygons from (468, 2) FaceMesh points (any coordinate space)."""
    hull = cv2.convexHull(pts[list(NOSE)].astype(np.float32)).reshape(-1, 2)
    return {
        "brows": [pts[list(RIGHT_EYEBROW)], pts[list(LEFT_EYEBROW)]],
        "eyes": [pts[list(RIGHT_EYE)], pts[list(LEFT_EYE)]],
        "nose": [hull],
        "lips": [pts[list(LIPS_OUTER)]],
        "mouth": [pts[list(LIPS_INNER)]],
    }


def region_mask(
    landmarks: np.ndarray, matrix: np.ndarray, size: tuple[int, int], regions: Sequence[str], soften: float = 1.0
) -> np.ndarray:
    """(h, w) float32 mask of the chosen FaceMesh `regions` ("skin" = the face oval outside
    the other regions) in the space `matrix` maps frame pixels to; `size` is (w, h)."""
    unknown = [r for r in regions if r not in REGIONS]
    if unknown:
        raise ConfigError(f"faces.mask.regions: unknown region {unknown[0]!r}; choose from {', '.join(REGIONS)}")
    w, h = size
    pts = transform_points(np.asarray(landmarks, np.float32)[:NUM_LANDMARKS, :2], matrix).astype(np.float32)
    polys = region_polygons(pts)
    mask = np.zeros((h, w), np.float32)
    if "skin" in regions:
        _fill(mask, [pts[list(FACE_OVAL)]], 1.0)
        for name in ("brows", "eyes", "nose", "lips", "mouth"):
            if name not in regions:
                _fill(mask, polys[name], 0.0)
    # Lips are the ring between the outer and inner contours; the mouth is inside the inner one.
    for name in ("brows", "eyes", "nose", "lips", "mouth"):
        if name in regions:
            _fill(mask, polys[name], 1.0)
    if "lips" in regions and "mouth" not in regions:
        _fill(mask, polys["mouth"], 0.0)
    if soften > 0:
        cv2.GaussianBlur(mask, (0, 0), soften, dst=mask)
    return mask


def _check_io(session: Session, name: str, inputs: tuple[Any, ...], outputs: tuple[Any, ...], what: str) -> None:
    """One input N×`inputs` and a first output N×`outputs` (dynamic dims pass): checked at
    load, so a wrong model is refused with its name instead of failing on every frame."""
    for tensors, shape, which in (
        (session.inputs, inputs, "one input"),
        (session.outputs, outputs, "its first output"),
    ):
        info = tensors[0] if tensors and (which != "one input" or len(tensors) == 1) else None
        ok = (
            info is not None
            and len(info.shape) == 4
            and all(not isinstance(d, int) or d <= 0 or d == want for d, want in zip(info.shape[1:], shape))
        )
        if not ok:
            found = ", ".join(f"{t.name}{list(t.shape)}" for t in tensors)
            raise ModelError(
                f"{name}: not {what} (expected {which} N×{'×'.join(map(str, shape))}, "
                f"found [{found}]); check faces.mask models and their contract"
            )


class _CropModel:
    """An image → per-pixel model run on aligned crops of the faces (batched when the model
    has a dynamic batch axis)."""

    template = "arcface_128"
    size = 256

    def __init__(self, session: Session, name: str) -> None:
        self.session = session
        self.name = name
        self.input = session.inputs[0]
        self.output = session.outputs[0].name
        first = self.input.shape[0]
        self.batched = not (isinstance(first, int) and first > 0)

    def _blob(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _masks(self, output: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def crop_masks(self, frame: np.ndarray, faces: Sequence[Face]) -> tuple[np.ndarray, list[np.ndarray]]:
        """(N, S, S) float32 masks of `faces` in the model's own crops, and the crops' frame →
        crop matrices."""
        crops = np.empty((len(faces), self.size, self.size, 3), np.uint8)
        matrices = []
        for i, face in enumerate(faces):
            matrix = align_matrix(face.kps, self.template, self.size)
            warp_crop(frame, matrix, self.size, out=crops[i])
            matrices.append(matrix)
        blob = self._blob(crops).astype(self.input.dtype, copy=False)
        if self.batched:
            out = self.session.run({self.input.name: blob})[self.output]
        else:
            out = np.concatenate(
                [self.session.run({self.input.name: blob[i : i + 1]})[self.output] for i in range(len(blob))]
            )
        return self._masks(np.asarray(out, np.float32)), matrices


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """FaceFusion's softening: blur, then stretch [0.5, 1] to [0, 1] so a clearly masked-out
    area stays exactly 0 inside and only its edge is soft."""
    blurred = cv2.GaussianBlur(np.clip(mask, 0, 1), (0, 0), sigma)
    soft: np.ndarray = (np.clip(blurred, 0.5, 1.0) - 0.5) * 2.0
    return soft


class Occluder(_CropModel):
    """xseg contract: NHWC [N, 256, 256, 3] BGR in [0, 1] → [N, 256, 256, 1], 1 = face
    visible. What the model calls occluded keeps the target's pixels."""

    def __init__(self, session: Session, name: str = "xseg_1") -> None:
        _check_io(
            session,
            name,
            (OCCLUDER_SIZE, OCCLUDER_SIZE, 3),
            (OCCLUDER_SIZE, OCCLUDER_SIZE, 1),
            "an xseg occlusion model",
        )
        super().__init__(session, name)

    def _blob(self, crops: np.ndarray) -> np.ndarray:
        blob: np.ndarray = crops.astype(np.float32) * np.float32(1 / 255)
        return blob

    def _masks(self, output: np.ndarray) -> np.ndarray:
        out = output.reshape(len(output), OCCLUDER_SIZE, OCCLUDER_SIZE)
        return np.stack([_soft(m, 5.0) for m in out])


class FaceParser(_CropModel):
    """BiSeNet contract: [N, 3, 512, 512] RGB ImageNet-normalised → [N, 19, 512, 512] class
    logits (CelebAMask-HQ). The mask is 1 on the classes of the chosen regions."""

    size = PARSER_SIZE
    _MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    _STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)

    def __init__(self, session: Session, name: str = "bisenet_resnet_34", regions: Sequence[str] = REGIONS) -> None:
        _check_io(session, name, (3, PARSER_SIZE, PARSER_SIZE), (19, PARSER_SIZE, PARSER_SIZE), "a BiSeNet face parser")
        super().__init__(session, name)
        self.classes = np.array(sorted({c for r in regions for c in PARSER_CLASSES[r]}), np.int64)

    def _blob(self, crops: np.ndarray) -> np.ndarray:
        rgb = crops[..., ::-1].transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1 / 255)
        blob: np.ndarray = (rgb - self._MEAN) / self._STD
        return blob

    def _masks(self, output: np.ndarray) -> np.ndarray:
        if output.ndim != 4 or output.shape[1] != 19:
            raise ModelError(f"{self.name}: expected N×19×512×512 class logits, got {list(output.shape)}")
        labels = output.argmax(axis=1)
        return np.stack([_soft(np.isin(lab, self.classes).astype(np.float32), 5.0) for lab in labels])


@dataclass
class FaceMasks:
    """The configured masks, combined. `regions` None (or all of REGIONS) means no region
    mask; `occluder` / `parser` are optional models."""

    regions: tuple[str, ...] | None = None
    occluder: Occluder | None = None
    parser: FaceParser | None = None

    @property
    def active(self) -> bool:
        return (
            self.occluder is not None
            or self.parser is not None
            or (self.regions is not None and set(self.regions) != set(REGIONS))
        )

    def masks(
        self, frame: np.ndarray, faces: Sequence[Face], matrices: Sequence[np.ndarray], sizes: Sequence[tuple[int, int]]
    ) -> list[np.ndarray | None]:
        """Per face, the (h, w) mask in the space of `matrices[i]` (frame → space) of size
        `sizes[i]` = (w, h); None for a face nothing restricts. Call before swapping."""
        out: list[np.ndarray | None] = [None] * len(faces)
        if not faces or not self.active:
            return out
        if self.regions is not None and set(self.regions) != set(REGIONS):
            for i, face in enumerate(faces):
                if face.landmarks is None:
                    raise ConfigError("faces.mask.regions needs dense landmarks; set faces.landmarker.model: facemesh")
                out[i] = region_mask(face.landmarks, matrices[i], sizes[i], self.regions)
        for model in (self.occluder, self.parser):
            if model is None:
                continue
            crop_masks, crop_matrices = model.crop_masks(frame, faces)
            for i, (mask, crop_matrix) in enumerate(zip(crop_masks, crop_matrices)):
                # Target-space pixel p reads crop point crop_matrix · inverse(matrix) · p.
                to_crop = _compose(crop_matrix, invert_affine(matrices[i]))
                warped = cv2.warpAffine(
                    mask,
                    to_crop,
                    sizes[i],
                    flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_CONSTANT,
                    borderValue=1.0,
                )
                before = out[i]
                out[i] = warped if before is None else before * warped
        return out


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The affine `outer ∘ inner` (apply inner first)."""
    a = np.vstack([np.asarray(outer, np.float64), [0, 0, 1]])
    b = np.vstack([np.asarray(inner, np.float64), [0, 0, 1]])
    composed: np.ndarray = (a @ b)[:2]
    return composed
