"""Named stage streams from one GPU context, over the fake cudart: each pipeline stage's
engines run on that stage's stream, given explicitly (no thread-local lookup); the detect
and swap stages get different streams; each run waits on its own event only; a SessionPool
opens CUDA once; the device is set on every stage thread."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from test_trt_fake import FakeCudart, make_fake_trt
from test_trt_session import engine_file

from streamswap.inference import cuda as cuda_mod
from streamswap.inference.cuda import Cuda, DeviceInfo, GpuContext
from streamswap.inference.engine_cache import EngineCache, profile_from_inputs
from streamswap.inference.ort import SessionPool
from streamswap.inference.settings import InferenceSettings
from streamswap.inference.tensorrt import EngineRequest, TrtEnvironment, TrtSession, onnx_inputs

X = {"input.1": np.ones((1, 3, 112, 112), np.float32)}


def _env(rt: FakeCudart, version: str = "10.3.0.30", device: int = 0) -> TrtEnvironment:
    return TrtEnvironment(
        make_fake_trt(version), version, GpuContext(Cuda(rt, device)), DeviceInfo(device, "Fake Orin", "8.7")
    )


def _stream_of_each_run(rt: FakeCudart) -> list[tuple[int, int]]:
    """(event, stream) of every cudaEventRecord, i.e. one per run."""
    return [args for name, args in rt.sync if name == "cudaEventRecord"]


def test_each_stage_runs_its_engines_on_its_own_named_stream(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "10.3.0.30")
    rt = FakeCudart()
    env = _env(rt, device=1)
    gpu = env.gpu
    detect, swap = gpu.stream("detect"), gpu.stream("swap")
    detector, mesh = (TrtSession(path, env.trt, env.cuda, detect) for _ in range(2))
    swapper = TrtSession(path, env.trt, env.cuda, swap)
    assert gpu.stream("detect") is detect  # made once, at build time
    devices: dict[str, int] = {}

    def stage(name: str, sessions: list[TrtSession]) -> None:
        gpu.bind_thread()  # what every stage thread does first
        devices[name] = rt.current_device[threading.get_ident()]
        for _ in range(3):  # three frames
            for session in sessions:
                session.run(X)

    threads = [
        threading.Thread(target=stage, args=("detect", [detector, mesh])),
        threading.Thread(target=stage, args=("swap", [swapper])),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert devices == {"detect": 1, "swap": 1}  # device 1 on both stage threads, not device 0
    executed = [h for n, h in env.trt.calls if n == "execute_async_v3"]
    assert sorted(executed) == sorted([detect.handle] * 6 + [swap.handle] * 3)
    runs = _stream_of_each_run(rt)
    assert sorted(stream for _, stream in runs) == sorted(executed)  # events on the run's stream
    copies = [h for n, h in rt.sync if n == "cudaMemcpyAsync"]
    assert set(copies) == {detect.handle, swap.handle}  # every copy on a stage stream
    # the host waits on each run's event only: never the whole device or a whole stream
    waits = [n for n, _ in rt.sync if "Synchronize" in n]
    assert waits == ["cudaEventSynchronize"] * 9


def test_a_caller_given_stream_wins_over_the_owning_stage_stream(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "8.5.2.2")
    rt = FakeCudart()
    env = _env(rt, "8.5.2.2")
    session = TrtSession(path, env.trt, env.cuda, env.gpu.stream("detect"))
    own = env.cuda.stream()
    session.run(X, stream=own)
    session.run(X, stream=own.handle)
    assert [s for _, s in _stream_of_each_run(rt)] == [own.handle, own.handle]


def test_a_session_closes_only_a_stream_it_made_itself(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "10.3.0.30")
    rt = FakeCudart()
    env = _env(rt)
    owned = TrtSession(path, env.trt, env.cuda, env.gpu.stream("swap"))
    alone = TrtSession(path, env.trt, env.cuda)
    owned.close()
    assert not [n for n, _ in rt.sync if n == "cudaStreamDestroy"]
    alone.close()
    assert [n for n, _ in rt.sync].count("cudaStreamDestroy") == 1
    env.gpu.close()
    assert [n for n, _ in rt.sync].count("cudaStreamDestroy") == 2


def test_streams_cannot_be_used_after_close() -> None:
    gpu = GpuContext(Cuda(FakeCudart()))
    gpu.close()
    with pytest.raises(cuda_mod.CudaError, match="after the GPU context was closed"):
        gpu.stream("detect")


def test_mapped_slots_are_zero_copy_host_memory() -> None:
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt), mapped_slots=True)
    slot = gpu.slot_allocator().alloc((4, 6, 3), np.uint8)
    assert slot.shape == (4, 6, 3)
    assert rt.host_alloc_flags == [rt.cudaHostAllocMapped]
    buffer = gpu.cuda.pinned_buffer(64, mapped=True)
    assert buffer.device_ptr == buffer.ptr  # the fake maps host memory 1:1


def _cached_models(tmp_path: Path, settings: InferenceSettings, version: str) -> tuple[EngineCache, list[Path]]:
    models = []
    cache = EngineCache(tmp_path / "engines")
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        model, plan = engine_file(folder, version, settings.engine_precision, settings.max_batch)
        profile = profile_from_inputs(onnx_inputs(model), settings.max_batch)
        key = EngineRequest(model, settings.engine_precision, profile).key(version, DeviceInfo(0, "Fake Orin", "8.7"))
        cache.store(key, plan, build_seconds=0.1)
        models.append(model)
    return cache, models


def test_session_pool_opens_cuda_once_and_gives_each_stage_its_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = "10.3.0.30"
    settings = InferenceSettings(backend="tensorrt", build_engines=False)
    cache, models = _cached_models(tmp_path, settings, version)
    opened: list[FakeCudart] = []

    def import_cudart() -> FakeCudart:
        opened.append(FakeCudart())
        return opened[-1]

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(version))
    monkeypatch.setattr(cuda_mod, "import_cudart", import_cudart)
    gpu = GpuContext.open(0)  # the build place opens the process's context once
    pool = SessionPool(settings, cache.dir, gpu=gpu)
    detector = pool.get(models[0], stage="detect")
    mesh = pool.get(models[1], stage="detect")
    swapper = pool.get(models[0], stage="swap")
    assert swapper is not detector  # the same file used by two stages: two sessions
    assert pool.get(models[0], stage="detect") is detector
    assert len(opened) == 1  # one CUDA device opened, for the slots and every engine
    assert detector.stream is mesh.stream is gpu.stream("detect")
    assert swapper.stream is gpu.stream("swap")


def test_session_pool_reports_the_same_missing_piece_for_every_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_trt_build import recognizer_model

    from streamswap.errors import BackendUnavailable

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0.30"))
    calls: list[int] = []

    def no_driver() -> FakeCudart:
        calls.append(1)
        return FakeCudart(error=35)

    monkeypatch.setattr(cuda_mod, "import_cudart", no_driver)
    pool = SessionPool(InferenceSettings(backend="tensorrt"), tmp_path)
    for name in ("a.onnx", "b.onnx"):
        with pytest.raises(BackendUnavailable, match=f"cannot run {name}: no usable NVIDIA driver"):
            pool.get(recognizer_model(tmp_path / name))
    assert len(calls) == 1  # detected once, not once per model
