"""ONNX Runtime's CUDA provider on the stage's stream: a recording fake of onnxruntime (no
GPU here) shows that the owning stage's stream reaches the CUDA/TensorRT providers as
user_compute_stream, and that device runs bind our own device buffers (I/O binding)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_trt_fake import FakeCudart

from streamswap.inference.backends import open_session
from streamswap.inference.cuda import Cuda, GpuContext
from streamswap.inference.settings import InferenceSettings


def _fake_ort(record: dict[str, Any]) -> types.ModuleType:
    ort = types.ModuleType("onnxruntime")
    ort.get_available_providers = lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    ort.GraphOptimizationLevel = types.SimpleNamespace(
        ORT_DISABLE_ALL=0, ORT_ENABLE_BASIC=1, ORT_ENABLE_EXTENDED=2, ORT_ENABLE_ALL=99
    )

    class SessionOptions:
        def __init__(self) -> None:
            self.entries: dict[str, str] = {}

        def add_session_config_entry(self, key: str, value: str) -> None:
            self.entries[key] = value

    class Arg:
        def __init__(self, name: str, shape: list) -> None:
            self.name, self.shape, self.type = name, shape, "tensor(float)"

    class Binding:
        def __init__(self) -> None:
            self.inputs: list[tuple] = []
            self.outputs: list[tuple] = []

        def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
            self.inputs.append((name, device_type, device_id, np.dtype(element_type), tuple(shape), buffer_ptr))

        def bind_output(self, name, device_type, device_id, element_type, shape, buffer_ptr):
            self.outputs.append((name, device_type, device_id, np.dtype(element_type), tuple(shape), buffer_ptr))

    class InferenceSession:
        def __init__(self, path, sess_options=None, providers=(), provider_options=(), enable_fallback=1):
            record["providers"] = list(providers)
            record["options"] = list(provider_options)
            self._providers = list(providers)
            record.setdefault("bindings", [])

        def disable_fallback(self) -> None:
            pass

        def get_providers(self) -> list[str]:
            return self._providers

        def get_inputs(self) -> list[Arg]:
            return [Arg("x", ["n", 3, 8, 8])]

        def get_outputs(self) -> list[Arg]:
            return [Arg("y", ["n", 3, 8, 8])]

        def io_binding(self) -> Binding:
            binding = Binding()
            record["bindings"].append(binding)
            return binding

        def run_with_iobinding(self, binding: Binding) -> None:
            record.setdefault("runs", []).append((list(binding.inputs), list(binding.outputs)))

    ort.SessionOptions = SessionOptions
    ort.InferenceSession = InferenceSession
    return ort


def test_cuda_provider_computes_on_the_owning_stage_stream_with_our_device_buffers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(record))
    gpu = GpuContext(Cuda(FakeCudart(), device=1))
    settings = InferenceSettings(provider="cuda", device=1)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"fake")
    session = open_session(model, settings, tmp_path, stage="swap", gpu=gpu)
    stream = gpu.stream("swap")
    assert record["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda_options = record["options"][0]
    assert cuda_options["user_compute_stream"] == str(stream.handle)
    assert cuda_options["has_user_compute_stream"] == "1" and cuda_options["device_id"] == 1
    assert session.stream is stream

    inp = gpu.cuda.device_buffer(4 * 3 * 8 * 8 * 4).array((4, 3, 8, 8), np.float32)
    out = gpu.cuda.device_buffer(4 * 3 * 8 * 8 * 4).array((4, 3, 8, 8), np.float32)
    before = gpu.cuda.allocations
    for n in (1, 3):
        session.device_run({"x": inp.view((n, 3, 8, 8))}, {"y": out.view((n, 3, 8, 8))})
    assert gpu.cuda.allocations == before  # runs bind buffers, allocate none
    assert len(record["bindings"]) == 1  # one binding object, rebound per run
    (ins, outs), (ins3, outs3) = record["runs"][0], record["runs"][-1]
    assert ins[0] == ("x", "cuda", 1, np.dtype(np.float32), (1, 3, 8, 8), inp.ptr)
    assert outs[0] == ("y", "cuda", 1, np.dtype(np.float32), (1, 3, 8, 8), out.ptr)
    assert ins3[-1][4] == (3, 3, 8, 8) and outs3[-1][5] == out.ptr


def test_without_a_gpu_context_the_cpu_provider_gets_no_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(record))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"fake")
    session = open_session(model, InferenceSettings(provider="cpu"), tmp_path, stage="detect")
    assert record["options"] == [{}] and session.stream is None
