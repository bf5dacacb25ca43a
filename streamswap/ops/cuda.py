"""Numba CUDA kernels for the frame ops; each host function has its CPU twin's signature
in `streamswap.ops.cpu`, plus `stream`: the calling stage's CUDA stream.

Arrays are device arrays (numba's own, or anything exposing `__cuda_array_interface__`,
such as the pipeline's device frames); under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1,
how CI runs every kernel) they may be numpy arrays. `stream` is a numba stream, a raw
cudaStream_t handle (int; wrapped with `numba.cuda.external_stream`) or None for the
default stream. Kernels only queue work on the stream: nothing here waits for the device.

Interpolation is bilinear in float32 on float coordinates, like OpenCV 4.11+'s warp and
resize: results match the CPU twins within one grey level (a different rounding of the
same weights), masks within 1e-5.

The colour transfer converts BGR → LAB with OpenCV's own 8-bit fixed-point scheme (its
gamma and cube-root tables, rebuilt here from the same formulas: bit-exact with
cv2.cvtColor over all 2^24 colours) and sums the statistics in integers (exact at any crop
size); LAB → BGR is float32 math (equal to OpenCV's 8-bit conversion for 97 % of all LAB
values per channel, 1 grey level off for the rest but 0.001 %, at most 3). The mouth polygon is filled by an even-odd point-in-polygon
test plus its 8-connected outline, which is not quite cv2.fillPoly's rasteriser (about 1 %
of the filled pixels differ, all on the outline, where the tie of a line's rounding falls
the other way); the Gaussian blur after it matches cv2.GaussianBlur within 1e-5.
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from numba import config as numba_config
from numba import cuda

from streamswap.ops.cpu import Box, letterbox_geometry

# numba fills its config module from the environment at import (NUMBA_ENABLE_CUDASIM), so
# the name exists only at run time.
SIMULATED = bool(getattr(numba_config, "ENABLE_CUDASIM"))

# Host code reaches numba.cuda through this holder: while a kernel runs, the simulator
# swaps every module-level name bound to numba.cuda for its fake, which would break another
# stage thread's host calls at that moment (the real target never does this).
# The simulator is not thread-safe either (each kernel thread finds its block index through
# the calling Python thread), so there launches from two stage threads take turns.
_host = SimpleNamespace(cuda=cuda, launch=threading.Lock() if SIMULATED else nullcontext())

_BLOCK_2D = (16, 16)
_BLOCK_3D = (16, 8, 2)


@runtime_checkable
class _StreamHandle(Protocol):
    """A CUDA stream of ours (`inference.cuda.Stream`: ops imports no other package): its
    raw cudaStream_t. A numba stream has a `handle` too, a ctypes pointer, not an int."""

    @property
    def handle(self) -> int: ...


def as_stream(stream: Any) -> Any:
    """A numba stream for `stream` (numba stream, raw cudaStream_t handle, or None)."""
    if stream is None:
        return _host.cuda.default_stream()
    if SIMULATED and not type(stream).__module__.startswith("numba"):
        # The simulator has no external streams and runs every launch to completion at
        # once, so any stream orders it correctly.
        return _host.cuda.default_stream()
    if isinstance(stream, int):
        return _host.cuda.external_stream(stream)
    if isinstance(stream, _StreamHandle) and isinstance(stream.handle, int):  # inference.cuda.Stream
        return _host.cuda.external_stream(stream.handle)
    return stream


def as_device(array: Any) -> Any:
    """Numba's view of a device array given as anything with `__cuda_array_interface__`."""
    interface = getattr(array, "__cuda_array_interface__", None)
    if interface is None or hasattr(array, "copy_to_host"):
        return array  # numba's own device array, or a numpy array under the simulator
    if SIMULATED:
        # No device under the simulator: the pointer is host memory (the tests' recording
        # fake of cuda-python allocates "device" buffers in host memory).
        return _host_view(interface)
    return _host.cuda.as_cuda_array(array)


