#!/usr/bin/env bash
# Runs the whole test suite: installs what it needs (system packages, .venv), then pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
exec .venv/bin/python -m pytest -q "$@"
