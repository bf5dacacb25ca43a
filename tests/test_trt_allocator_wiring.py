"""`run`, `demo` and `serve` give the pipeline pinned frame slots when the backend is
TensorRT and CUDA opens, plain numpy memory otherwise (with a warning when TensorRT was
asked for) — checked on the Pipeline each command really builds, and on its slots."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from test_trt_fake import FakeCudart

from streamswap.commands.serve import make_pipeline
from streamswap.config import load_config
from streamswap.inference import cuda as cuda_mod
from streamswap.inference.cuda import PinnedAllocator
from streamswap.wiring import build_pipeline, plan_endpoints


def _config(tmp_path: Path, backend: str):
    return load_config(
        None,
        {
            "inference.backend": backend,
            "input": "test://pattern?width=32&height=16&frames=2",
            "outputs": [str(tmp_path / "out.mp4")],
        },
    )


def _runtimes(tmp_path: Path, backend: str) -> list:
    config = _config(tmp_path, backend)
    endpoints = plan_endpoints(config)

    class NoStages:
        stages: list = []

    return [
        build_pipeline(config, [], source=endpoints.source, sinks=endpoints.sinks),
        make_pipeline(config, NoStages(), []),
    ]


def test_ort_backend_uses_plain_memory_and_never_touches_cuda(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_cuda() -> None:
        raise AssertionError("CUDA must not be opened for the ort backend")

    monkeypatch.setattr(cuda_mod, "import_cudart", no_cuda)
    for runtime in _runtimes(tmp_path, "ort"):
        assert runtime._allocator is None  # the Pipeline's NumpyAllocator


def test_tensorrt_without_a_driver_falls_back_to_plain_memory_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart(error=35))
    caplog.set_level(logging.WARNING, logger="streamswap.inference.cuda")
    for runtime in _runtimes(tmp_path, "tensorrt"):
        assert runtime._allocator is None
    warnings = [r for r in caplog.records if "pinned frame slots unavailable" in r.getMessage()]
    assert len(warnings) == 2 and all(r.levelno == logging.WARNING for r in warnings)
    assert "no usable NVIDIA driver" in warnings[0].kv["reason"]  # says why


def test_tensorrt_with_cuda_gets_pinned_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rt = FakeCudart()
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: rt)
    runtime, daemon_runtime = _runtimes(tmp_path, "tensorrt")
    assert isinstance(runtime._allocator, PinnedAllocator)
    assert isinstance(daemon_runtime._allocator, PinnedAllocator)
    # the run command's pipeline really puts its frames in that memory, and each of its
    # threads (capture, the output) made that device current first
    import threading

    bound: list[str] = []
    set_device = rt.cudaSetDevice
    rt.cudaSetDevice = lambda device: (bound.append(threading.current_thread().name), set_device(device))[1]
    runtime.start()
    try:
        assert runtime.pool is not None
        assert all(slot.ctypes.data in rt.memory for slot in runtime.pool.buffers)
        assert runtime.pool.buffers[0].shape == (16, 32, 3) and runtime.pool.buffers[0].dtype == np.uint8
        assert runtime.wait(10)
    finally:
        runtime.stop(drain=False)
    assert {"streamswap-capture", f"streamswap-sink-{runtime.status()['outputs'][0]}"} <= set(bound)