def _host_view(interface: dict[str, Any]) -> np.ndarray:
    import ctypes

    dtype = np.dtype(interface["typestr"])
    shape = tuple(interface["shape"])
    count = int(np.prod(shape, dtype=np.int64))
    raw = (ctypes.c_ubyte * max(count * dtype.itemsize, 1)).from_address(interface["data"][0])
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def _grid(shape: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    return tuple(max(1, math.ceil(n / b)) for n, b in zip(shape, block))


# --- device helpers -------------------------------------------------------------------
@cuda.jit(device=True)
def _texel(img, y, x, c):
    """img[y, x, c] as float32, 0 outside the image (BORDER_CONSTANT 0)."""
    if y < 0 or x < 0 or y >= img.shape[0] or x >= img.shape[1]:
        return np.float32(0.0)
    return np.float32(img[y, x, c])


@cuda.jit(device=True)
def _bilinear(img, fy, fx, c):
    """Bilinear sample of channel c at (fy, fx), zero border."""
    y0 = int(math.floor(fy))
    x0 = int(math.floor(fx))
    wy = np.float32(fy - y0)
    wx = np.float32(fx - x0)
    top = _texel(img, y0, x0, c) * (np.float32(1.0) - wx) + _texel(img, y0, x0 + 1, c) * wx
    bottom = _texel(img, y0 + 1, x0, c) * (np.float32(1.0) - wx) + _texel(img, y0 + 1, x0 + 1, c) * wx
    return top * (np.float32(1.0) - wy) + bottom * wy


@cuda.jit(device=True)
def _mask_texel(mask, y, x):
    if y < 0 or x < 0 or y >= mask.shape[0] or x >= mask.shape[1]:
        return np.float32(0.0)
    return np.float32(mask[y, x])


@cuda.jit(device=True)
def _mask_bilinear(mask, fy, fx):
    y0 = int(math.floor(fy))
    x0 = int(math.floor(fx))
    wy = np.float32(fy - y0)
    wx = np.float32(fx - x0)
    top = _mask_texel(mask, y0, x0) * (np.float32(1.0) - wx) + _mask_texel(mask, y0, x0 + 1) * wx
    bottom = _mask_texel(mask, y0 + 1, x0) * (np.float32(1.0) - wx) + _mask_texel(mask, y0 + 1, x0 + 1) * wx
    return top * (np.float32(1.0) - wy) + bottom * wy


@cuda.jit(device=True)
def _to_u8(value):
    """Round to nearest and saturate, like OpenCV's saturate_cast<uchar>."""
    v = int(math.floor(value + 0.5))
    if v < 0:
        return 0
    if v > 255:
        return 255
    return v


# --- kernels --------------------------------------------------------------------------
@cuda.jit
def _letterbox_kernel(frame, out, nh, nw, sy, sx, mean, scale, rgb, pad):
    x, y = cuda.grid(2)
    size = out.shape[2]
    if x >= size or y >= size:
        return
    if y >= nh or x >= nw:
        if not pad:
            return
        black = (np.float32(0.0) - mean) * scale
        for c in range(3):
            out[0, c, y, x] = black
        return
    # Half-pixel centres, clamped to the image (cv2.resize INTER_LINEAR).
    fy = (y + 0.5) * sy - 0.5
    fx = (x + 0.5) * sx - 0.5
    fy = min(max(fy, 0.0), frame.shape[0] - 1.0)
    fx = min(max(fx, 0.0), frame.shape[1] - 1.0)
    for c in range(3):
        src_c = 2 - c if rgb else c
        value = np.float32(_to_u8(_bilinear(frame, fy, fx, src_c)))
        out[0, c, y, x] = (value - mean) * scale


@cuda.jit
def _warp_crops_kernel(frame, inverses, boxes, out):
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    x0 = boxes[i, 0]
    y0 = boxes[i, 1]
    x1 = boxes[i, 2]
    y1 = boxes[i, 3]
    fx = inverses[i, 0, 0] * x + inverses[i, 0, 1] * y + inverses[i, 0, 2]
    fy = inverses[i, 1, 0] * x + inverses[i, 1, 1] * y + inverses[i, 1, 2]
    for c in range(3):
        if x1 <= x0 or y1 <= y0:
            out[i, y, x, c] = 0
            continue
        # Only the caller's box is read: samples outside it are 0, as in the CPU twin's
        # warp of the box alone.
        py = int(math.floor(fy))
        px = int(math.floor(fx))
        wy = np.float32(fy - py)
        wx = np.float32(fx - px)
        acc = np.float32(0.0)
        for dy in range(2):
            for dx in range(2):
                yy = py + dy
                xx = px + dx
                if yy >= y0 and yy < y1 and xx >= x0 and xx < x1:
                    w = (wy if dy else np.float32(1.0) - wy) * (wx if dx else np.float32(1.0) - wx)
                    acc += w * np.float32(frame[yy, xx, c])
        out[i, y, x, c] = _to_u8(acc)


@cuda.jit
def _crops_to_tensor_kernel(crops, out, s0, s1, s2, b0, b1, b2, rgb):
    x, y, i = cuda.grid(3)
    if i >= crops.shape[0] or y >= crops.shape[1] or x >= crops.shape[2]:
        return
    out[i, 0, y, x] = np.float32(crops[i, y, x, 2 if rgb else 0]) * s0 + b0
    out[i, 1, y, x] = np.float32(crops[i, y, x, 1]) * s1 + b1
    out[i, 2, y, x] = np.float32(crops[i, y, x, 0 if rgb else 2]) * s2 + b2


@cuda.jit(device=True)
def _output_pixel(tensor, i, c, y, x, scale, offset, rgb):
    """Channel c (BGR) of a model output's pixel, clip(x · scale + offset) in [0, 255]."""
    v = np.float32(tensor[i, 2 - c if rgb else c, y, x]) * scale + offset
    return min(max(v, np.float32(0.0)), np.float32(255.0))


@cuda.jit
def _tensor_to_crops_kernel(tensor, out, scale, offset, rgb):
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    for c in range(3):
        out[i, y, x, c] = int(_output_pixel(tensor, i, c, y, x, scale, offset, rgb))  # towards zero, as numpy


@cuda.jit
def _tensor_blend_crops_kernel(tensor, crops, out, scale, offset, weight, rgb):
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    for c in range(3):
        v = _output_pixel(tensor, i, c, y, x, scale, offset, rgb)
        m = weight * v + (np.float32(1.0) - weight) * np.float32(crops[i, y, x, c]) + np.float32(0.5)
        out[i, y, x, c] = int(min(max(m, np.float32(0.0)), np.float32(255.0)))


@cuda.jit
def _paste_kernel(frame, crop, mask, m00, m01, m02, m10, m11, m12, x0, y0, x1, y1):
    i, j = cuda.grid(2)
    x = x0 + i
    y = y0 + j
    if x >= x1 or y >= y1:
        return
    cx = m00 * x + m01 * y + m02
    cy = m10 * x + m11 * y + m12
    w = _mask_bilinear(mask, cy, cx)
    inv = np.float32(1.0) - w
    for c in range(3):
        generated = np.float32(_to_u8(_bilinear(crop, cy, cx, c)))
        original = np.float32(frame[y, x, c])
        # cv2.blendLinear: (a·w + b·(1 − w)) / (w + (1 − w) + 1e-5)
        frame[y, x, c] = _to_u8((generated * w + original * inv) / (w + inv + np.float32(1e-5)))


# --- host functions (the CPU twins' signatures + stream) ---------------------------------
def letterbox(
    frame: Any,
    out: Any,
    mean: float,
    scale: float,
    rgb: bool,
    resized: Any = None,
    pad: bool = True,
    *,
    stream: Any = None,
) -> float:
    """Device twin of `cpu.letterbox` (`resized` is unused: the kernel samples the frame)."""
    h, w = frame.shape[:2]
    size = out.shape[2]
    nh, nw = letterbox_geometry(h, w, size)
    s = as_stream(stream)
    with _host.launch:
        _letterbox_kernel[_grid((size, size), _BLOCK_2D), _BLOCK_2D, s](
            as_device(frame),
            as_device(out),
            nh,
            nw,
            h / nh,
            w / nw,
            np.float32(mean),
            np.float32(scale),
            bool(rgb),
            bool(pad),
        )
    return nh / h


class CropParams:
    """Per-face warp parameters on the device, sized once for `max_faces` (no allocation
    per frame): pinned host staging, copied to the device on the stage's stream."""

    def __init__(self, max_faces: int) -> None:
        self.max_faces = max_faces
        self.host_inverses = _host.cuda.pinned_array((max_faces, 2, 3), dtype=np.float64)
        self.host_boxes = _host.cuda.pinned_array((max_faces, 4), dtype=np.int32)
        self.inverses = _host.cuda.device_array((max_faces, 2, 3), dtype=np.float64)
        self.boxes = _host.cuda.device_array((max_faces, 4), dtype=np.int32)

    def upload(self, inverses: Sequence[np.ndarray], boxes: Sequence[Box], stream: Any) -> int:
        n = len(boxes)
        if n > self.max_faces:
            raise ValueError(f"{n} faces in one call; the device buffers hold {self.max_faces}")
        for i in range(n):
            self.host_inverses[i] = inverses[i]
            self.host_boxes[i] = boxes[i]
        self.inverses[:n].copy_to_device(self.host_inverses[:n], stream=stream)
        self.boxes[:n].copy_to_device(self.host_boxes[:n], stream=stream)
        return n


def warp_crops(
    frame: Any,
    inverses: Sequence[np.ndarray],
    boxes: Sequence[Box],
    out: Any,
    *,
    stream: Any = None,
    params: CropParams | None = None,
) -> None:
    """Device twin of `cpu.warp_crops`: one launch for all faces into `out` (N, S, S, 3).
    `params` holds the per-face matrices on the device (made once per stage)."""
    n = len(boxes)
    if n == 0:
        return
    s = as_stream(stream)
    if params is None:
        params = CropParams(n)
    params.upload(inverses, boxes, s)
    shape = (out.shape[2], out.shape[1], n)
    with _host.launch:
        _warp_crops_kernel[_grid(shape, _BLOCK_3D), _BLOCK_3D, s](
            as_device(frame), params.inverses, params.boxes, as_device(out)
        )


def crops_to_tensor(
    crops: Any, out: Any, scale: np.ndarray, bias: np.ndarray, rgb: bool, *, stream: Any = None
) -> None:
    """Device twin of `cpu.crops_to_tensor`."""
    n = crops.shape[0]
    if n == 0:
        return
    sc = np.asarray(scale, np.float32).reshape(3)
    bi = np.asarray(bias, np.float32).reshape(3)
    shape = (crops.shape[2], crops.shape[1], n)
    with _host.launch:
        _crops_to_tensor_kernel[_grid(shape, _BLOCK_3D), _BLOCK_3D, as_stream(stream)](
            as_device(crops), as_device(out), sc[0], sc[1], sc[2], bi[0], bi[1], bi[2], bool(rgb)
        )


def tensor_to_crops(tensor: Any, out: Any, scale: float, offset: float, rgb: bool, *, stream: Any = None) -> None:
    """Device twin of `cpu.tensor_to_crops`."""
    n = out.shape[0]
    if n == 0:
        return
    s = as_stream(stream)
    shape = (out.shape[2], out.shape[1], n)
    with _host.launch:
        _tensor_to_crops_kernel[_grid(shape, _BLOCK_3D), _BLOCK_3D, s](
            as_device(tensor), as_device(out), np.float32(255.0 * scale), np.float32(255.0 * offset), bool(rgb)
        )


def tensor_blend_crops(
    tensor: Any, crops: Any, out: Any, scale: float, offset: float, weight: float, rgb: bool, *, stream: Any = None
) -> None:
    """Device twin of `cpu.tensor_blend_crops` (each pixel reads its crop before writing
    it, so `out` may be `crops`)."""
    n = out.shape[0]
    if n == 0:
        return
    shape = (out.shape[2], out.shape[1], n)
    with _host.launch:
        _tensor_blend_crops_kernel[_grid(shape, _BLOCK_3D), _BLOCK_3D, as_stream(stream)](
            as_device(tensor),
            as_device(crops),
            as_device(out),
            np.float32(255.0 * scale),
            np.float32(255.0 * offset),
            np.float32(weight),
            bool(rgb),
        )


def paste(frame: Any, crop: Any, mask: Any, matrix: np.ndarray, box: Box, *, stream: Any = None) -> None:
    """Device twin of `cpu.paste`: one launch over the box, in place in the device frame."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    m = np.asarray(matrix, dtype=np.float64).reshape(2, 3)
    shape = (x1 - x0, y1 - y0)
    with _host.launch:
        _paste_kernel[_grid(shape, _BLOCK_2D), _BLOCK_2D, as_stream(stream)](
            as_device(frame),
            as_device(crop),
            as_device(mask),
            m[0, 0],
            m[0, 1],
            m[0, 2],
            m[1, 0],
            m[1, 1],
            m[1, 2],
            x0,
            y0,
            x1,
            y1,
        )


# --- colour transfer in LAB ----------------------------------------------------------
# OpenCV's 8-bit BGR → LAB, as integer arithmetic over two tables: sRGB gamma to 11-bit
# linear values, and the LAB f(t) (cube root, linear near 0) in 15-bit fixed point.
_GAMMA_SHIFT = 3
_LAB_SHIFT = 12
_LAB_SHIFT2 = _LAB_SHIFT + _GAMMA_SHIFT
_XYZ = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]])
_WHITE = np.array([0.950456, 1.0, 1.088754])  # D65


def _lab_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    level = np.arange(256, dtype=np.float32) / np.float32(255.0)
    linear = np.where(level <= 0.04045, level / np.float32(12.92), ((level + 0.055) / np.float32(1.055)) ** 2.4)
    gamma = np.round(np.float32(255 << _GAMMA_SHIFT) * linear.astype(np.float32))
    size = 255 * 3 // 2 << _GAMMA_SHIFT
    t = (np.arange(size, dtype=np.float32) / np.float32(255 << _GAMMA_SHIFT)).astype(np.float32)
    f = np.where(t < np.float32(0.008856), t * np.float32(7.787) + np.float32(16 / 116), np.cbrt(t))
    cbrt = np.round(np.float32(1 << _LAB_SHIFT2) * f.astype(np.float32))
    coeffs = np.round((1 << _LAB_SHIFT) * _XYZ / _WHITE[:, None])
    return (
        np.clip(gamma, 0, 65535).astype(np.int32),
        np.clip(cbrt, 0, 65535).astype(np.int32),
        coeffs.astype(np.int64),
    )


_GAMMA_TAB, _CBRT_TAB, _LAB_COEFFS = _lab_tables()
_C00, _C01, _C02 = (int(v) for v in _LAB_COEFFS[0])
_C10, _C11, _C12 = (int(v) for v in _LAB_COEFFS[1])
_C20, _C21, _C22 = (int(v) for v in _LAB_COEFFS[2])
_L_SCALE = (116 * 255 + 50) // 100
_L_SHIFT = -((16 * 255 * (1 << _LAB_SHIFT2) + 50) // 100)
_AB_BIAS = 128 << _LAB_SHIFT2
_HALF = 1 << (_LAB_SHIFT - 1)
_HALF2 = 1 << (_LAB_SHIFT2 - 1)
# One block per face reduces its crop (a power of two; fewer threads under the simulator,
# where each one is a Python thread).
_STATS_THREADS = 32 if SIMULATED else 256
_STATS = 13  # count, sum and sum of squares of L, a, b for the crop and the reference


@cuda.jit(device=True)
def _clip_u8(v):
    if v < 0:
        return 0
    if v > 255:
        return 255
    return v


@cuda.jit(device=True)
def _bgr_to_lab(b, g, r, gamma, cbrt):
    """OpenCV's 8-bit BGR → LAB (L·255/100, a + 128, b + 128) of one pixel, as ints."""
    rr = gamma[r]
    gg = gamma[g]
    bb = gamma[b]
    x = (rr * _C00 + gg * _C01 + bb * _C02 + _HALF) >> _LAB_SHIFT
    y = (rr * _C10 + gg * _C11 + bb * _C12 + _HALF) >> _LAB_SHIFT
    z = (rr * _C20 + gg * _C21 + bb * _C22 + _HALF) >> _LAB_SHIFT
    fx = cbrt[x]
    fy = cbrt[y]
    fz = cbrt[z]
    lum = (_L_SCALE * fy + _L_SHIFT + _HALF2) >> _LAB_SHIFT2
    a = (500 * (fx - fy) + _AB_BIAS + _HALF2) >> _LAB_SHIFT2
    bv = (200 * (fy - fz) + _AB_BIAS + _HALF2) >> _LAB_SHIFT2
    return _clip_u8(lum), _clip_u8(a), _clip_u8(bv)


@cuda.jit(device=True)
def _lab_f_inverse(t):
    if t > np.float32(6.0 / 29.0):
        return t * t * t
    return (t - np.float32(16.0 / 116.0)) / np.float32(7.787)


@cuda.jit(device=True)
def _srgb(c):
    """Linear → sRGB gamma, 0..255 float."""
    c = min(max(c, np.float32(0.0)), np.float32(1.0))
    if c <= np.float32(0.0031308):
        return np.float32(12.92) * c * np.float32(255.0)
    return (np.float32(1.055) * math.pow(c, np.float32(1.0 / 2.4)) - np.float32(0.055)) * np.float32(255.0)


@cuda.jit(device=True)
def _lab_to_bgr(lum8, a8, b8):
    """8-bit LAB → BGR 0..255 floats (float32 math, D65, sRGB gamma)."""
    lum = np.float32(lum8) * np.float32(100.0 / 255.0)
    a = np.float32(a8) - np.float32(128.0)
    b = np.float32(b8) - np.float32(128.0)
    fy = (lum + np.float32(16.0)) / np.float32(116.0)
    if lum > np.float32(8.0):
        y = fy * fy * fy
    else:
        y = lum / np.float32(903.3)
        fy = np.float32(7.787) * y + np.float32(16.0 / 116.0)
    x = _lab_f_inverse(a / np.float32(500.0) + fy) * np.float32(0.950456)
    z = _lab_f_inverse(fy - b / np.float32(200.0)) * np.float32(1.088754)
    red = np.float32(3.240479) * x - np.float32(1.53715) * y - np.float32(0.498535) * z
    green = np.float32(-0.969256) * x + np.float32(1.875991) * y + np.float32(0.041556) * z
    blue = np.float32(0.055648) * x - np.float32(0.204043) * y + np.float32(1.057311) * z
    return _srgb(blue), _srgb(green), _srgb(red)


@cuda.jit
def _lab_stats_kernel(crops, references, weights, coeffs, gamma, cbrt):
    """One block per face: counts, sums and sums of squares (int64, exact) of the LAB
    values of crop and reference where the weight is > 0.5, reduced in shared memory;
    thread 0 turns them into the face's transfer coefficients."""
    i = cuda.blockIdx.x
    t = cuda.threadIdx.x
    acc = cuda.shared.array((_STATS, _STATS_THREADS), dtype=np.int64)
    own = cuda.local.array(_STATS, dtype=np.int64)
    for k in range(_STATS):
        own[k] = 0
    h = crops.shape[1]
    w = crops.shape[2]
    wi = min(i, weights.shape[0] - 1)
    for p in range(t, h * w, _STATS_THREADS):
        y = p // w
        x = p - y * w
        if weights[wi, y, x] > np.float32(0.5):
            own[0] += 1
            lum, a, b = _bgr_to_lab(crops[i, y, x, 0], crops[i, y, x, 1], crops[i, y, x, 2], gamma, cbrt)
            own[1] += lum
            own[2] += a
            own[3] += b
            own[4] += lum * lum
            own[5] += a * a
            own[6] += b * b
            lum, a, b = _bgr_to_lab(references[i, y, x, 0], references[i, y, x, 1], references[i, y, x, 2], gamma, cbrt)
            own[7] += lum
            own[8] += a
            own[9] += b
            own[10] += lum * lum
            own[11] += a * a
            own[12] += b * b
    for k in range(_STATS):
        acc[k, t] = own[k]
    cuda.syncthreads()
    step = _STATS_THREADS // 2
    while step > 0:
        if t < step:
            for k in range(_STATS):
                acc[k, t] += acc[k, t + step]
        cuda.syncthreads()
        step //= 2
    if t != 0:
        return
    n = acc[0, 0]
    if n < 16:  # too few pixels to measure: the crop stays as it is
        coeffs[i, 0] = 0.0
        return
    coeffs[i, 0] = 1.0
    for c in range(3):
        s_mean = acc[1 + c, 0] / n
        s_std = np.float32(math.sqrt(max(acc[4 + c, 0] / n - s_mean * s_mean, 0.0))) + np.float32(1e-3)
        r_mean = acc[7 + c, 0] / n
        r_std = np.float32(math.sqrt(max(acc[10 + c, 0] / n - r_mean * r_mean, 0.0))) + np.float32(1e-3)
        coeffs[i, 1 + c] = s_mean
        coeffs[i, 4 + c] = r_std / s_std
        coeffs[i, 7 + c] = r_mean


@cuda.jit(device=True)
def _transfer(value, s_mean, ratio, r_mean):
    v = (np.float32(value) - s_mean) * ratio + r_mean
    v = min(max(v, np.float32(0.0)), np.float32(255.0))
    return int(v)  # towards zero, as numpy's cast


@cuda.jit
def _lab_apply_kernel(crops, coeffs, out, gamma, cbrt):
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    if coeffs[i, 0] == 0.0:
        for c in range(3):
            out[i, y, x, c] = crops[i, y, x, c]
        return
    lum, a, b = _bgr_to_lab(crops[i, y, x, 0], crops[i, y, x, 1], crops[i, y, x, 2], gamma, cbrt)
    lum = _transfer(lum, coeffs[i, 1], coeffs[i, 4], coeffs[i, 7])
    a = _transfer(a, coeffs[i, 2], coeffs[i, 5], coeffs[i, 8])
    b = _transfer(b, coeffs[i, 3], coeffs[i, 6], coeffs[i, 9])
    blue, green, red = _lab_to_bgr(lum, a, b)
    out[i, y, x, 0] = _to_u8(blue)
    out[i, y, x, 1] = _to_u8(green)
    out[i, y, x, 2] = _to_u8(red)


class LabStats:
    """Per-face transfer coefficients on the device (flag, source means, std ratios,
    reference means), sized once for `max_faces`, and the LAB tables. The tables live in
    global memory (13 KB, cached): each thread of a warp looks up a different entry, which
    constant memory would serialise."""

    def __init__(self, max_faces: int) -> None:
        self.max_faces = max_faces
        self.coeffs = _host.cuda.device_array((max_faces, 10), dtype=np.float32)
        self.gamma = _host.cuda.to_device(_GAMMA_TAB)  # once, at load
        self.cbrt = _host.cuda.to_device(_CBRT_TAB)


def _batch_of_masks(weights: Any) -> Any:
    """(N, S, S) device masks; an (S, S) mask shared by all faces becomes (1, S, S)."""
    device = as_device(weights)
    if len(device.shape) == 3:
        return device
    return device.reshape((1, *device.shape))


def transfer_color_lab(
    crops: Any, references: Any, weights: Any, out: Any, *, stream: Any = None, stats: LabStats | None = None
) -> None:
    """Device twin of `cpu.transfer_color_lab`: one reduction launch (a block per face) and
    one per-pixel launch for all faces; `out` may be `crops`. `stats` holds the per-face
    coefficients (made once per stage)."""
    n = crops.shape[0]
    if n == 0:
        return
    if stats is None:
        stats = LabStats(n)
    if n > stats.max_faces:
        raise ValueError(f"{n} faces in one call; the device buffers hold {stats.max_faces}")
    s = as_stream(stream)
    device_crops = as_device(crops)
    shape = (crops.shape[2], crops.shape[1], n)
    with _host.launch:
        _lab_stats_kernel[n, _STATS_THREADS, s](
            device_crops, as_device(references), _batch_of_masks(weights), stats.coeffs, stats.gamma, stats.cbrt
        )
    with _host.launch:
        _lab_apply_kernel[_grid(shape, _BLOCK_3D), _BLOCK_3D, s](
            device_crops, stats.coeffs, as_device(out), stats.gamma, stats.cbrt
        )


# --- the mouth mask ------------------------------------------------------------------------
MAX_POLYGON_VERTICES = 64  # FaceMesh's inner lips have 20, the key-point ellipse 21


def gaussian_taps(sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel for a float image blurred with `sigma` and ksize (0, 0):
    ksize = round(8·sigma + 1) | 1."""
    ksize = int(round(sigma * 8 + 1)) | 1
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) * 0.5
    taps = np.exp(-0.5 / (sigma * sigma) * x * x)
    return (taps / taps.sum()).astype(np.float32)


class MouthParams:
    """Per-face mouth polygons (whole-pixel vertices) and the Gaussian taps on the device,
    sized once for `max_faces`: pinned host staging, copied on the stage's stream."""

    def __init__(self, max_faces: int, sigma: float, max_vertices: int = MAX_POLYGON_VERTICES) -> None:
        self.max_faces = max_faces
        self.max_vertices = max_vertices
        self.sigma = sigma
        self.host_vertices = _host.cuda.pinned_array((max_faces, max_vertices, 2), dtype=np.int32)
        self.host_counts = _host.cuda.pinned_array((max_faces,), dtype=np.int32)
        self.vertices = _host.cuda.device_array((max_faces, max_vertices, 2), dtype=np.int32)
        self.counts = _host.cuda.device_array((max_faces,), dtype=np.int32)
        self.taps = _host.cuda.to_device(gaussian_taps(sigma))  # once, at load

    def upload(self, polygons: Sequence[np.ndarray | None], stream: Any) -> int:
        n = len(polygons)
        if n > self.max_faces:
            raise ValueError(f"{n} faces in one call; the device buffers hold {self.max_faces}")
        for i, polygon in enumerate(polygons):
            count = 0
            if polygon is not None:
                count = len(polygon)
                if count > self.max_vertices:
                    raise ValueError(f"a polygon of {count} vertices; the device buffers hold {self.max_vertices}")
                # Whole pixels, as cv2.fillPoly takes them; bounded so the fill's integer
                # edge tests cannot overflow for a polygon absurdly far off the crop.
                self.host_vertices[i, :count] = np.clip(np.round(polygon), -(1 << 20), 1 << 20)
            self.host_counts[i] = count
        self.vertices[:n].copy_to_device(self.host_vertices[:n], stream=stream)
        self.counts[:n].copy_to_device(self.host_counts[:n], stream=stream)
        return n


@cuda.jit(device=True)
def _on_edge(px, py, x0, y0, x1, y1):
    """Whether pixel (px, py) is on the 8-connected line from (x0, y0) to (x1, y1): along
    the major axis, the minor coordinate rounded (x-major: ties to the larger y, y-major:
    to the smaller x, which matches cv2.fillPoly's outline best). Integer arithmetic."""
    dx = x1 - x0
    dy = y1 - y0
    if dx == 0 and dy == 0:
        return px == x0 and py == y0
    if abs(dx) >= abs(dy):
        if px < min(x0, x1) or px > max(x0, x1):
            return False
        adx = abs(dx)
        num = 2 * (y0 * dx + (px - x0) * dy) * (1 if dx > 0 else -1)  # 2·y(px)·|dx|
        return 2 * py * adx - adx <= num and num < 2 * py * adx + adx
    if py < min(y0, y1) or py > max(y0, y1):
        return False
    ady = abs(dy)
    num = 2 * (x0 * dy + (py - y0) * dx) * (1 if dy > 0 else -1)  # 2·x(py)·|dy|
    return 2 * px * ady - ady < num and num <= 2 * px * ady + ady


@cuda.jit
def _fill_polygons_kernel(vertices, counts, out):
    """1 where the pixel centre is inside polygon i (even-odd rule) or on its outline
    (cv2.fillPoly draws the outline too), else 0."""
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    n = counts[i]
    inside = False
    near = False
    j = n - 1
    for k in range(n):
        x0 = np.int64(vertices[i, j, 0])  # products of coordinates need 64 bits
        y0 = np.int64(vertices[i, j, 1])
        x1 = np.int64(vertices[i, k, 0])
        y1 = np.int64(vertices[i, k, 1])
        if (y0 > y) != (y1 > y):
            # x < the edge's x at row y, in integers: (x − x0)·(y1 − y0) < (y − y0)·(x1 − x0)
            left = (x - x0) * (y1 - y0)
            right = (y - y0) * (x1 - x0)
            if (left < right) if y1 > y0 else (left > right):
                inside = not inside
        if not near and _on_edge(x, y, x0, y0, x1, y1):
            near = True
        j = k
    out[i, y, x] = np.float32(1.0) if inside or near else np.float32(0.0)


@cuda.jit(device=True)
def _reflect101(index, size):
    """cv2.BORDER_REFLECT_101 (the GaussianBlur default): gfedcb|abcdefgh|gfedcba."""
    if size == 1:
        return 0
    while index < 0 or index >= size:
        if index < 0:
            index = -index
        if index >= size:
            index = 2 * size - 2 - index
    return index


@cuda.jit
def _blur_rows_kernel(masks, out, taps):
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    radius = taps.shape[0] // 2
    acc = np.float32(0.0)
    for k in range(taps.shape[0]):
        acc += taps[k] * masks[i, y, _reflect101(x + k - radius, masks.shape[2])]
    out[i, y, x] = acc


@cuda.jit
def _blur_cols_kernel(masks, base, out, taps, cut):
    """The vertical pass; with `cut`, writes base · (1 − blurred) (the paste mask without
    the mouth) instead of the blurred value."""
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    radius = taps.shape[0] // 2
    acc = np.float32(0.0)
    for k in range(taps.shape[0]):
        acc += taps[k] * masks[i, _reflect101(y + k - radius, masks.shape[1]), x]
    if cut:
        out[i, y, x] = base[min(i, base.shape[0] - 1), y, x] * (np.float32(1.0) - acc)
    else:
        out[i, y, x] = acc


def fill_polygons(
    polygons: Sequence[np.ndarray | None], out: Any, *, stream: Any = None, params: MouthParams | None = None
) -> None:
    """Device twin of `cpu.fill_polygons`: one launch for all faces."""
    n = len(polygons)
    if n == 0:
        return
    _fill(polygons, as_device(out), as_stream(stream), params or MouthParams(n, 1.0))


def _fill(polygons: Sequence[np.ndarray | None], out: Any, s: Any, params: MouthParams) -> None:
    n = params.upload(polygons, s)
    shape = (out.shape[2], out.shape[1], n)
    with _host.launch:
        _fill_polygons_kernel[_grid(shape, _BLOCK_3D), _BLOCK_3D, s](params.vertices, params.counts, out)


def _blur(masks: Any, base: Any, out: Any, scratch: Any, taps: Any, s: Any, cut: bool) -> None:
    n = masks.shape[0]
    shape = (masks.shape[2], masks.shape[1], n)
    grid = _grid(shape, _BLOCK_3D)
    device_scratch = as_device(scratch)
    with _host.launch:
        _blur_rows_kernel[grid, _BLOCK_3D, s](as_device(masks), device_scratch, taps)
    with _host.launch:
        _blur_cols_kernel[grid, _BLOCK_3D, s](device_scratch, base, as_device(out), taps, cut)


def blur_masks(
    masks: Any, out: Any, sigma: float, scratch: Any = None, *, stream: Any = None, params: MouthParams | None = None
) -> None:
    """Device twin of `cpu.blur_masks`: a row pass into `scratch` ((N, S, S) float32) and a
    column pass into `out`; `params` holds the taps for `sigma` on the device."""
    if masks.shape[0] == 0:
        return
    s = as_stream(stream)
    taps = params.taps if params is not None and params.sigma == sigma else _host.cuda.to_device(gaussian_taps(sigma))
    if scratch is None:
        scratch = _host.cuda.device_array(masks.shape, dtype=np.float32)
    device_out = as_device(out)
    _blur(masks, device_out, device_out, scratch, taps, s, False)


def mouth_masks(
    base: Any,
    polygons: Sequence[np.ndarray | None],
    out: Any,
    sigma: float,
    scratch: Any,
    *,
    stream: Any = None,
    params: MouthParams | None = None,
) -> None:
    """Device twin of `cpu.mouth_masks`: fill, blur rows, blur columns and cut the blurred
    mouth out of `base` (S, S) into `out` (N, S, S): three launches for all faces."""
    n = len(polygons)
    if n == 0:
        return
    if params is None or params.sigma != sigma:
        params = MouthParams(n, sigma)
    s = as_stream(stream)
    device_out = as_device(out)
    _fill(polygons, device_out, s, params)
    _blur(device_out, _batch_of_masks(base), device_out, scratch, params.taps, s, True)


# --- compile ahead ---------------------------------------------------------------------------
def warm_up(cuda: Any, stream: Any) -> None:
    """Compile every kernel before the first frame: each op once on tiny arrays allocated
    like the stages' own (`cuda`'s device buffers viewed as `DeviceArray`s), on `stream`.
    Numba compiles a kernel on its first launch; on a live stream that would stall the
    first frames for seconds (more on a Jetson). Waits for the launches; frees what it made."""
    f32, u8 = np.float32, np.uint8
    buffers: list[Any] = []

    def array(shape: tuple[int, ...], dtype: Any) -> Any:
        buffer = cuda.device_buffer(int(np.prod(shape)) * np.dtype(dtype).itemsize)
        buffers.append(buffer)
        return buffer.array(shape, dtype)

    frame, crops, tensor = array((8, 8, 3), u8), array((1, 4, 4, 3), u8), array((1, 3, 4, 4), f32)
    mask, masks, scratch = array((4, 4), f32), array((1, 4, 4), f32), array((1, 4, 4), f32)
    letterbox(frame, array((1, 3, 8, 8), f32), 127.5, 1 / 128, True, stream=stream)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    warp_crops(frame, [identity], [(0, 0, 4, 4)], crops, stream=stream, params=CropParams(1))
    crops_to_tensor(crops, tensor, np.ones(3, f32), np.zeros(3, f32), True, stream=stream)
    tensor_to_crops(tensor, crops, 0.5, 0.5, True, stream=stream)
    tensor_blend_crops(tensor, crops, crops, 0.5, 0.5, 0.8, True, stream=stream)
    square = np.array([[1, 1], [3, 1], [3, 3], [1, 3]], np.float32)
    mouth = MouthParams(1, 1.0)
    mouth_masks(mask, [square], masks, 1.0, scratch, stream=stream, params=mouth)
    transfer_color_lab(crops, crops, mask, crops, stream=stream, stats=LabStats(1))
    transfer_color_lab(crops, crops, masks, crops, stream=stream, stats=LabStats(1))
    paste(frame, crops[0], mask, identity, (0, 0, 4, 4), stream=stream)
    paste(frame, crops[0], masks[0], identity, (0, 0, 4, 4), stream=stream)
    as_stream(stream).synchronize()
    for buffer in buffers:
        buffer.free()
