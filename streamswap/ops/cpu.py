"""CPU twins of the frame ops (OpenCV/numpy); `streamswap.ops.cuda` mirrors each signature.

Every op writes into a buffer the caller allocated once (no frame-sized allocation per
call), and reads only the part of the frame it needs.
"""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1: a half-open pixel box inside the frame


def letterbox_geometry(height: int, width: int, size: int) -> tuple[int, int]:
    """(nh, nw): the frame resized to fit a `size` square, long side exactly `size`
    (the SCRFD reference's rounding)."""
    if height > width:
        return size, max(1, int(size / (height / width)))
    return max(1, int(size * (height / width))), size


def letterbox(
    frame: np.ndarray,
    out: np.ndarray,
    mean: float,
    scale: float,
    rgb: bool,
    resized: np.ndarray | None = None,
    pad: bool = True,
) -> float:
    """Resize BGR uint8 `frame` (bilinear) to fit `out` ((1, 3, S, S) float32) at its
    top-left, normalise as (x − mean) · scale in RGB or BGR order, and (when `pad`) fill
    the rest with the normalised black; a caller whose frames keep their size pads once.
    Returns input pixels per frame pixel. `resized` ((nh, nw, 3) uint8) is reused for the
    resize when given."""
    h, w = frame.shape[:2]
    size = out.shape[2]
    nh, nw = letterbox_geometry(h, w, size)
    if pad:
        black = np.float32((0.0 - mean) * scale)
        out[:, :, nh:, :] = black
        out[:, :, :nh, nw:] = black
    if (nh, nw) == (h, w):
        image = frame
    else:
        if resized is None or resized.shape[:2] != (nh, nw):
            resized = np.empty((nh, nw, 3), np.uint8)
        image = cv2.resize(frame, (nw, nh), dst=resized, interpolation=cv2.INTER_LINEAR)
    m, s = np.float32(mean), np.float32(scale)
    for c in range(3):
        plane = out[0, c, :nh, :nw]
        np.subtract(image[:, :, 2 - c if rgb else c], m, out=plane)
        plane *= s
    return nh / h


def warp_crops(frame: np.ndarray, inverses: Sequence[np.ndarray], boxes: Sequence[Box], out: np.ndarray) -> None:
    """Bilinear crops of BGR uint8 `frame` into `out` ((N, S, S, 3) uint8): crop pixel p of
    face i samples frame point inverses[i]·p (crop → frame affine); frame pixels outside
    boxes[i] (the part the crop covers, computed by the caller) are never read, and points
    outside the frame read 0."""
    ch, cw = out.shape[1:3]
    for i, (inverse, (x0, y0, x1, y1)) in enumerate(zip(inverses, boxes)):
        if x1 <= x0 or y1 <= y0:
            out[i] = 0
            continue
        roi_inverse = np.array(inverse, dtype=np.float64)
        roi_inverse[0, 2] -= x0
        roi_inverse[1, 2] -= y0
        cv2.warpAffine(
            frame[y0:y1, x0:x1],
            roi_inverse,
            (cw, ch),
            dst=out[i],
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )


def crops_to_tensor(crops: np.ndarray, out: np.ndarray, scale: np.ndarray, bias: np.ndarray, rgb: bool) -> None:
    """(N, S, S, 3) BGR uint8 crops → `out` (N, 3, S, S) float32 as x · scale[c] + bias[c]
    per channel c of the model's colour order (RGB when `rgb`)."""
    chw = crops.transpose(0, 3, 1, 2)
    if rgb:
        chw = chw[:, ::-1]
    np.multiply(chw, np.asarray(scale, np.float32).reshape(1, 3, 1, 1), out=out, casting="unsafe")
    if np.any(bias):  # FaceMesh's [0, 1] input has none: skip a pass over the batch
        out += np.asarray(bias, np.float32).reshape(1, 3, 1, 1)


def _output_pixels(tensor: np.ndarray, scale: float, offset: float, rgb: bool) -> np.ndarray:
    """A model's (N, 3, S, S) output as (N, S, S, 3) BGR float32 pixels:
    clip(255 · (x · scale + offset)) (a view in channels-last order, no copy)."""
    pixels = tensor.astype(np.float32, copy=False) * np.float32(255.0 * scale)
    pixels += np.float32(255.0 * offset)
    np.clip(pixels, 0, 255, out=pixels)
    hwc = pixels.transpose(0, 2, 3, 1)
    return hwc[..., ::-1] if rgb else hwc


def tensor_to_crops(tensor: np.ndarray, out: np.ndarray, scale: float, offset: float, rgb: bool) -> None:
    """A model's (N, 3, S, S) output → `out` (N, S, S, 3) BGR uint8 as
    clip(255 · (x · scale + offset)), rounded towards zero."""
    np.copyto(out, _output_pixels(tensor, scale, offset, rgb), casting="unsafe")


