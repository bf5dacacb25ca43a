#!/usr/bin/env bash
# The device check for a machine with an NVIDIA GPU (≤ 8 minutes on a fresh one): the
# `gpu`-marked tests, every image kernel compiled for the real device (not the simulator),
# and the GPU frame-path benchmark. Needs a CUDA driver, cuda-python (cuda.bindings) and
# numba + numba-cuda; the parts that need TensorRT skip with the reason where it is absent.
#   scripts/gpu-check.sh                   with the python3 on PATH
#   PYTHON=.venv/bin/python WHEELS=.whl scripts/gpu-check.sh   offline: install from wheels
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
unset NUMBA_ENABLE_CUDASIM CI   # real kernels; a missing optional part skips here

if ! "$PY" -c 'import numpy, cv2, av, onnx, onnxruntime, yaml, numba.cuda, cuda.bindings, pytest' 2>/dev/null; then
  echo "gpu-check: installing what is missing${WHEELS:+ from $WHEELS}"
  pip_args=(-q)
  [ -n "${WHEELS:-}" ] && pip_args+=(--no-index --find-links "$WHEELS")
  "$PY" -m pip install "${pip_args[@]}" numpy opencv-python av onnx onnxruntime PyYAML prometheus-client \
    numba numba-cuda cuda-python pytest pytest-timeout
fi
"$PY" - <<'PY'
from streamswap.inference.cuda import open_cuda
info = open_cuda(0).info()
print(f"gpu-check: {info.name} (compute {info.compute_capability})")
PY

status=0
echo "== kernels on the device, the device frame path, CUDA plumbing, TensorRT, ONNX Runtime's CUDA provider (each skips without it)"
timeout 360 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" -rs \
  tests/test_ops_kernels.py tests/test_gpu_device.py tests/test_cuda.py tests/test_trt_gpu.py tests/test_ort_gpu.py || status=$?
echo "== streamswap bench gpu (1080p, one face; stand-in networks of 3 ms)"
timeout 120 "$PY" -m streamswap bench gpu --frames 300 || status=$?
echo "== the same with the mouth mask and the LAB colour transfer (on the device)"
timeout 60 "$PY" -m streamswap bench gpu --frames 150 --mouth-mask --color-correction || status=$?
exit $status
