"""ONNX Runtime's CUDA provider on the stage's stream: a recording fake of onnxruntime (no
GPU here) shows that the owning stage's stream reaches the CUDA/TensorRT providers as
user_compute_stream. Device runs on our own buffers (I/O binding): test_ort_device_path.py."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

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

    class InferenceSession:
        def __init__(self, path, sess_options=None, providers=(), provider_options=(), enable_fallback=1):
            record["providers"] = list(providers)
            record["options"] = list(provider_options)
            self._providers = list(providers)

        def disable_fallback(self) -> None:
            pass

        def get_providers(self) -> list[str]:
            return self._providers

        def get_inputs(self) -> list[Arg]:
            return [Arg("x", ["n", 3, 8, 8])]

        def get_outputs(self) -> list[Arg]:
            return [Arg("y", ["n", 3, 8, 8])]

    ort.SessionOptions = SessionOptions
    ort.InferenceSession = InferenceSession
    return ort


def test_cuda_provider_computes_on_the_owning_stage_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_without_a_gpu_context_the_cpu_provider_gets_no_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    record: dict[str, Any] = {}
    monkeypatch.setitem(sys.modules, "onnxruntime", _fake_ort(record))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"fake")
    session = open_session(model, InferenceSettings(provider="cpu"), tmp_path, stage="detect")
    assert record["options"] == [{}] and session.stream is None
