"""`streamswap engines list|clear|build` and `streamswap bench engines` on a machine without
a GPU/TensorRT: listing still works, building and benchmarking refuse in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import cuda_available
from test_trt_cache import make_key

from streamswap.cli import main
from streamswap.config import load_config


@pytest.fixture
def no_gpu_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    if cuda_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setitem(sys.modules, "tensorrt", None)


def config_file(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "engines"
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"inference:\n  engine_cache_dir: {cache}\n")
    return cfg, cache


def test_list_without_gpu_says_so_and_lists_entries(
    tmp_path: Path, no_gpu_stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamswap.inference.engine_cache import EngineCache

    cfg, cache_dir = config_file(tmp_path)
    assert main(["-c", str(cfg), "engines", "list"]) == 0
    out = capsys.readouterr().out
    assert "no TensorRT" in out and "no GPU" in out and "no engines cached" in out
    cache = EngineCache(cache_dir)
    built = tmp_path / "plan"
    built.write_bytes(b"engine")
    cache.store(make_key(), built, build_seconds=1)
    assert main(["-c", str(cfg), "engines", "list"]) == 0
    out = capsys.readouterr().out
    assert "✗ inswapper_128 fp16 TensorRT 10.3.0.30 Orin sm8.7" in out
    assert "no TensorRT here; no GPU here" in out
    assert main(["-c", str(cfg), "engines", "clear"]) == 0
    assert "removed 2 file(s)" in capsys.readouterr().out
    assert not list(cache_dir.glob("*.engine"))


def test_build_without_tensorrt_is_one_clear_line(
    tmp_path: Path, no_gpu_stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = config_file(tmp_path)
    assert main(["-c", str(cfg), "engines", "build", "--precision", "fp16"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT is not installed" in err[0] and "inference.backend: ort" in err[0]


def test_bench_engines_without_gpu_is_one_line_and_non_zero(
    no_gpu_stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "engines"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs an NVIDIA GPU with TensorRT" in err[0]


@pytest.mark.parametrize("name", ["desktop-gpu.yaml", "jetson-orin.yaml"])
def test_gpu_profiles_load(repo_root: Path, name: str) -> None:
    config = load_config(repo_root / "configs" / name)
    assert config.inference.backend == "tensorrt" and config.inference.engine_precision == "fp16"
    assert config.inference.fallback == ["cuda"]  # never a silent CPU run
    if name == "jetson-orin.yaml":
        assert config.inference.engine_cache_dir == "/var/cache/streamswap/engines"
        assert config.faces.tracking.detect_every > 1 and config.faces.detector.size < 640


def test_engines_built_ahead_are_the_ones_the_runtime_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`engines build` (fake TensorRT 10 in this process and in the builder child) writes
    exactly the engine that `open_session` with building disabled then loads."""
    import os

    from test_trt_build import TESTS_DIR, recognizer_model
    from test_trt_fake import FakeCudart, make_fake_trt

    from streamswap.inference import cuda as cuda_mod
    from streamswap.inference.backends import open_session
    from streamswap.inference.cuda import Cuda, GpuContext
    from streamswap.inference.tensorrt import TrtEnvironment

    fake_dir = tmp_path / "fake_site"
    fake_dir.mkdir()
    (fake_dir / "tensorrt.py").write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS_DIR)!r})\nfrom test_trt_fake import make_fake_trt\n"
        "sys.modules[__name__] = make_fake_trt('10.3.0.30')\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake_dir), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0.30"))
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart())
    model = recognizer_model(tmp_path / "my_arcface.onnx")
    cfg, cache_dir = config_file(tmp_path)
    cfg.write_text(cfg.read_text() + f"  max_batch: 6\n  backend: tensorrt\nmodels:\n  dir: {tmp_path / 'models'}\n")
    assert main(["-c", str(cfg), "engines", "build", str(model), "--contract", "arcface"]) == 0
    built = list(cache_dir.glob("*.engine"))
    assert len(built) == 1 and built[0].name.startswith("my_arcface-")
    assert "building 1 engine(s) for TensorRT 10.3.0.30 on Fake Orin" in capsys.readouterr().err

    config = load_config(cfg)
    env = TrtEnvironment(
        make_fake_trt("10.3.0.30"), "10.3.0.30", GpuContext(Cuda(FakeCudart())), Cuda(FakeCudart()).info()
    )
    settings = config.inference
    from dataclasses import replace

    session = open_session(model, replace(settings, build_engines=False), cache_dir, trt_env=env)
    assert session.backend == "tensorrt"
    assert session.run({"input.1": np.zeros((6, 3, 112, 112), np.float32)})["683"].shape == (6, 512)


def test_build_with_zero_max_faces_is_refused_not_ignored(
    tmp_path: Path, no_gpu_stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg, _ = config_file(tmp_path)
    assert main(["-c", str(cfg), "engines", "build", "--max-faces", "0"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-faces 0" in err[0] and "1 or more" in err[0]


def test_build_of_a_builtin_model_has_nothing_to_build(
    tmp_path: Path, no_gpu_stack: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`mesh` is code, not a model file: no engine, said so, exit 0 (even without TensorRT)."""
    cfg, _ = config_file(tmp_path)
    assert main(["-c", str(cfg), "engines", "build", "mesh"]) == 0
    assert capsys.readouterr().err.strip() == "nothing to build; mesh: built in (code, no model file), no engine"


def test_build_targets_are_the_models_the_pipeline_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """`engines build` with no names builds what the running pipeline loads: the mesh
    swapper opens no recognizer, so none is resolved (it need not even be downloaded)."""
    import argparse
    import types

    from streamswap.commands.engines import _targets
    from streamswap.models.store import ModelStore

    asked: list[str] = []

    def resolve(self: ModelStore, model: str, contract: str | None = None) -> types.SimpleNamespace:
        asked.append(model)
        return types.SimpleNamespace(spec=self.spec(model), path=Path(model + ".onnx"), sha256="0" * 64)

    monkeypatch.setattr(ModelStore, "resolve", resolve)
    args = argparse.Namespace(models=[], contract=None)
    mesh = _targets(args, load_config(None, {"faces.swapper.model": "mesh"}))
    assert asked == ["blazeface", "facemesh"] and [t.name for t in mesh] == asked
    asked.clear()
    _targets(args, load_config(None, {"faces.swapper.model": "inswapper_128"}))
    assert asked == ["blazeface", "facemesh", "arcface_w600k_r50", "inswapper_128"]
