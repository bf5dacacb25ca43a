"""CUDA plumbing with cuda-python: streams, events, pinned host and device buffers, async copies.

Every cuda-python call returns `(err, *results)`; `_call` checks each one and raises
`CudaError` naming the call. Without cuda-python, a driver or a device, `open_cuda()` raises
`BackendUnavailable` saying which piece is missing, so callers can fall back.

One `GpuContext` per process (built once, where the pipeline is built) owns the device:
every pipeline stage that runs GPU work gets a NAMED non-blocking stream from it ("detect",
"swap") and passes that stream explicitly to every engine run, copy and kernel; each stage
thread calls `bind_thread()` first, so its work lands on the configured device, not on
device 0. Work is ordered between stages on the GPU (`Stream.wait(event)`), and the host
waits on an event only when it needs a result (never `cudaDeviceSynchronize` in the frame
path). Buffers are allocated when a model or the pipeline loads, at their maximum size:
`allocations` counts every cudaMalloc/cudaHostAlloc, so tests can prove that none happens
after the first frame.
"""

from __future__ import annotations

import logging
import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from streamswap.errors import BackendUnavailable, DeviceError
from streamswap.logs import kv

log = logging.getLogger(__name__)

# cudaErrorInsufficientDriver / cudaErrorNoDevice: what a machine without a (new enough)
# NVIDIA driver or without a GPU answers to the first runtime call.
ERR_INSUFFICIENT_DRIVER = 35
ERR_NO_DEVICE = 100
ERR_NOT_READY = 600


class CudaError(DeviceError):
    """A CUDA runtime call failed (out of memory, a bad launch, a lost device)."""


def import_cudart() -> Any:
    """The cuda-python runtime module, or BackendUnavailable saying how to install it."""
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 / 13.x
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 12.0-12.5
        except ImportError:
            from streamswap.install import install_extra

            raise BackendUnavailable(
                f"cuda-python is not installed; install it with {install_extra('tensorrt')} "
                "(or pip install cuda-python), or set inference.backend: ort"
            ) from None
    return cudart


def _err_name(err: Any) -> str:
    return getattr(err, "name", None) or f"cudaError {int(err)}"


def _call(cudart: Any, fn: str, *args: Any) -> Any:
    """Call `cudart.<fn>(*args)`, check its error, return its result (None, one value or a tuple)."""
    result = getattr(cudart, fn)(*args)
    if not isinstance(result, tuple):
        result = (result,)
    err, rest = result[0], result[1:]
    if int(err) != 0:
        raise CudaError(f"CUDA call {fn} failed: {_err_name(err)} ({int(err)})")
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else rest


