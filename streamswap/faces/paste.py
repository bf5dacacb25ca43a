"""Paste-back: put a generated face crop back into the frame, in place, touching only the
frame region the crop maps to.

The reference implementations warp the crop and a mask into the FULL frame for every face,
so their cost grows with the frame; here the crop → frame warp, the mask and the blend all
run on the crop's bounding box in the frame, and the feathered mask is built once per crop
size.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from streamswap.faces.align import invert_affine, source_roi, transform_points
from streamswap.faces.mesh_topology import LIPS_INNER, NUM_LANDMARKS
from streamswap.faces.settings import PasteSettings
from streamswap.ops import cpu as ops


def box_mask(size: int, blur: float, padding: float) -> np.ndarray:
    """Feathered box mask (size×size float32 in [0, 1]).

    `blur` is the feather width as a fraction of half the crop; `padding` insets the mask
    by that fraction of the crop. The border stays 0 so the warped mask fades out before
    the crop's edge (no hard seam from the crop's own border pixels)."""
    mask = np.ones((size, size), dtype=np.float32)
    feather = int(size * 0.5 * blur)
    inset = max(feather // 2, int(round(size * padding)), 1)
    inset = min(inset, size // 2 - 1)
    mask[:inset, :] = 0
    mask[-inset:, :] = 0
    mask[:, :inset] = 0
    mask[:, -inset:] = 0
    if feather > 0:
        # 3 sigma = half the feather: the mask is ~0 (< 0.2 %) at the crop edge, so the
        # warped crop never shows its own border as a seam.
        cv2.GaussianBlur(mask, (0, 0), feather / 6.0, dst=mask)
    return mask


def mouth_polygon(matrix: np.ndarray, kps: np.ndarray | None, landmarks: np.ndarray | None) -> np.ndarray | None:
    """The target's mouth interior as a polygon in crop pixels: the FaceMesh inner-lip
    contour when dense landmarks exist, else an ellipse between the two mouth corners."""
    if landmarks is not None and len(landmarks) >= NUM_LANDMARKS:
        return transform_points(landmarks[list(LIPS_INNER)], matrix).astype(np.float32)
    if kps is None:
        return None
    corners = transform_points(np.asarray(kps)[3:5], matrix)
    centre = corners.mean(axis=0)
    dx, dy = corners[1] - corners[0]
    half = 0.5 * float(np.hypot(dx, dy))
    angle = float(np.degrees(np.arctan2(dy, dx)))
    pts = cv2.ellipse2Poly(
        (int(round(centre[0])), int(round(centre[1]))),
        (max(int(half * 0.9), 1), max(int(half * 0.35), 1)),
        int(round(angle)),
        0,
        360,
        15,
    )
    return np.asarray(pts, np.float32)  # an array already; OpenCV's stub calls it a sequence of points


# Mean/std colour transfer in LAB (`ops.cpu.lab_transfer`; the GPU path runs its device twin).
transfer_color_lab = ops.lab_transfer


@dataclass
class PasteBack:
    """Blends generated crops back into frames with the configured mask options."""

    settings: PasteSettings

    def __post_init__(self) -> None:
        self._masks: dict[int, np.ndarray] = {}

    def mask(self, size: int) -> np.ndarray:
        """The feathered box mask for `size` crops, built once and reused (read-only)."""
        mask = self._masks.get(size)
        if mask is None:
            mask = box_mask(size, self.settings.blur, self.settings.padding)
            mask.setflags(write=False)
            self._masks[size] = mask
        return mask

    def paste(
        self,
        frame: np.ndarray,
        crop: np.ndarray,
        matrix: np.ndarray,
        *,
        target_crop: np.ndarray | None = None,
        kps: np.ndarray | None = None,
        landmarks: np.ndarray | None = None,
        extra_mask: np.ndarray | None = None,
    ) -> None:
        """Blend `crop` (BGR uint8, square) into `frame` in place. `matrix` is the frame →
        crop affine the crop was aligned with; `target_crop` is the original aligned crop
        (colour-correction reference); `kps` / `landmarks` locate the mouth for the mouth
        mask; `extra_mask` (crop-sized, 0 = keep the target) restricts the blend further
        (region / occlusion masks). Only the crop's bounding box in the frame is read and
        written."""
        size = crop.shape[0]
        mask = self.mask(size)
        if extra_mask is not None:
            mask = mask * extra_mask
        if self.settings.mouth_mask:
            polygon = mouth_polygon(matrix, kps, landmarks)
            if polygon is not None:
                cut = np.empty((1, size, size), dtype=np.float32)
                ops.mouth_masks(mask, [polygon], cut, ops.blur_sigma(size), np.empty_like(cut))
                mask = cut[0]
        if self.settings.color_correction and target_crop is not None:
            crop = transfer_color_lab(crop, target_crop, mask)
        paste_crop(frame, crop, mask, matrix)


def paste_crop(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray) -> None:
    """Blend `crop` into `frame` in place with `mask` (crop-sized float32 weights in
    [0, 1]) through the frame → crop `matrix`, on the crop's bounding box only; parts of
    the box outside the frame are clipped away."""
    ch, cw = crop.shape[:2]
    box = source_roi(invert_affine(matrix), cw, ch, frame.shape, margin=1)
    ops.paste(frame, crop, mask, matrix, box)
