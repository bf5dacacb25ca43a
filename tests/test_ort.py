"""ONNX Runtime backend on small generated graphs: numerics, metadata, providers, pooling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from ort_fakes import GpuBuildWithoutGpu

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.base import Session
from streamswap.inference.ort import (
    PROVIDERS,
    SessionPool,
    available_providers,
    open_ort_session,
    resolve_providers,
)
from streamswap.inference.settings import InferenceSettings

RNG = np.random.default_rng(7)
W = RNG.standard_normal((4, 3)).astype(np.float32)
B = RNG.standard_normal(3).astype(np.float32)


def affine_model(path: Path, elem: int = TensorProto.FLOAT) -> Path:
    """y = x @ W + b and z = relu(y), batch dimension dynamic ("N")."""
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["y"]),
            helper.make_node("Relu", ["y"], ["z"]),
        ],
        "affine",
        [helper.make_tensor_value_info("x", elem, ["N", 4])],
        [helper.make_tensor_value_info("y", elem, ["N", 3]), helper.make_tensor_value_info("z", elem, ["N", 3])],
        initializer=[numpy_helper.from_array(W.astype(dtype), "W"), numpy_helper.from_array(B.astype(dtype), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime we support
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def test_outputs_match_numpy(tmp_path: Path) -> None:
    session = open_ort_session(affine_model(tmp_path / "affine.onnx"), InferenceSettings(provider="cpu"))
    assert isinstance(session, Session)
    x = RNG.standard_normal((5, 4)).astype(np.float32)
    out = session.run({"x": x})
    expected = x @ W + B
    np.testing.assert_allclose(out["y"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["z"], np.maximum(expected, 0), rtol=1e-5, atol=1e-6)
    assert session.backend == "ort:CPUExecutionProvider"


def test_metadata_is_exposed(tmp_path: Path) -> None:
    session = open_ort_session(affine_model(tmp_path / "affine.onnx"), InferenceSettings(provider="cpu"))
    (inp,) = session.inputs
    assert (inp.name, inp.shape, inp.dtype) == ("x", ("N", 4), np.dtype(np.float32))
    assert inp.is_dynamic
    assert [(o.name, o.shape) for o in session.outputs] == [("y", ("N", 3)), ("z", ("N", 3))]


def test_fp16_model_reports_fp16(tmp_path: Path) -> None:
    session = open_ort_session(
        affine_model(tmp_path / "half.onnx", TensorProto.FLOAT16), InferenceSettings(provider="cpu")
    )
    assert session.inputs[0].dtype == np.float16
    x = RNG.standard_normal((2, 4)).astype(np.float16)
    out = session.run({"x": x})["y"]
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, x.astype(np.float32) @ W + B, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_session_options_do_not_change_results(tmp_path: Path, level: str) -> None:
    settings = InferenceSettings(provider="auto", threads=1, graph_optimization=level)
    session = open_ort_session(affine_model(tmp_path / "affine.onnx"), settings)
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(session.run({"x": x})["y"], x @ W + B, rtol=1e-5, atol=1e-6)


def test_unavailable_explicit_provider_is_a_clear_error(tmp_path: Path) -> None:
    have = available_providers()
    missing = next(p for p in ("cuda", "tensorrt", "coreml") if p not in have)
    with pytest.raises(BackendUnavailable) as err:
        open_ort_session(affine_model(tmp_path / "affine.onnx"), InferenceSettings(provider=missing))
    message = str(err.value)
    assert f"inference.provider is {missing!r}" in message
    assert "offers only" in message and "cpu" in message
    assert "inference.provider: auto" in message  # says what to do


def test_auto_prefers_accelerators_and_keeps_cpu_last() -> None:
    chosen = [ep for ep, _ in resolve_providers(InferenceSettings(provider="auto"), None)]
    assert chosen[-1] == PROVIDERS["cpu"]
    order = list(PROVIDERS.values())
    assert chosen == sorted(chosen, key=order.index)
    assert set(chosen) == {PROVIDERS[p] for p in available_providers()}


def test_tensorrt_options_put_caches_under_the_engine_dir(tmp_path: Path) -> None:
    from streamswap.inference.ort import _provider_options

    opts = _provider_options("tensorrt", InferenceSettings(fp16=False), tmp_path)
    assert opts["trt_fp16_enable"] is False
    assert opts["trt_engine_cache_path"] == str(tmp_path / "ort-trt")
    assert opts["trt_timing_cache_path"] == str(tmp_path / "ort-trt")


def test_pool_returns_one_session_per_file(tmp_path: Path) -> None:
    path = affine_model(tmp_path / "affine.onnx")
    other = affine_model(tmp_path / "other.onnx")
    (tmp_path / "sub").mkdir()
    pool = SessionPool(InferenceSettings(provider="cpu"))
    first = pool.get(path)
    assert pool.get(path) is first
    assert pool.get(tmp_path / "sub" / ".." / "affine.onnx") is first  # same file, other spelling
    assert pool.get(other) is not first


def test_broken_model_file_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf graph")
    with pytest.raises(ModelError) as err:
        open_ort_session(bad, InferenceSettings(provider="cpu"))
    assert str(bad) in str(err.value) and "streamswap models verify" in str(err.value)


@pytest.mark.parametrize("raises", [True, False], ids=["fails-to-start", "left-out"])
def test_explicit_provider_that_cannot_start_is_an_error_not_a_cpu_run(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raises: bool,
) -> None:
    from streamswap.inference import ort as ort_backend

    fake = GpuBuildWithoutGpu(raises)
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: fake)
    path = affine_model(tmp_path / "affine.onnx")
    with pytest.raises(BackendUnavailable) as err:
        open_ort_session(path, InferenceSettings(provider="cuda"))
    message = str(err.value)
    assert f"could not start CUDAExecutionProvider for {path}" in message
    assert "streamswap doctor" in message and "inference.provider: auto" in message
    assert ("no CUDA-capable device" in message) == raises
    assert fake.calls[0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize("raises", [True, False], ids=["fails-to-start", "left-out"])
def test_auto_runs_on_what_started_and_says_what_was_left_out(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raises: bool,
) -> None:
    from streamswap.inference import ort as ort_backend

    monkeypatch.setattr(ort_backend, "_import_ort", lambda: GpuBuildWithoutGpu(raises))
    with caplog.at_level("WARNING", logger="streamswap.inference.ort"):
        session = open_ort_session(affine_model(tmp_path / "affine.onnx"), InferenceSettings(provider="auto"))
    assert session.backend == "ort:CPUExecutionProvider"
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(session.run({"x": x})["y"], x @ W + B, rtol=1e-5, atol=1e-6)
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert record.getMessage() == "accelerator could not start, running without it"
    assert record.kv["left_out"] == "CUDAExecutionProvider"


def test_a_bad_file_is_a_model_error_even_when_an_accelerator_fails(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamswap.inference import ort as ort_backend

    monkeypatch.setattr(ort_backend, "_import_ort", lambda: GpuBuildWithoutGpu(True))
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf graph")
    with pytest.raises(ModelError) as err:
        open_ort_session(bad, InferenceSettings(provider="auto"))
    assert str(err.value).startswith(f"{bad}: ONNX Runtime cannot load this file")
    assert "streamswap models fetch NAME" in str(err.value) and "export it again" in str(err.value)


def test_explicit_tensorrt_keeps_cuda_for_what_tensorrt_does_not_take(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamswap.inference import ort as ort_backend

    monkeypatch.setattr(ort_backend, "available_providers", lambda: ["tensorrt", "cuda", "cpu"])
    chosen = [ep for ep, _ in resolve_providers(InferenceSettings(provider="tensorrt"), None)]
    assert chosen == [PROVIDERS["tensorrt"], PROVIDERS["cuda"], PROVIDERS["cpu"]]
    chosen = [ep for ep, _ in resolve_providers(InferenceSettings(provider="cuda"), None)]
    assert chosen == [PROVIDERS["cuda"], PROVIDERS["cpu"]]


def test_session_does_not_fall_back_behind_our_back(tmp_path: Path) -> None:
    """ORT's own fallback prints to stdout and moves work to the CPU; it is switched off."""
    session = open_ort_session(affine_model(tmp_path / "affine.onnx"), InferenceSettings(provider="cpu"))
    assert session._session._enable_fallback is False
