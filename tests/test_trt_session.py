"""The TensorRT session's data path (name-based I/O, grow-only buffers, execute_async_v3,
events) over the fake tensorrt + fake cudart, compared with ONNX Runtime; and backend
selection: missing pieces give clear errors, fallback only as configured."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_trt_build import recognizer_model
from test_trt_fake import FakeCudart, make_fake_trt

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.backends import open_session
from streamswap.inference.cuda import Cuda, DeviceInfo, GpuContext
from streamswap.inference.engine_cache import EngineCache, profile_from_inputs
from streamswap.inference.ort import SessionPool
from streamswap.inference.settings import InferenceSettings
from streamswap.inference.tensorrt import TrtEnvironment, TrtSession, onnx_inputs
from streamswap.inference.trt_build import BuildRequest, build_serialized


def engine_file(tmp_path: Path, version: str, precision: str = "fp32", max_batch: int = 4) -> tuple[Path, Path]:
    model = recognizer_model(tmp_path / "rec.onnx")
    profile = profile_from_inputs(onnx_inputs(model), max_batch)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    request = BuildRequest(
        "rec", str(model), str(work / "e.plan"), precision, [p.to_json() for p in profile], str(work)
    )
    path = tmp_path / "rec.engine"
    path.write_bytes(build_serialized(make_fake_trt(version), request, lambda *a: None))
    return model, path


@pytest.mark.parametrize("version", ["8.5.2.2", "10.3.0.30", "11.0.0.1"])
def test_session_matches_onnxruntime_and_allocates_only_when_it_loads(tmp_path: Path, version: str) -> None:
    model, path = engine_file(tmp_path, version, "fp16" if version.startswith("11") else "fp32")
    trt, rt = make_fake_trt(version), FakeCudart()
    cuda = Cuda(rt)
    session = TrtSession(path, trt, cuda)
    loaded = cuda.allocations
    assert loaded == 4  # device + pinned staging for the input and the output, at batch 4
    assert [i.name for i in session.inputs] == ["input.1"]
    assert session.inputs[0].shape == (None, 3, 112, 112) and session.inputs[0].dtype == np.float32
    assert [o.name for o in session.outputs] == ["683"]
    reference = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    tol = 2e-2 if version.startswith("11") else 1e-5  # 11 runs our fp16 conversion
    for batch in (2, 1, 4, 3):
        x = rng.standard_normal((batch, 3, 112, 112)).astype(np.float32)
        out = session.run({"input.1": x})
        ref = reference.run(None, {"input.1": x})[0]
        assert out["683"].shape == (batch, 512)
        np.testing.assert_allclose(out["683"], ref, atol=tol, rtol=tol)
    # every batch up to the profile maximum runs in the buffers made at load
    assert cuda.allocations == loaded and rt.freed == 0
    assert [n for n, _ in trt.calls].count("execute_async_v3") == 4
    # inputs are staged in pinned memory: every host→device copy reads a pinned buffer
    with pytest.raises(ModelError, match="larger than the engine's maximum"):
        session.run({"input.1": np.zeros((5, 3, 112, 112), np.float32)})
    session.close()
    assert not rt.memory


def test_run_async_uses_the_callers_stream_and_an_event(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "10.3.0.30")
    trt, rt = make_fake_trt("10.3.0.30"), FakeCudart()
    cuda = Cuda(rt)
    session = TrtSession(path, trt, cuda)
    stream = cuda.stream()
    pending = session.run_async({"input.1": np.ones((1, 3, 112, 112), np.float32)}, stream)
    assert pending.done()
    first = pending.result()["683"]
    assert ("execute_async_v3", stream.handle) in trt.calls
    # results are copies: the next run does not change what the caller already holds
    second = session.run({"input.1": np.zeros((1, 3, 112, 112), np.float32)})["683"]
    assert not np.array_equal(first, second)


def test_shapes_outside_the_profile_and_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "10.3.0.30", max_batch=2)
    session = TrtSession(path, make_fake_trt("10.3.0.30"), Cuda(FakeCudart()))
    with pytest.raises(ModelError, match="--max-faces"):
        session.run({"input.1": np.zeros((3, 3, 112, 112), np.float32)})
    with pytest.raises(ModelError, match="'input.1' was not given"):
        session.run({})
    # the session is still usable after an error (its lock was released)
    assert session.run({"input.1": np.zeros((2, 3, 112, 112), np.float32)})["683"].shape == (2, 512)


def test_an_engine_from_another_tensorrt_is_refused(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "8.6.1.6")
    with pytest.raises(ModelError, match="engines clear"):
        TrtSession(path, make_fake_trt("10.3.0.30"), Cuda(FakeCudart()))


def fake_env(version: str = "10.3.0.30") -> TrtEnvironment:
    rt = FakeCudart()
    return TrtEnvironment(make_fake_trt(version), version, GpuContext(Cuda(rt)), DeviceInfo(0, "Fake Orin", "8.7"))


def test_open_session_refuses_without_engine_when_building_is_disabled(tmp_path: Path) -> None:
    model = recognizer_model(tmp_path / "rec.onnx")
    settings = InferenceSettings(backend="tensorrt", build_engines=False)
    with pytest.raises(BackendUnavailable, match="rec: no engine is cached.*streamswap engines build.*no fallback"):
        open_session(model, settings, tmp_path / "engines", trt_env=fake_env())


def test_open_session_loads_a_cached_engine_with_the_trt_backend(tmp_path: Path) -> None:
    model, plan = engine_file(tmp_path, "10.3.0.30", "fp16")
    env = fake_env()
    cache = EngineCache(tmp_path / "engines")
    profile = profile_from_inputs(onnx_inputs(model), 8)
    from streamswap.inference.tensorrt import EngineRequest

    key = EngineRequest(model, "fp16", profile).key(env.version, env.device)
    cache.store(key, plan, build_seconds=0.1)
    session = open_session(model, InferenceSettings(backend="tensorrt", build_engines=False), cache.dir, trt_env=env)
    assert session.backend == "tensorrt"
    assert session.run({"input.1": np.zeros((1, 3, 112, 112), np.float32)})["683"].shape == (1, 512)


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt -> ImportError


def test_missing_tensorrt_without_fallback_is_an_error_naming_it(tmp_path: Path, no_tensorrt: None) -> None:
    model = recognizer_model(tmp_path / "rec.onnx")
    with pytest.raises(BackendUnavailable, match=r"TensorRT is not installed.*no fallback configured"):
        open_session(model, InferenceSettings(backend="tensorrt"), tmp_path)


def test_fallback_to_cpu_only_when_listed_and_loudly(
    tmp_path: Path, no_tensorrt: None, caplog: pytest.LogCaptureFixture
) -> None:
    model = recognizer_model(tmp_path / "rec.onnx")
    settings = InferenceSettings(backend="tensorrt", fallback=["cuda"])
    # this machine has no CUDA EP: "cuda" alone must not quietly end on the CPU
    with pytest.raises(BackendUnavailable, match=r"tensorrt: TensorRT is not installed.*ort cuda"):
        open_session(model, settings, tmp_path)
    caplog.set_level(logging.WARNING, logger="streamswap.inference.backends")
    session = open_session(model, replace(settings, fallback=["cuda", "cpu"]), tmp_path)
    assert session.backend == "ort:CPUExecutionProvider"
    assert any("falling back" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_missing_driver_is_named_when_tensorrt_is_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamswap.inference.cuda as cuda_mod

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0.30"))
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart(error=35))
    model = recognizer_model(tmp_path / "rec.onnx")
    with pytest.raises(BackendUnavailable, match="no usable NVIDIA driver"):
        open_session(model, InferenceSettings(backend="tensorrt"), tmp_path)


def test_session_pool_dispatches_on_backend(tmp_path: Path, no_tensorrt: None) -> None:
    model = recognizer_model(tmp_path / "rec.onnx")
    pool = SessionPool(InferenceSettings(provider="cpu"))
    assert pool.get(model).backend == "ort:CPUExecutionProvider"
    trt_pool = SessionPool(InferenceSettings(backend="tensorrt"), tmp_path)
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed"):
        trt_pool.get(model)