def _free_unreferenced(cudart: Any, fn: str, ptr: int) -> None:
    """Free memory whose Python owner was garbage-collected (never raises: runs in a finalizer)."""
    try:
        _call(cudart, fn, ptr)
    except Exception as exc:
        log.warning("CUDA memory not freed", extra=kv(call=fn, reason=str(exc)))


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU engines are built for: its name and compute capability ("8.7")."""

    index: int
    name: str
    compute_capability: str


class Cuda:
    """One CUDA device through cuda-python. Create with `open_cuda()`; no global state."""

    def __init__(self, cudart: Any, device: int = 0) -> None:
        self.rt = cudart
        self.device = device
        self.allocations = 0  # cudaMalloc + cudaHostAlloc calls so far (tests: none after warm-up)
        _call(cudart, "cudaSetDevice", device)

    def bind_thread(self) -> None:
        """Make this device current on the calling thread (CUDA's current device is per thread)."""
        _call(self.rt, "cudaSetDevice", self.device)

    # -- device ---------------------------------------------------------------------------
    def info(self) -> DeviceInfo:
        prop = _call(self.rt, "cudaGetDeviceProperties", self.device)
        name = prop.name
        if isinstance(name, (bytes, bytearray)):
            name = bytes(name).split(b"\0", 1)[0].decode("utf-8", "replace")
        return DeviceInfo(self.device, str(name).strip(), f"{prop.major}.{prop.minor}")

    def synchronize(self) -> None:
        _call(self.rt, "cudaDeviceSynchronize")

    # -- objects --------------------------------------------------------------------------
    def stream(self) -> "Stream":
        """A non-blocking stream: it does not synchronise with the legacy default stream."""
        return Stream(self)

    def event(self, timing: bool = False) -> "Event":
        return Event(self, timing)

    def device_buffer(self, nbytes: int) -> "DeviceBuffer":
        return DeviceBuffer(self, nbytes)

    def pinned_buffer(self, nbytes: int, mapped: bool = False) -> "PinnedBuffer":
        """Page-locked host memory; `mapped` also maps it into the device's address space
        (zero-copy: on Jetson, where CPU and GPU share memory, kernels read it directly)."""
        return PinnedBuffer(self, nbytes, mapped)

    # -- copies ---------------------------------------------------------------------------
    # `stream` is a Stream or its integer handle (what TensorRT's execute_async_v3 takes).
    def copy_htod_async(self, dst: "DeviceBuffer | int", src: np.ndarray, stream: "Stream | int") -> None:
        """Host → device on `stream`; `src` should be pinned for a truly async copy."""
        if not src.flags.c_contiguous:
            raise ValueError("copy_htod_async needs a C-contiguous host array")
        _call(
            self.rt,
            "cudaMemcpyAsync",
            _ptr(dst),
            src.ctypes.data,
            src.nbytes,
            self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            _handle(stream),
        )

    def copy_dtoh_async(self, dst: np.ndarray, src: "DeviceBuffer | int", stream: "Stream | int") -> None:
        """Device → host on `stream`; `dst` must stay alive until the stream has passed it."""
        if not dst.flags.c_contiguous:
            raise ValueError("copy_dtoh_async needs a C-contiguous host array")
        _call(
            self.rt,
            "cudaMemcpyAsync",
            dst.ctypes.data,
            _ptr(src),
            dst.nbytes,
            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            _handle(stream),
        )

    def copy_dtod_async(
        self, dst: "DeviceBuffer | int", src: "DeviceBuffer | int", nbytes: int, stream: "Stream | int"
    ) -> None:
        _call(
            self.rt,
            "cudaMemcpyAsync",
            _ptr(dst),
            _ptr(src),
            nbytes,
            self.rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
            _handle(stream),
        )


def _ptr(buf: "DeviceBuffer | int") -> int:
    return buf if isinstance(buf, int) else buf.ptr


def _handle(stream: "Stream | int") -> int:
    return stream if isinstance(stream, int) else stream.handle


def open_cuda(device: int = 0) -> Cuda:
    """Open `device`, or BackendUnavailable naming what is missing (cuda-python, driver, GPU)."""
    cudart = import_cudart()
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception as exc:  # the driver library itself cannot be loaded
        raise BackendUnavailable(
            f"no NVIDIA driver: CUDA cannot start ({exc}); install the NVIDIA driver "
            "(JetPack on Jetson) or set inference.backend: ort"
        ) from None
    code = int(err)
    if code == ERR_INSUFFICIENT_DRIVER:
        raise BackendUnavailable(
            "no usable NVIDIA driver (cudaErrorInsufficientDriver): the driver is missing or "
            "older than this CUDA runtime; install/update the NVIDIA driver or set inference.backend: ort"
        )
    if code == ERR_NO_DEVICE or (code == 0 and count == 0):
        raise BackendUnavailable(
            "no CUDA-capable GPU found (cudaErrorNoDevice); check nvidia-smi, or set inference.backend: ort"
        )
    if code != 0:
        raise BackendUnavailable(f"CUDA cannot start: {_err_name(err)} ({code}); check the NVIDIA driver (nvidia-smi)")
    if device >= count:
        raise BackendUnavailable(f"CUDA device {device} does not exist (this machine has {count})")
    return Cuda(cudart, device)


class Stream:
    """A non-blocking CUDA stream; `handle` is the integer TensorRT's execute_async_v3 takes."""

    def __init__(self, cuda: Cuda) -> None:
        self._cuda = cuda
        self._stream = _call(cuda.rt, "cudaStreamCreateWithFlags", cuda.rt.cudaStreamNonBlocking)

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self) -> Any:
        return self._stream

    def wait(self, event: "Event") -> None:
        """Later work on this stream waits for `event` (GPU-side; the host does not block)."""
        _call(self._cuda.rt, "cudaStreamWaitEvent", self._stream, event.raw, 0)

    def synchronize(self) -> None:
        _call(self._cuda.rt, "cudaStreamSynchronize", self._stream)

    def close(self) -> None:
        if self._stream is not None:
            _call(self._cuda.rt, "cudaStreamDestroy", self._stream)
            self._stream = None


class Event:
    """A CUDA event: marks a point in a stream; timing events also measure elapsed time."""

    def __init__(self, cuda: Cuda, timing: bool = False) -> None:
        self._cuda = cuda
        flags = cuda.rt.cudaEventDefault if timing else cuda.rt.cudaEventDisableTiming
        self._event = _call(cuda.rt, "cudaEventCreateWithFlags", flags)

    @property
    def raw(self) -> Any:
        return self._event

    def record(self, stream: "Stream | int") -> None:
        _call(self._cuda.rt, "cudaEventRecord", self._event, _handle(stream))

    def synchronize(self) -> None:
        """Block the calling host thread until the event has happened."""
        _call(self._cuda.rt, "cudaEventSynchronize", self._event)

    def done(self) -> bool:
        """True when the event has happened (never blocks)."""
        (err,) = self._cuda.rt.cudaEventQuery(self._event)
        if int(err) == ERR_NOT_READY:
            return False
        if int(err) != 0:
            raise CudaError(f"CUDA call cudaEventQuery failed: {_err_name(err)} ({int(err)})")
        return True

    def elapsed_ms(self, since: "Event") -> float:
        """Milliseconds from `since` to this event (both timing events, both done)."""
        return float(_call(self._cuda.rt, "cudaEventElapsedTime", since.raw, self._event))

    def close(self) -> None:
        if self._event is not None:
            _call(self._cuda.rt, "cudaEventDestroy", self._event)
            self._event = None


