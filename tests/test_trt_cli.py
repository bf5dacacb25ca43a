"""`streamswap engines list|clear|build` and `streamswap bench engines` on a machine without
a GPU/TensorRT: listing still works, building and benchmarking refuse in one line."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from conftest import cuda_available
from streamswap.cli import main
from streamswap.config import load_config
from test_trt_cache import make_key


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


def test_list_without_gpu_says_so_and_lists_entries(tmp_path: Path, no_gpu_stack: None,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
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


def test_build_without_tensorrt_is_one_clear_line(tmp_path: Path, no_gpu_stack: None,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = config_file(tmp_path)
    assert main(["-c", str(cfg), "engines", "build", "--precision", "fp16"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TensorRT is not installed" in err[0] and "inference.backend: ort" in err[0]


def test_bench_engines_without_gpu_is_one_line_and_non_zero(no_gpu_stack: None,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
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
