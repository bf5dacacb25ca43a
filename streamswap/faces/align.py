"""Alignment: 5-point templates, a 4-DOF similarity fit, and crop warps that read only the
part of the frame the crop needs.

Every matrix here is a (2, 3) float64 affine that maps FRAME pixels to CROP pixels
(the direction `cv2.warpAffine` takes by default); `invert_affine` gives the crop → frame
matrix used by paste-back.
"""

from __future__ import annotations

import numpy as np

from streamswap.ops.cpu import warp_crops

# ArcFace 112×112 template in pixels (left eye, right eye, nose, left mouth, right mouth).
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# Older frontal 112 template (SimSwap, GHOST).
_ARCFACE_112_V1 = np.array(
    [[39.730, 51.138], [72.270, 51.138], [56.000, 68.493], [42.463, 87.010], [69.537, 87.010]], dtype=np.float64
)
# FFHQ template at 512 (GFPGAN).
_FFHQ_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ],
    dtype=np.float64,
)

# Templates normalised to a unit square: multiply by the crop side S.
NORMALISED_TEMPLATES: dict[str, np.ndarray] = {
    "arcface_112_v1": _ARCFACE_112_V1 / 112.0,
    "arcface_112_v2": _ARCFACE_112 / 112.0,
    # The 128-style crop: the 112 template shifted right by 8 px inside a 128 square.
    "arcface_128": (_ARCFACE_112 + np.array([8.0, 0.0])) / 128.0,
    "ffhq_512": _FFHQ_512 / 512.0,
}
# "arcface" is insightface's size rule: S % 112 == 0 → the 112 template scaled by S/112,
# else S % 128 == 0 → the 128-style crop (scale S/128, x shifted by 8·S/128).
TEMPLATE_NAMES = ("arcface", *NORMALISED_TEMPLATES)


def template(name: str, size: int) -> np.ndarray:
    """The (5, 2) float64 destination points of template `name` for a `size`×`size` crop."""
    if size <= 0:
        raise ValueError(f"crop size must be positive, got {size}")
    if name == "arcface":
        points: np.ndarray
        if size % 112 == 0:
            points = _ARCFACE_112 * (size / 112.0)
            return points
        if size % 128 == 0:
            points = (_ARCFACE_112 + np.array([8.0, 0.0])) * (size / 128.0)
            return points
        raise ValueError(f"the 'arcface' template needs a crop size that is a multiple of 112 or 128, got {size}")
    try:
        return NORMALISED_TEMPLATES[name] * float(size)
    except KeyError:
        raise ValueError(f"unknown alignment template {name!r}; known: {', '.join(TEMPLATE_NAMES)}") from None


def estimate_similarity(src_pts: np.ndarray, dst_pts: np.ndarray) -> np.ndarray:
    """Least-squares 4-DOF similarity (uniform scale, rotation, translation) mapping
    `src_pts` onto `dst_pts`; returns the (2, 3) float64 matrix.

    Closed form of the Umeyama problem in 2-D: with centred points, the best
    [[a, -b], [b, a]] is a = Σ(x·u + y·v)/Σ(x² + y²), b = Σ(x·v − y·u)/Σ(x² + y²).
    """
    src = np.asarray(src_pts, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst_pts, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need ≥ 2 matching points, got {src.shape} and {dst.shape}")
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    s = src - src_mean
    d = dst - dst_mean
    denom = float((s * s).sum())
    if denom <= 1e-12:
        raise ValueError("source points are all the same; cannot fit a similarity")
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / denom
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / denom
    linear = np.array([[a, -b], [b, a]])
    matrix = np.empty((2, 3), dtype=np.float64)
    matrix[:, :2] = linear
    matrix[:, 2] = dst_mean - linear @ src_mean
    return matrix


def align_matrix(kps: np.ndarray, template_name: str, size: int) -> np.ndarray:
    """Frame → crop matrix putting the 5 key points `kps` onto a `size` crop's template."""
    return estimate_similarity(kps, template(template_name, size))


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine (crop → frame for paste-back)."""
    m = np.asarray(matrix, dtype=np.float64)
    linear = m[:, :2]
    det = linear[0, 0] * linear[1, 1] - linear[0, 1] * linear[1, 0]
    if abs(det) < 1e-18:
        raise ValueError("affine matrix is singular")
    inv_linear = np.array([[linear[1, 1], -linear[0, 1]], [-linear[1, 0], linear[0, 0]]]) / det
    out = np.empty((2, 3), dtype=np.float64)
    out[:, :2] = inv_linear
    out[:, 2] = -inv_linear @ m[:, 2]
    return out


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to (N, 2+) points (extra columns, e.g. z, are dropped)."""
    pts = np.asarray(points, dtype=np.float64)[:, :2]
    moved: np.ndarray = pts @ np.asarray(matrix, dtype=np.float64)[:, :2].T + matrix[:, 2]
    return moved


# Extra source pixels around the exact footprint: bilinear reads floor(x) and floor(x)+1,
# and one more pixel absorbs rounding of the fixed-point coordinates.
_ROI_MARGIN = 2


def source_roi(
    inverse: np.ndarray, width: int, height: int, frame_shape: tuple[int, ...], margin: int = _ROI_MARGIN
) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1), clipped to the frame, that the region
    [0, width] × [0, height] maps to under `inverse`, widened by `margin` pixels.
    Empty (x1 <= x0 or y1 <= y0) when it lies outside the frame."""
    corners = np.array([[0.0, 0.0], [width, 0.0], [0.0, height], [width, height]])
    mapped = transform_points(corners, inverse)
    lo = np.floor(mapped.min(axis=0)) - margin
    hi = np.ceil(mapped.max(axis=0)) + margin + 1
    h, w = frame_shape[:2]
    x0 = int(min(max(lo[0], 0), w))
    y0 = int(min(max(lo[1], 0), h))
    x1 = int(min(max(hi[0], 0), w))
    y1 = int(min(max(hi[1], 0), h))
    return x0, y0, x1, y1


def warp_crop(
    bgr: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int], out: np.ndarray | None = None
) -> np.ndarray:
    """Bilinear crop of `bgr` through the frame → crop `matrix`, reading only the frame
    region the crop covers (not the whole frame). Pixels outside the frame are 0, as with
    a full-frame `cv2.warpAffine(..., borderValue=0)`. `out` is reused when given."""
    cw, ch = (size, size) if isinstance(size, int) else size
    if out is None:
        out = np.empty((ch, cw) + bgr.shape[2:], dtype=bgr.dtype)
    inverse = invert_affine(matrix)
    warp_crops(bgr, [inverse], [source_roi(inverse, cw, ch, bgr.shape)], out[None])
    return out


def align_crop(
    bgr: np.ndarray, kps: np.ndarray, template_name: str, size: int, out: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(crop, frame → crop matrix) for a face's 5 key points and a template."""
    matrix = align_matrix(kps, template_name, size)
    return warp_crop(bgr, matrix, size, out), matrix
