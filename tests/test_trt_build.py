"""The TensorRT build path per version (8.5/8.6, 10.x, 11.x) against the recording fake,
and the child-process builder: progress, crash, hang/timeout, errors."""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_trt_fake import make_fake_trt

from streamswap.errors import BackendUnavailable
from streamswap.inference.cuda import DeviceInfo
from streamswap.inference.engine_cache import EngineCache, profile_from_inputs
from streamswap.inference.tensorrt import EngineRequest, ensure_engine, onnx_inputs
from streamswap.inference.trt_build import (
    BuildRequest,
    EngineBuildError,
    TrtApi,
    build_serialized,
    parse_version,
    run_build,
)

TESTS_DIR = Path(__file__).resolve().parent


def recognizer_model(path: Path, op: str = "Relu") -> Path:
    """A tiny ArcFace-shaped model: N×3×112×112 → N×512 (dynamic batch)."""
    rng = np.random.default_rng(1)
    w = numpy_helper.from_array(rng.normal(0, 0.05, (8, 3, 4, 4)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(0, 0.05, (8, 512)).astype(np.float32), "fc")
    nodes = [
        helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[4, 4]),
        helper.make_node(op, ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("MatMul", ["f", "fc"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes,
        "rec",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        [w, fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def request_for(tmp_path: Path, precision: str = "fp16", model: Path | None = None) -> BuildRequest:
    model = model or recognizer_model(tmp_path / "rec.onnx")
    profile = profile_from_inputs(onnx_inputs(model), max_batch=4)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return BuildRequest(
        model="rec",
        onnx_path=str(model),
        engine_out=str(work / "engine.plan"),
        precision=precision,
        profile=[p.to_json() for p in profile],
        work_dir=str(work),
        timing_cache=str(tmp_path / "timing.cache"),
        workspace_mb=512,
        calib_cache=str(tmp_path / "calib.cache"),
        calib_batch_size=1,
    )


def names(trt) -> list[str]:
    return [name for name, _ in trt.calls]


def build(trt, request: BuildRequest) -> tuple[dict, list]:
    reports: list = []
    plan = build_serialized(trt, request, lambda *a: reports.append(a))
    return json.loads(plan), reports


def test_version_parsing_and_minimum() -> None:
    assert parse_version("8.6.1.6") == (8, 6, 1)
    assert parse_version("10.3.0.30") == (10, 3, 0)
    assert parse_version("11.0.0b1") == (11, 0, 0)
    with pytest.raises(BackendUnavailable, match="8.5 or newer"):
        TrtApi.of(make_fake_trt("8.4.3.1"))


@pytest.mark.parametrize("version", ["8.5.2.2", "8.6.1.6"])
def test_trt8_uses_explicit_batch_and_builder_flags(tmp_path: Path, version: str) -> None:
    trt = make_fake_trt(version)
    plan, reports = build(trt, request_for(tmp_path))
    assert ("create_network", 1) in trt.calls  # 1 << EXPLICIT_BATCH
    assert plan["flags"] == ["FP16"]
    assert "config.progress_monitor" not in names(trt)  # no IProgressMonitor before 10
    assert plan["profile"]["input.1"] == [[1, 3, 112, 112], [1, 3, 112, 112], [4, 3, 112, 112]]
    assert ("config.set_memory_pool_limit", ("WORKSPACE", 512 << 20)) in trt.calls
    assert [r[0] for r in reports] == ["parse", "build", "done"]
    assert (tmp_path / "timing.cache").read_bytes() == b"fake-timing-cache+"


def test_trt10_drops_explicit_batch_and_reports_progress(tmp_path: Path) -> None:
    trt = make_fake_trt("10.3.0.30")
    request = request_for(tmp_path)
    (tmp_path / "timing.cache").write_bytes(b"previous")
    plan, reports = build(trt, request)
    assert ("create_network", 0) in trt.calls
    assert plan["flags"] == ["FP16"] and plan["fp16_weights"] is False
    assert "config.progress_monitor" in names(trt)
    fractions = [r[2] for r in reports if r[0] == "build" and r[1] == "Building engine"]
    assert fractions[-1] == 1.0 and len(fractions) >= 3
    # the existing timing cache was handed to the builder and the updated one saved
    assert ("config.create_timing_cache", b"previous") in trt.calls
    assert (tmp_path / "timing.cache").read_bytes() == b"previous+"


def test_trt10_fp32_sets_no_precision_flag(tmp_path: Path) -> None:
    trt = make_fake_trt("10.8.0.43")
    plan, _ = build(trt, request_for(tmp_path, "fp32"))
    assert plan["flags"] == []


def test_trt11_builds_a_strongly_typed_fp16_onnx_without_flags(tmp_path: Path) -> None:
    trt = make_fake_trt("11.0.0.1")
    plan, reports = build(trt, request_for(tmp_path, "fp16"))
    assert plan["flags"] == [] and "config.set_flag" not in names(trt)
    assert ("create_network", 0) in trt.calls  # 11 is always strongly typed
    assert plan["fp16_weights"] is True  # the parsed model is our fp16 conversion
    parsed = [d for n, d in trt.calls if n == "OnnxParser.parse_from_file"][0]
    assert parsed.endswith("model-fp16.onnx")
    assert reports[0][0] == "convert"
    assert [i["dtype"] for i in plan["inputs"]] == ["FLOAT"]  # I/O stays fp32 for the adapters


def test_trt11_refuses_int8_calibration(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="Q/DQ"):
        build(make_fake_trt("11.1.0"), request_for(tmp_path, "int8"))


def test_int8_without_calibration_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EngineBuildError, match="--calib-dir"):
        build(make_fake_trt("10.3.0.30"), request_for(tmp_path, "int8"))


@pytest.mark.parametrize("version", ["8.6.1.6", "10.3.0.30"])
def test_int8_reuses_a_saved_calibration_cache(tmp_path: Path, version: str) -> None:
    request = request_for(tmp_path, "int8")
    Path(request.calib_cache).write_bytes(b"saved-calibration")
    trt = make_fake_trt(version)
    plan, _ = build(trt, request)
    assert plan["flags"] == ["FP16", "INT8"]
    assert "config.int8_calibrator" in names(trt) and "config.set_calibration_profile" in names(trt)
    assert Path(request.calib_cache).read_bytes() == b"saved-calibration"


def test_parser_errors_name_the_model(tmp_path: Path) -> None:
    model = recognizer_model(tmp_path / "bad.onnx", op="Relu")
    import onnx

    m = onnx.load(str(model))
    m.graph.node[1].op_type = "UnsupportedOp"
    model.write_bytes(m.SerializeToString())
    with pytest.raises(EngineBuildError, match="cannot parse.*UnsupportedOp"):
        build(make_fake_trt("10.3.0.30"), request_for(tmp_path, model=model))


def test_profile_names_must_match_the_network(tmp_path: Path) -> None:
    request = request_for(tmp_path)
    request.profile[0]["name"] = "data"
    with pytest.raises(EngineBuildError, match="'data'"):
        build(make_fake_trt("10.3.0.30"), request)


# -- the child process ---------------------------------------------------------------------


def child_script(tmp_path: Path, body: str) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(
        "import json, os, signal, sys, time\n"
        "def say(**e):\n    print(json.dumps(e), flush=True)\n" + textwrap.dedent(body)
    )
    return [sys.executable, str(script)]


def test_a_crashing_builder_is_reported_and_the_parent_survives(tmp_path: Path) -> None:
    command = child_script(
        tmp_path,
        """
        say(event="progress", phase="build", message="tactics", fraction=0.3)
        sys.stderr.write("Segmentation fault in libnvinfer\\n"); sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    """,
    )
    seen = []
    with pytest.raises(EngineBuildError, match=r"crashed \(SIGSEGV\).*libnvinfer"):
        run_build(request_for(tmp_path), timeout_s=60, progress=seen.append, command=command)
    assert [(p.phase, p.fraction) for p in seen if p.message == "tactics"] == [("build", 0.3)]


def test_a_hanging_builder_is_killed_at_the_timeout(tmp_path: Path) -> None:
    command = child_script(
        tmp_path,
        """
        say(event="progress", phase="build", message="started", fraction=0.0)
        sys.stdin.read() if False else time.sleep(600)
    """,
    )
    seen = []
    with pytest.raises(EngineBuildError, match="longer than 2 s"):
        run_build(request_for(tmp_path), timeout_s=2, heartbeat_s=0.3, progress=seen.append, command=command)
    assert any(p.message == "still building" for p in seen)  # heartbeats for the watchdog


def test_a_builder_error_message_is_passed_through(tmp_path: Path) -> None:
    command = child_script(
        tmp_path,
        """
        say(event="error", message="rec: TensorRT could not build an engine")
        sys.exit(2)
    """,
    )
    with pytest.raises(EngineBuildError, match="could not build an engine"):
        run_build(request_for(tmp_path), timeout_s=60, command=command)


def test_exit_without_engine_is_an_error(tmp_path: Path) -> None:
    command = child_script(tmp_path, "say(event='done', seconds=0)\n")
    with pytest.raises(EngineBuildError, match="status 0 without an engine"):
        run_build(request_for(tmp_path), timeout_s=60, command=command)


@pytest.mark.parametrize("version", ["8.6.1.6", "10.3.0.30", "11.0.0.1"])
def test_real_child_builds_with_a_fake_tensorrt_module(tmp_path: Path, version: str) -> None:
    """`python -m streamswap.inference.trt_build` end to end, `import tensorrt` resolving
    to the fake of `version` in the child."""
    fake_dir = tmp_path / "fake_site"
    fake_dir.mkdir()
    (fake_dir / "tensorrt.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS_DIR)!r})\n"
        "from test_trt_fake import make_fake_trt\n"
        f"sys.modules[__name__] = make_fake_trt({version!r})\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(fake_dir), os.environ.get("PYTHONPATH", "")]))
    model = recognizer_model(tmp_path / "models" / "rec.onnx")
    cache = EngineCache(tmp_path / "engines")
    request = EngineRequest(model, "fp16", profile_from_inputs(onnx_inputs(model), 4))
    device = DeviceInfo(0, "Fake Orin", "8.7")
    seen = []
    path = ensure_engine(request, cache, trt_version=version, device=device, progress=seen.append, build_env=env)
    plan = json.loads(path.read_bytes())
    assert plan["version"] == version
    assert plan["flags"] == ([] if version.startswith("11") else ["FP16"])
    assert {p.phase for p in seen} >= {"parse", "build"}
    assert cache.timing_cache_path("Fake Orin", "8.7", version).exists()
    sidecar = json.loads(cache.sidecar_path(path).read_text())
    assert sidecar["key"]["trt_version"] == version and sidecar["key"]["precision"] == "fp16"
