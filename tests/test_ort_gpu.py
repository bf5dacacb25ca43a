"""ONNX Runtime's CUDA provider on a real device (marked `gpu`; `scripts/gpu-check.sh` runs
it; skipped with the reason where onnxruntime-gpu's CUDA provider does not start): a session
on the swap stage's stream runs on our own cudaMalloc'd buffers through I/O binding, across
batch sizes without allocating, and its outputs equal the CPU provider's; the device swap
over it gives the host swap's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_device_path import TinySwapper, _faces, _frame, tiny_swapper_model

pytestmark = pytest.mark.gpu


@pytest.fixture()
def gpu():
    from streamswap.inference.cuda import GpuContext
    from streamswap.inference.ort import probe_provider

    why = probe_provider("cuda")
    if why is not None:
        pytest.skip(f"ONNX Runtime's CUDA provider does not start here: {why} (install onnxruntime-gpu)")
    context = GpuContext.open(0)
    yield context
    context.close()


def test_ort_cuda_runs_on_our_device_buffers_and_swaps_like_the_host(gpu, tmp_path: Path) -> None:
    from swap_fixtures import cpu_session

    from streamswap.faces.device import DeviceFrames, DeviceSwapper
    from streamswap.inference.base import DeviceSession
    from streamswap.inference.ort import SessionPool
    from streamswap.inference.settings import InferenceSettings

    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    cpu = cpu_session(model)
    session = SessionPool(InferenceSettings(provider="cuda", max_batch=5), tmp_path, gpu=gpu).get(model, stage="swap")
    assert session.backend == "ort:CUDAExecutionProvider" and isinstance(session, DeviceSession)
    swap = gpu.stream("swap")
    target, source = session.device_input("target"), session.device_input("source")
    x_staging, s_staging = gpu.cuda.pinned_buffer(target.nbytes), gpu.cuda.pinned_buffer(source.nbytes)
    warm = gpu.cuda.allocations
    rng = np.random.default_rng(1)
    for n in (1, 5, 2):
        x = x_staging.array((n, 3, 16, 16), np.float32)
        x[...] = rng.random(x.shape, dtype=np.float32)
        src = s_staging.array((n, 512), np.float32)
        src[...] = rng.random(src.shape, dtype=np.float32)
        gpu.cuda.copy_htod_async(target.ptr, x, swap)
        gpu.cuda.copy_htod_async(source.ptr, src, swap)
        session.enqueue({"target": x.shape, "source": src.shape}, swap)
        got = session.fetch(swap).result()["out"]
        np.testing.assert_allclose(got, cpu.run({"target": x, "source": src})["out"], atol=1e-5)
    assert gpu.cuda.allocations == warm

    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((40, 48, 3), np.uint8)
    original = _frame(2)
    slot[...] = original
    device = DeviceSwapper(TinySwapper(session, name="tiny"), session, gpu.cuda, max_faces=5)
    host = TinySwapper(cpu, name="tiny")
    identity = np.linspace(-1, 1, 512, dtype=np.float32)
    device.set_identity(identity)
    host.set_identity(identity)
    faces = _faces(3)
    frames.upload(slot, gpu.stream("detect"))
    device.swap(frames.frame(slot, swap), faces, swap)
    frames.download(slot, swap)
    expected = original.copy()
    host.swap(expected, faces)
    assert np.abs(slot.astype(int) - expected.astype(int)).max() <= 2
    assert not np.array_equal(slot, original)
