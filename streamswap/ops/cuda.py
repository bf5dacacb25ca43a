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
"""

from __future__ import annotations

import math
import threading
from contextlib import nullcontext
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
from numba import config as numba_config
from numba import cuda

from streamswap.ops.cpu import Box, letterbox_geometry

SIMULATED = bool(numba_config.ENABLE_CUDASIM)  # type: ignore[attr-defined]

# Host code reaches numba.cuda through this holder: while a kernel runs, the simulator
# swaps every module-level name bound to numba.cuda for its fake, which would break another
# stage thread's host calls at that moment (the real target never does this).
# The simulator is not thread-safe either (each kernel thread finds its block index through
# the calling Python thread), so there launches from two stage threads take turns.
_host = SimpleNamespace(cuda=cuda, launch=threading.Lock() if SIMULATED else nullcontext())

_BLOCK_2D = (16, 16)
_BLOCK_3D = (16, 8, 2)


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
    handle = getattr(stream, "handle", None)  # streamswap.inference.cuda.Stream
    if isinstance(handle, int):
        return _host.cuda.external_stream(handle)
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


@cuda.jit
def _tensor_to_crops_kernel(tensor, out, scale, offset, rgb):
    x, y, i = cuda.grid(3)
    if i >= out.shape[0] or y >= out.shape[1] or x >= out.shape[2]:
        return
    for c in range(3):
        src_c = 2 - c if rgb else c
        v = np.float32(tensor[i, src_c, y, x]) * scale + offset
        v = min(max(v, np.float32(0.0)), np.float32(255.0))
        out[i, y, x, c] = int(v)  # towards zero, as numpy's cast


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
