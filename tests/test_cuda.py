"""cuda-python plumbing: clear errors when cuda-python / a driver / a GPU is missing,
error checking on every call, the pinned allocator; `gpu`-marked tests run the real thing."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest
from conftest import cuda_available, require
from test_trt_fake import FakeCudart

from streamswap.errors import BackendUnavailable
from streamswap.inference import cuda as cuda_mod
from streamswap.inference.cuda import Cuda, CudaError, GpuContext, PinnedAllocator, open_cuda


def test_missing_cuda_python_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(BackendUnavailable, match=r"cuda-python is not installed.*pip install"):
        open_cuda()


@pytest.mark.parametrize(
    "code, message",
    [
        (35, "no usable NVIDIA driver"),
        (100, "no CUDA-capable GPU"),
        (999, "CUDA cannot start"),
    ],
)
def test_driver_and_device_errors_are_named(monkeypatch: pytest.MonkeyPatch, code: int, message: str) -> None:
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart(error=code))
    with pytest.raises(BackendUnavailable, match=message):
        open_cuda()


def test_zero_devices_and_a_missing_index_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart(devices=0))
    with pytest.raises(BackendUnavailable, match="no CUDA-capable GPU"):
        open_cuda()
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart(devices=1))
    with pytest.raises(BackendUnavailable, match="device 1 does not exist"):
        open_cuda(1)


def test_real_cuda_python_without_a_driver_is_detected() -> None:
    require(importlib.util.find_spec("cuda") is not None, "cuda-python (pip install cuda-python)")
    if cuda_available():
        pytest.skip("this machine has a working CUDA driver and GPU")
    with pytest.raises(BackendUnavailable, match="driver|GPU|CUDA cannot start"):
        open_cuda()


def test_every_failing_call_raises_naming_the_call() -> None:
    rt = FakeCudart()
    cuda = Cuda(rt)
    rt.cudaMalloc = lambda size: (2, None)  # type: ignore[method-assign]  # cudaErrorMemoryAllocation
    with pytest.raises(CudaError, match=r"cudaMalloc failed: cudaError 2"):
        cuda.device_buffer(1 << 20)


def test_device_info_decodes_the_name() -> None:
    info = Cuda(FakeCudart()).info()
    assert (info.name, info.compute_capability) == ("Fake Orin", "8.7")


def test_pinned_allocator_hands_out_writable_arrays_and_frees_them() -> None:
    rt = FakeCudart()
    allocator = PinnedAllocator(Cuda(rt))
    a = allocator.alloc((720, 1280, 3), np.uint8)
    b = allocator.alloc((4,), np.float32)
    assert a.shape == (720, 1280, 3) and a.dtype == np.uint8 and a.flags.writeable
    a[...] = 7
    b[:] = [1, 2, 3, 4]
    assert int(a.sum()) == 7 * a.size and b.tolist() == [1, 2, 3, 4]
    assert allocator.allocated_bytes == a.nbytes + b.nbytes
    assert a.ctypes.data in rt.memory  # the array IS the pinned allocation, no copy
    allocator.close()
    assert not rt.memory and rt.freed == 2


def test_pinned_slots_of_a_dropped_pipeline_are_freed_not_leaked() -> None:
    """A daemon replaces its pipeline on reload without closing the old allocator: the
    page-locked memory goes back when the slots (and the allocator) are unreferenced,
    and not while an array over it is still alive."""
    import gc

    rt = FakeCudart()
    allocator = PinnedAllocator(Cuda(rt))
    slots = [allocator.alloc((8, 8, 3), np.uint8) for _ in range(3)]
    kept = slots[1][2:4]  # a view of one slot outlives the pool and the allocator
    del allocator, slots
    gc.collect()
    assert rt.freed == 2 and len(rt.memory) == 1
    kept[...] = 5  # still valid memory
    del kept
    gc.collect()
    assert rt.freed == 3 and not rt.memory


def test_async_copies_round_trip_through_device_memory() -> None:
    rt = FakeCudart()
    cuda = Cuda(rt)
    stream = cuda.stream()
    host = cuda.pinned_buffer(64).array((16,), np.float32)
    host[:] = np.arange(16)
    device = cuda.device_buffer(64)
    back = np.zeros(16, np.float32)
    cuda.copy_htod_async(device, host, stream)
    cuda.copy_dtoh_async(back, device, stream)
    stream.synchronize()
    assert back.tolist() == list(range(16))
    with pytest.raises(ValueError, match="C-contiguous"):
        cuda.copy_htod_async(device, np.zeros((4, 4), np.float32)[:, ::2], stream)


# -- on a GPU --------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_pinned_ring_round_trip() -> None:
    cuda = open_cuda()
    allocator = PinnedAllocator(cuda)
    stream = cuda.stream()
    slots = [allocator.alloc((720, 1280, 3), np.uint8) for _ in range(4)]
    device = cuda.device_buffer(slots[0].nbytes)
    back = [allocator.alloc((720, 1280, 3), np.uint8) for _ in range(4)]
    for i, slot in enumerate(slots):
        slot[...] = np.random.default_rng(i).integers(0, 255, slot.shape, dtype=np.uint8)
    for _ in range(3):  # around the ring a few times
        for slot, out in zip(slots, back):
            cuda.copy_htod_async(device, slot, stream)
            cuda.copy_dtoh_async(out, device, stream)
            done = cuda.event()
            done.record(stream)
            done.synchronize()
            assert np.array_equal(slot, out)
    device.free()
    allocator.close()


@pytest.mark.gpu
def test_gpu_two_streams_overlap_in_event_timings() -> None:
    """Copies on two non-blocking streams overlap: the span of both is shorter than the sum
    of each alone (measured with CUDA events; no wall-clock speed assertion)."""
    cuda = open_cuda()
    n = 256 << 20
    host = [cuda.pinned_buffer(n).array((n,), np.uint8) for _ in range(2)]
    dev = [cuda.device_buffer(n) for _ in range(2)]
    streams = [cuda.stream(), cuda.stream()]
    marks = [[cuda.event(timing=True), cuda.event(timing=True)] for _ in range(2)]
    # H2D on stream 0 and D2H on stream 1 use different copy engines and can overlap;
    # both are enqueued without the host waiting in between.
    marks[0][0].record(streams[0])
    cuda.copy_htod_async(dev[0], host[0], streams[0])
    marks[0][1].record(streams[0])
    marks[1][0].record(streams[1])
    cuda.copy_dtoh_async(host[1], dev[1], streams[1])
    marks[1][1].record(streams[1])
    for s in streams:
        s.synchronize()
    alone = [marks[i][1].elapsed_ms(marks[i][0]) for i in range(2)]
    origin = marks[0][0]
    first = min(0.0, marks[1][0].elapsed_ms(origin))
    span = max(marks[0][1].elapsed_ms(origin), marks[1][1].elapsed_ms(origin)) - first
    assert span < 0.9 * sum(alone), (span, alone)


def test_gpu_context_slot_allocator_is_pinned_in_its_own_context() -> None:
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt, 0))
    allocator = gpu.slot_allocator()
    assert isinstance(allocator, PinnedAllocator) and allocator._cuda is gpu.cuda
    slot = allocator.alloc((2, 2, 3), np.uint8)
    assert slot.shape == (2, 2, 3) and slot.ctypes.data in rt.memory
    mapped = GpuContext(Cuda(rt, 0), mapped_slots=True).slot_allocator()
    assert mapped.mapped and mapped.alloc((2, 2, 3), np.uint8).shape == (2, 2, 3)
    assert rt.host_alloc_flags[-1] == rt.cudaHostAllocMapped


@pytest.mark.gpu
def test_gpu_context_stage_streams_are_distinct_real_streams_usable_from_stage_threads() -> None:
    import threading

    gpu = GpuContext.open()
    streams = {name: gpu.stream(name) for name in ("detect", "swap")}
    assert gpu.stream("detect") is streams["detect"]  # made once, at build time
    handles: dict[str, int] = {}

    def stage(name: str) -> None:
        gpu.bind_thread()  # what every stage thread does first
        done = gpu.cuda.event()
        done.record(streams[name])
        done.synchronize()
        handles[name] = streams[name].handle

    threads = [threading.Thread(target=stage, args=(name,)) for name in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(handles.values())) == 2
    gpu.close()
