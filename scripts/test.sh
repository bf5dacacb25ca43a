#!/usr/bin/env bash
# Runs the whole check: installs what it needs (system packages, .venv), then lint
# (ruff check), formatting (ruff format --check), types (mypy; strict on pipeline/,
# inference/, faces/ — see pyproject.toml) and the test suite (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
.venv/bin/ruff check streamswap tests
.venv/bin/ruff format --check streamswap tests
.venv/bin/mypy
exec .venv/bin/python -m pytest -q "$@"
