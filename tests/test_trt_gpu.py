"""On an NVIDIA GPU with TensorRT: build engines of generated detector/recognizer/swapper
models through the real child-process builder and compare them with ONNX Runtime; run two
sessions on two streams. Skipped (with the reason) where there is no GPU or no TensorRT."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from conftest import require
from test_trt_fp16 import detector_model, recognizer_model, swapper_model

from streamswap.inference.engine_cache import EngineCache, profile_from_inputs
from streamswap.inference.tensorrt import EngineRequest, TrtEnvironment, TrtSession, ensure_engine, onnx_inputs

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def env() -> TrtEnvironment:
    # Through `require`: on a GPU machine under CI=true a missing TensorRT is a failure.
    require(
        importlib.util.find_spec("tensorrt") is not None,
        "TensorRT on this GPU machine (pip install 'streamswap[tensorrt]')",
    )
    return TrtEnvironment.detect()


CASES = {
    "detector": (detector_model, lambda rng: {"input.1": rng.uniform(-1, 1, (1, 3, 320, 320)).astype(np.float32)}, 320),
    "recognizer": (
        recognizer_model,
        lambda rng: {"input.1": rng.uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)},
        None,
    ),
    "swapper": (
        swapper_model,
        lambda rng: {
            "target": rng.uniform(0, 1, (2, 3, 128, 128)).astype(np.float32),
            "source": rng.normal(0, 0.05, (2, 512)).astype(np.float32),
        },
        None,
    ),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("name", list(CASES))
def test_engine_matches_onnxruntime(tmp_path: Path, env: TrtEnvironment, name: str, precision: str) -> None:
    make, feeds_of, size = CASES[name]
    path = tmp_path / f"{name}.onnx"
    onnx.save(make(), str(path))
    profile = profile_from_inputs(onnx_inputs(path), max_batch=4, size=size)
    engine = ensure_engine(
        EngineRequest(path, precision, profile),
        EngineCache(tmp_path / "engines"),
        trt_version=env.version,
        device=env.device,
        timeout_s=600,
    )
    session = TrtSession(engine, env.trt, env.cuda)
    feeds = feeds_of(np.random.default_rng(0))
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in reference.get_outputs()], reference.run(None, feeds)))
    got = session.run(feeds)
    for out_name, ref in expected.items():
        value = got[out_name]
        assert value.shape == ref.shape
        if ref.dtype.kind != "f":
            assert np.array_equal(value, ref)
            continue
        scale = max(float(np.abs(ref).max()), 1.0)
        tol = 1e-3 if precision == "fp32" else 1e-2  # TF32 / fp16 kernels
        assert float(np.abs(value.astype(np.float32) - ref).max()) <= tol * scale, out_name
    session.close()


def test_two_sessions_on_two_streams_overlap(tmp_path: Path, env: TrtEnvironment) -> None:
    """Detector-like and swapper-like engines enqueued on two streams; the span of both,
    measured with CUDA events, is shorter than the two run back to back."""
    engines = {}
    for name in ("detector", "swapper"):
        make, _, size = CASES[name]
        path = tmp_path / f"{name}.onnx"
        onnx.save(make(), str(path))
        profile = profile_from_inputs(onnx_inputs(path), max_batch=4, size=size)
        engines[name] = ensure_engine(
            EngineRequest(path, "fp16", profile),
            EngineCache(tmp_path / "e"),
            trt_version=env.version,
            device=env.device,
            timeout_s=600,
        )
    sessions = {n: TrtSession(p, env.trt, env.cuda) for n, p in engines.items()}
    rng = np.random.default_rng(1)
    feeds = {n: CASES[n][1](rng) for n in sessions}
    streams = {n: env.cuda.stream() for n in sessions}
    for n in sessions:  # warm-up
        sessions[n].run(feeds[n], streams[n])
    start = {n: env.cuda.event(timing=True) for n in sessions}
    pending = {}
    for n in sessions:
        start[n].record(streams[n])
        pending[n] = sessions[n].run_async(feeds[n], streams[n])
    ends = {}
    for n in sessions:
        end = env.cuda.event(timing=True)
        end.record(streams[n])
        ends[n] = end
        pending[n].result()
    alone = {n: ends[n].elapsed_ms(start[n]) for n in sessions}
    a, b = list(sessions)
    first = min(0.0, start[b].elapsed_ms(start[a]))
    span = max(ends[a].elapsed_ms(start[a]), ends[b].elapsed_ms(start[a])) - first
    print(f"two-stream span {span:.3f} ms vs alone {alone}")
    assert span < sum(alone.values())