class PendingRun:
    """An enqueued run: `event` fires when its outputs are on the host."""

    def __init__(self, event: Event, outputs: dict[str, np.ndarray], release: Callable[[], None]) -> None:
        self.event = event
        self._outputs = outputs
        self._release = release

    def done(self) -> bool:
        return self.event.done()

    def result(self) -> dict[str, np.ndarray]:
        """Wait for this run only (not the whole device) and return copies of its outputs."""
        try:
            self.event.synchronize()
            return {name: array.copy() for name, array in self._outputs.items()}
        finally:
            self._release()


class _Allocation:
    """`nbytes` of CUDA memory at `ptr`, freed by `free()` or, when forgotten, once it (and,
    for pinned memory, every array over it) is collected: a daemon that replaces pipelines
    does not leak device memory or page-locked RAM."""

    _FREE = ""  # the cudart call that frees this kind of memory

    def __init__(self, cuda: Cuda, nbytes: int, ptr: Any) -> None:
        self._cuda = cuda
        self.nbytes = int(nbytes)
        self.ptr = int(ptr)
        self._finalizer = weakref.finalize(self, _free_unreferenced, cuda.rt, self._FREE, self.ptr)
        self._finalizer.atexit = False

    def free(self) -> None:
        """Free now; for pinned memory, arrays over it must not be used afterwards."""
        if self.ptr:
            self._finalizer.detach()
            _call(self._cuda.rt, self._FREE, self.ptr)
            self.ptr = 0


class DeviceArray:
    """A typed, shaped view of device memory that Numba (and CuPy, PyTorch) can wrap
    without copying, through `__cuda_array_interface__` (C order)."""

    def __init__(self, ptr: int, shape: Sequence[int], dtype: Any, owner: Any = None) -> None:
        self.ptr = int(ptr)
        self.shape = tuple(int(d) for d in shape)
        self.dtype: np.dtype = np.dtype(dtype)
        self._owner = owner  # keeps the allocation alive while the view is used

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,
            "data": (self.ptr, False),
            "version": 3,
            "strides": None,
            "stream": None,
        }

    def __getitem__(self, index: int) -> "DeviceArray":
        """Item `index` along the first axis (e.g. one crop of a batch), no copy."""
        if not 0 <= index < self.shape[0]:
            raise IndexError(f"index {index} out of range for a device array of shape {self.shape}")
        inner = self.shape[1:]
        step = int(np.prod(inner, dtype=np.int64)) * self.dtype.itemsize
        return DeviceArray(self.ptr + index * step, inner, self.dtype, self._owner)

    def rows(self, start: int, count: int) -> "DeviceArray":
        """Items `start` … `start + count - 1` along the first axis, no copy."""
        if start < 0 or count < 0 or start + count > self.shape[0]:
            raise IndexError(f"rows {start}:{start + count} out of range for a device array of shape {self.shape}")
        step = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        return DeviceArray(self.ptr + start * step, (count, *self.shape[1:]), self.dtype, self._owner)

    def view(self, shape: Sequence[int]) -> "DeviceArray":
        """The leading part of this memory with another (not larger) shape, e.g. a batch of n."""
        out = DeviceArray(self.ptr, shape, self.dtype, self._owner)
        if out.nbytes > self.nbytes:
            raise ValueError(f"{tuple(shape)} does not fit a device array of shape {self.shape}")
        return out


class DeviceBuffer(_Allocation):
    """`nbytes` of device memory; `ptr` is the device address."""

    _FREE = "cudaFree"

    def __init__(self, cuda: Cuda, nbytes: int) -> None:
        cuda.allocations += 1
        super().__init__(cuda, nbytes, _call(cuda.rt, "cudaMalloc", max(int(nbytes), 1)))

    def array(self, shape: Sequence[int], dtype: Any) -> DeviceArray:
        """A device-array view of the buffer (for kernels and zero-copy frameworks)."""
        out = DeviceArray(self.ptr, shape, dtype, self)
        if out.nbytes > self.nbytes:
            raise ValueError(f"{tuple(shape)} {np.dtype(dtype)} does not fit a {self.nbytes}-byte device buffer")
        return out


