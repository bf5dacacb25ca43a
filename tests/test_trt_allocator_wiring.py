"""`run`, `demo` and `serve` put the pipeline's frame slots in the pinned memory of the GPU
context the face stages' networks run on: CUDA is opened once per process (by the session
pool), never a second time for the slots, and not at all when nothing runs on a GPU —
checked on the Pipeline each command really builds, and on its slots."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trt_fake import FakeCudart

from streamswap.commands.serve import make_pipeline
from streamswap.config import load_config
from streamswap.inference import cuda as cuda_mod
from streamswap.inference.cuda import Cuda, GpuContext, PinnedAllocator
from streamswap.inference.ort import SessionPool
from streamswap.wiring import build_face_stages, build_pipeline, default_pool, plan_endpoints


def _config(tmp_path: Path, backend: str, **more: Any):
    return load_config(
        None,
        {
            "inference.backend": backend,
            "input": "test://pattern?width=32&height=16&frames=2",
            "outputs": [str(tmp_path / "out.mp4")],
            **more,
        },
    )


def _pipelines(config: Any, gpu: GpuContext | None) -> list:
    """The pipeline `run`/`demo` build and the one the daemon builds, over stages whose
    networks run on `gpu` (none here: the slots are what is checked)."""
    endpoints = plan_endpoints(config)

    class NoStages:
        stages: list = []

    NoStages.gpu = gpu  # type: ignore[attr-defined]
    return [
        build_pipeline(config, [], source=endpoints.source, sinks=endpoints.sinks, gpu=gpu),
        make_pipeline(config, NoStages(), []),
    ]


def _no_cuda() -> None:
    raise AssertionError("CUDA must not be opened here")


@pytest.mark.parametrize("backend", ["ort", "tensorrt"])
def test_without_a_gpu_context_the_slots_are_plain_memory_and_cuda_is_never_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    # a pipeline with no networks on a GPU (ORT on the CPU, or a TensorRT config whose
    # stages fell back) gets numpy slots; the pipeline never opens CUDA itself
    monkeypatch.setattr(cuda_mod, "import_cudart", _no_cuda)
    for pipeline in _pipelines(_config(tmp_path, backend), None):
        assert pipeline._allocator is None  # the Pipeline's NumpyAllocator


def test_tensorrt_without_a_driver_opens_no_context_and_says_why_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    opened: list[int] = []

    def no_driver() -> FakeCudart:
        opened.append(1)
        return FakeCudart(error=35)

    monkeypatch.setattr(cuda_mod, "import_cudart", no_driver)
    caplog.set_level(logging.WARNING, logger="streamswap.wiring")
    config = _config(tmp_path, "tensorrt")
    pool = default_pool(config)
    assert pool.gpu is None and not pool.runs_on_gpu()
    warnings = [r for r in caplog.records if r.getMessage() == "no GPU context"]
    assert len(warnings) == 1 and "no usable NVIDIA driver" in warnings[0].kv["reason"]  # says why
    for pipeline in _pipelines(config, pool.gpu):
        assert pipeline._allocator is None
    assert opened == [1]  # one attempt per process: the pool's


def test_slots_come_from_the_stages_gpu_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = FakeCudart()
    monkeypatch.setattr(cuda_mod, "import_cudart", _no_cuda)  # nothing opens a second context
    gpu = GpuContext(Cuda(rt, 0))
    pipeline, daemon_pipeline = _pipelines(_config(tmp_path, "tensorrt"), gpu)
    for p in (pipeline, daemon_pipeline):
        assert isinstance(p._allocator, PinnedAllocator) and p._allocator._cuda is gpu.cuda
    # the run command's pipeline really puts its frames in that memory, and each of its
    # threads (capture, the output) made that device current first
    bound: list[str] = []
    set_device = rt.cudaSetDevice
    rt.cudaSetDevice = lambda device: (bound.append(threading.current_thread().name), set_device(device))[1]
    pipeline.start()
    try:
        assert pipeline.pool is not None
        assert all(slot.ctypes.data in rt.memory for slot in pipeline.pool.buffers)
        assert pipeline.pool.buffers[0].shape == (16, 32, 3) and pipeline.pool.buffers[0].dtype == np.uint8
        assert pipeline.wait(10)
    finally:
        pipeline.stop(drain=False)
    assert {"streamswap-capture", f"streamswap-sink-{pipeline.status()['outputs'][0]}"} <= set(bound)


class _Session:
    def __init__(self, backend: str) -> None:
        self.backend = backend


@pytest.mark.parametrize(
    ("backends", "on_gpu"),
    [
        ([], False),
        (["ort:CPUExecutionProvider"], False),  # TensorRT fell back to ONNX Runtime on the CPU
        (["ort:CPUExecutionProvider", "tensorrt"], True),
        (["ort:CUDAExecutionProvider"], True),
        (["ort:TensorrtExecutionProvider"], True),
    ],
)
def test_the_pool_knows_whether_a_network_runs_on_its_gpu(backends: list[str], on_gpu: bool) -> None:
    config = load_config(None, {"inference.backend": "tensorrt"})
    pool = SessionPool(config.inference, gpu=GpuContext(Cuda(FakeCudart(), 0)))
    for i, backend in enumerate(backends):
        pool._sessions[(Path(f"/m{i}.onnx"), "detect")] = _Session(backend)  # type: ignore[assignment]
    assert pool.runs_on_gpu() is on_gpu
    assert SessionPool(config.inference).runs_on_gpu() is False  # no context: nothing to pin


def test_stages_on_the_cpu_hand_the_pipeline_no_gpu_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundled_models_dir: Path
) -> None:
    # the bundled models on ONNX Runtime's CPU provider, in a process that has a GPU
    # context: the frame slots stay plain memory (pinning them would buy nothing)
    config = _config(tmp_path, "ort", **{"models.dir": str(bundled_models_dir)})
    pool = SessionPool(config.inference, gpu=GpuContext(Cuda(FakeCudart(), 0)))
    stages = build_face_stages(config, pool=pool)
    try:
        assert not pool.runs_on_gpu() and stages.gpu is None
    finally:
        stages.close()