def tensor_blend_crops(
    tensor: np.ndarray, crops: np.ndarray, out: np.ndarray, scale: float, offset: float, weight: float, rgb: bool
) -> None:
    """A model's (N, 3, S, S) output mixed into the (N, S, S, 3) BGR uint8 `crops` it was
    made from → `out` (may be `crops`): weight · clip(255 · (x · scale + offset)) +
    (1 − weight) · crop, rounded (an enhancer's share of the enhanced face)."""
    mixed = np.float32(weight) * _output_pixels(tensor, scale, offset, rgb) + np.float32(1.0 - weight) * crops
    mixed += np.float32(0.5)
    np.clip(mixed, 0, 255, out=mixed)
    np.copyto(out, mixed, casting="unsafe")


def paste(frame: np.ndarray, crop: np.ndarray, mask: np.ndarray, matrix: np.ndarray, box: Box) -> None:
    """Blend BGR uint8 `crop` into `frame` in place inside `box` (the crop's footprint in
    the frame, clipped): frame pixel q takes crop point matrix·q (frame → crop affine),
    weighted by `mask` (crop-sized float32 in [0, 1]) sampled at the same point."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    roi_matrix = np.array(matrix, dtype=np.float64)
    roi_matrix[:, 2] += roi_matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    size = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(crop, roi_matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    weight = cv2.warpAffine(mask, roi_matrix, size, flags=flags, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    roi = frame[y0:y1, x0:x1]
    inverse_weight = np.subtract(1.0, weight, dtype=np.float32)
    cv2.blendLinear(warped, roi, weight, inverse_weight, dst=roi)  # in place: per pixel


def lab_transfer(crop: np.ndarray, reference: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Mean/std colour transfer in OpenCV's 8-bit LAB: the statistics of `crop` (BGR
    uint8) are matched to those of `reference` over the pixels where `weight` > 0.5 (fewer
    than 16 such pixels: `crop` unchanged). Returns a new crop."""
    sel = weight > 0.5
    if int(sel.sum()) < 16:
        return crop
    src = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB).astype(np.float32)
    ref = cv2.cvtColor(reference, cv2.COLOR_BGR2LAB).astype(np.float32)
    s_mean, s_std = src[sel].mean(axis=0), src[sel].std(axis=0) + 1e-3
    r_mean, r_std = ref[sel].mean(axis=0), ref[sel].std(axis=0) + 1e-3
    out = (src - s_mean) * (r_std / s_std) + r_mean
    return cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_LAB2BGR)


def transfer_color_lab(crops: np.ndarray, references: np.ndarray, weights: np.ndarray, out: np.ndarray) -> None:
    """`lab_transfer` for every crop of a batch: crops and references (N, S, S, 3) BGR uint8,
    weights (N, S, S) float32 per crop or (S, S) shared, into `out` (may be `crops`)."""
    for i in range(len(crops)):
        weight = weights if weights.ndim == 2 else weights[min(i, len(weights) - 1)]
        out[i] = lab_transfer(crops[i], references[i], weight)


def fill_polygons(polygons: Sequence[np.ndarray | None], out: np.ndarray) -> None:
    """Fill polygon i (vertices in crop pixels, rounded to whole pixels) with 1.0 in
    `out[i]` ((N, S, S) float32, zeroed first; None or no vertices: all 0)."""
    for i, polygon in enumerate(polygons):
        out[i] = 0.0
        if polygon is not None and len(polygon):
            cv2.fillPoly(out[i], [np.round(polygon).astype(np.int32)], 1.0)


def blur_sigma(size: int) -> int:
    """The mouth mask's Gaussian sigma for `size` crops (a soft edge of a few pixels)."""
    return max(size // 64, 1)


def blur_masks(masks: np.ndarray, out: np.ndarray, sigma: float, scratch: np.ndarray | None = None) -> None:
    """Gaussian blur of every (S, S) float32 mask of `masks` (N, S, S) into `out`
    (cv2.GaussianBlur with ksize from sigma, reflect-101 border); `scratch` is the device
    twin's intermediate buffer (unused here)."""
    for i in range(len(masks)):
        cv2.GaussianBlur(masks[i], (0, 0), sigma, dst=out[i])


def mouth_masks(
    base: np.ndarray, polygons: Sequence[np.ndarray | None], out: np.ndarray, sigma: float, scratch: np.ndarray
) -> None:
    """Per-face paste masks that keep the target's mouth: `base` (S, S, shared) times
    (1 − the blurred filled mouth polygon) into `out` (N, S, S); `scratch` (N, S, S) float32."""
    n = len(polygons)
    fill_polygons(polygons, scratch[:n])
    blur_masks(scratch[:n], scratch[:n], sigma)
    for i in range(n):
        np.multiply(base, np.subtract(1.0, scratch[i], dtype=np.float32), out=out[i])