class PinnedBuffer(_Allocation):
    """`nbytes` of page-locked host memory; `array()` views it as numpy without copying.
    A `mapped` buffer also has `device_ptr`, its address on the device (zero-copy)."""

    _FREE = "cudaFreeHost"

    def __init__(self, cuda: Cuda, nbytes: int, mapped: bool = False) -> None:
        cuda.allocations += 1
        flags = cuda.rt.cudaHostAllocMapped if mapped else cuda.rt.cudaHostAllocDefault
        super().__init__(cuda, nbytes, _call(cuda.rt, "cudaHostAlloc", max(int(nbytes), 1), flags))
        self.mapped = mapped
        self.device_ptr = int(_call(cuda.rt, "cudaHostGetDevicePointer", self.ptr, 0)) if mapped else 0

    def array(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A numpy view of the buffer; the view keeps the buffer alive."""
        dtype = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dtype.itemsize > self.nbytes:
            raise ValueError(f"{tuple(shape)} {dtype} does not fit a {self.nbytes}-byte pinned buffer")
        return np.asarray(_PinnedView(self, tuple(shape), dtype))


class _PinnedView:
    """numpy's array interface over a pinned buffer: the view becomes the array's base, so
    the array keeps the allocation alive."""

    def __init__(self, owner: PinnedBuffer, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.owner = owner
        self.__array_interface__ = {
            "version": 3,
            "shape": shape,
            "typestr": dtype.str,
            "data": (owner.ptr, False),  # writable
        }


class GpuContext:
    """The process's one CUDA device, opened once where the pipeline is built; the stages'
    named streams and the frame slots' pinned memory come from it. See the module doc."""

    def __init__(self, cuda: Cuda, mapped_slots: bool = False) -> None:
        self.cuda = cuda
        self.mapped_slots = mapped_slots
        self._streams: dict[str, Stream] = {}
        self._closed = False

    @classmethod
    def open(cls, device: int = 0, mapped_slots: bool = False) -> "GpuContext":
        """Open `device`, or BackendUnavailable naming what is missing."""
        return cls(open_cuda(device), mapped_slots)

    @property
    def device(self) -> int:
        return self.cuda.device

    def stream(self, name: str) -> Stream:
        """The named stage's non-blocking stream, created at build time (not per frame).
        Streams are created on the build thread; a stage thread calls `bind_thread` first."""
        if self._closed:
            raise CudaError("CUDA streams used after the GPU context was closed")
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = self.cuda.stream()
            log.debug("stage stream", extra=kv(stage=name, handle=stream.handle))
        return stream

    @property
    def stream_names(self) -> list[str]:
        return list(self._streams)

    def bind_thread(self) -> None:
        """Call at the start of every stage thread that touches the GPU."""
        self.cuda.bind_thread()

    def slot_allocator(self) -> "PinnedAllocator":
        return PinnedAllocator(self.cuda, mapped=self.mapped_slots)

    def close(self) -> None:
        self._closed = True
        streams, self._streams = list(self._streams.values()), {}
        for stream in streams:
            stream.close()


class PinnedAllocator:
    """The pipeline's slot allocator backed by pinned memory, so H2D/D2H copies are async.

    Arrays it hands out stay valid until `close()`; the pipeline allocates its slots once.
    Without `close()`, the memory is returned when the allocator and all its arrays are gone.
    """

    def __init__(self, cuda: Cuda, mapped: bool = False) -> None:
        self._cuda = cuda
        self.mapped = mapped
        self._buffers: list[PinnedBuffer] = []
        self._lock = threading.Lock()

    def bind_thread(self) -> None:
        """Make the device this memory belongs to current on the calling thread (each
        pipeline thread calls it first: CUDA's current device is per thread)."""
        self._cuda.bind_thread()

    def alloc(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        return self.alloc_buffer(shape, dtype).array(shape, dtype)

    def alloc_buffer(self, shape: Sequence[int], dtype: Any) -> PinnedBuffer:
        """The pinned buffer for one (shape, dtype) array (its `device_ptr` when mapped)."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buffer = PinnedBuffer(self._cuda, nbytes, self.mapped)
        with self._lock:
            self._buffers.append(buffer)
        log.debug("pinned slot", extra=kv(shape=tuple(shape), dtype=str(dtype), bytes=nbytes))
        return buffer

    @property
    def allocated_bytes(self) -> int:
        with self._lock:
            return sum(b.nbytes for b in self._buffers)

    def close(self) -> None:
        """Free every buffer; arrays handed out must not be used afterwards."""
        with self._lock:
            buffers, self._buffers = self._buffers, []
        for buffer in buffers:
            buffer.free()
