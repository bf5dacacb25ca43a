#!/usr/bin/env bash
# Runs the whole check: installs what it needs (system packages, .venv), then lint
# (ruff check), formatting (ruff format --check), types (mypy; strict on pipeline/,
# inference/, faces/ — see pyproject.toml; and the calls of the gpu-marked tests) and the
# test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
.venv/bin/ruff check streamswap tests
.venv/bin/ruff format --check streamswap tests
.venv/bin/mypy
# The gpu-marked tests run only on a GPU machine (scripts/gpu-check.sh), never here: their
# calls into streamswap are type-checked instead (the helpers they import are not reported on).
.venv/bin/mypy --follow-imports=silent tests/test_cuda.py tests/test_gpu_device.py tests/test_ort_gpu.py tests/test_trt_gpu.py
exec .venv/bin/python -m pytest -q "$@"
