"""Doctor checks as library code, with a fake /sys and /dev for the v4l2loopback probe."""

from __future__ import annotations

from pathlib import Path

import pytest
from ort_fakes import GpuBuildWithoutGpu

from streamswap.config import Config
from streamswap.doctor import FAIL, MISSING, OK, WARN, Check, essentials_ok, run_checks
from streamswap.models.settings import ModelsSettings
from streamswap.models.store import ModelStore


def fake_sys(tmp_path: Path, devices: dict[str, str]) -> tuple[Path, Path]:
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    dev_root.mkdir(parents=True)
    for node, label in devices.items():
        folder = sys_root / "class" / "video4linux" / node
        folder.mkdir(parents=True)
        (folder / "name").write_text(label + "\n")
        (dev_root / node).write_bytes(b"")
    return sys_root, dev_root


def checks_for(tmp_path: Path, devices: dict[str, str], config: Config | None = None) -> dict[str, Check]:
    config = config or Config(models=ModelsSettings(dir=str(tmp_path / "models")))
    sys_root, dev_root = fake_sys(tmp_path, devices)
    checks = run_checks(config, store=ModelStore(config.models), sys_root=sys_root, dev_root=dev_root)
    return {c.name: c for c in checks}


def test_loopback_devices_are_found_by_name(tmp_path: Path) -> None:
    checks = checks_for(
        tmp_path, {"video0": "Integrated Camera", "video10": "Dummy video device (0x0000)", "video11": "streamswap"}
    )
    v4l2 = checks["v4l2loopback"]
    assert v4l2.status == OK
    assert str(tmp_path / "dev" / "video10") in v4l2.detail and "video0" not in v4l2.detail
    assert str(tmp_path / "dev" / "video11") in v4l2.detail


def test_no_loopback_device_says_how_to_add_one(tmp_path: Path) -> None:
    checks = checks_for(tmp_path, {"video0": "Integrated Camera"})
    v4l2 = checks["v4l2loopback"]
    assert v4l2.status == MISSING and v4l2.fix is not None and "modprobe v4l2loopback" in v4l2.fix


def test_essentials_pass_here_and_every_check_has_a_known_status(tmp_path: Path) -> None:
    checks = checks_for(tmp_path, {})
    assert all(c.status in (OK, WARN, MISSING, FAIL) for c in checks.values())
    assert all(c.fix for c in checks.values() if c.status in (WARN, MISSING, FAIL))
    assert essentials_ok(checks.values()), [c for c in checks.values() if c.status == FAIL]
    assert checks["models dir"].status == OK and str(tmp_path / "models") in checks["models dir"].detail
    for name in ("python", "pyav", "onnxruntime", "cuda", "tensorrt", "engine cache", "h264_nvenc"):
        assert name in checks


def test_a_bad_model_file_the_config_uses_fails(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "gfpgan_1.4.onnx").write_bytes(b"not gfpgan")
    config = Config(models=ModelsSettings(dir=str(models)))
    assert checks_for(tmp_path / "a", {}, config)["model gfpgan_1.4"].status == WARN  # unused: warn
    config.faces.enhancer = "gfpgan_1.4"
    bad = checks_for(tmp_path / "b", {}, config)["model gfpgan_1.4"]
    assert bad.status == FAIL and "fails verification" in bad.detail
    assert bad.fix == "delete it and run: streamswap models fetch gfpgan_1.4"
    assert not essentials_ok([bad])


@pytest.mark.parametrize("raises", [True, False], ids=["fails-to-start", "left-out"])
def test_a_provider_that_is_offered_but_cannot_start_is_not_reported_usable(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    raises: bool,
) -> None:
    from streamswap.inference import ort as ort_backend

    monkeypatch.setattr(ort_backend, "_import_ort", lambda: GpuBuildWithoutGpu(raises))
    auto = checks_for(tmp_path / "auto", {})["onnxruntime"]
    assert auto.status == WARN, auto
    assert "usable providers: cpu;" in auto.detail and "offered but not starting: cuda (" in auto.detail
    assert ("no CUDA-capable device" in auto.detail) == raises
    assert auto.fix and "NVIDIA driver" in auto.fix
    config = Config(models=ModelsSettings(dir=str(tmp_path / "models")))
    config.inference.provider = "cuda"
    explicit = checks_for(tmp_path / "cuda", {}, config)["onnxruntime"]
    assert explicit.status == FAIL and "inference.provider is 'cuda'" in explicit.detail
    assert explicit.fix and "inference.provider: auto" in explicit.fix
    assert not essentials_ok([explicit])


def test_onnxruntime_reports_the_cpu_usable(tmp_path: Path) -> None:
    check = checks_for(tmp_path, {})["onnxruntime"]
    assert check.status == OK and "usable providers: cpu" in check.detail


def test_both_onnxruntime_builds_installed_is_a_warning_with_the_fix() -> None:
    from importlib import metadata

    from streamswap.doctor import _onnxruntime_builds

    versions = {"onnxruntime": "1.20.1", "onnxruntime-gpu": "1.20.1"}

    def lookup(dist: str) -> str:
        if dist not in versions:
            raise metadata.PackageNotFoundError(dist)
        return versions[dist]

    (check,) = _onnxruntime_builds(lookup)
    assert check.status == WARN and "onnxruntime 1.20.1, onnxruntime-gpu 1.20.1" in check.detail
    assert check.fix and "pip uninstall -y onnxruntime && pip install --force-reinstall onnxruntime-gpu" in check.fix
    del versions["onnxruntime"]
    assert _onnxruntime_builds(lookup) == []
    assert _onnxruntime_builds() == []  # this machine: the CPU build alone


def test_cuda_check_imports_cuda_python_as_the_backend_does(monkeypatch: pytest.MonkeyPatch) -> None:
    """doctor and the TensorRT backend agree on whether cuda-python is there (one import,
    which also knows cuda-python 12.0-12.5's module path)."""
    import types

    import streamswap.inference.cuda as cuda_mod
    from streamswap.doctor import _cuda
    from streamswap.errors import BackendUnavailable

    class Runtime:
        def cudaGetDeviceCount(self):
            return 0, 1

        def cudaDriverGetVersion(self):
            return 0, 12040

        def cudaGetDeviceProperties(self, index):
            return 0, types.SimpleNamespace(name=b"Fake GPU\0\0", major=8, minor=7, totalGlobalMem=8 * 2**30)

    monkeypatch.setattr(cuda_mod, "import_cudart", Runtime)
    (check,) = _cuda()
    assert check.status == OK and check.detail == "driver CUDA 12.4; 0: Fake GPU (sm_87, 8 GiB)"

    def not_installed():
        raise BackendUnavailable("cuda-python is not installed")

    monkeypatch.setattr(cuda_mod, "import_cudart", not_installed)
    (check,) = _cuda()
    assert check.status == MISSING and "cuda-python not installed" in check.detail
