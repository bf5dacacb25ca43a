"""A real Triton Inference Server for the tests (PyTriton's bundled tritonserver, CPU).

The server runs in its own venv (`.venv-triton`, made by `scripts/install.sh --dev` from the
system's /usr/bin/python3): PyTriton's Python-backend stub loads the system libpython, so
the server's interpreter must be that one (a pyenv 3.11 fails inside the stub). The test
process talks to it with tritonclient from the main venv.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from conftest import require

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
SERVER_SCRIPT = TESTS / "triton_server.py"
SERVER_VENV_ENV = "STREAMSWAP_TRITON_VENV"
# The header that carries the server's access token for its statistics (gRPC form).
TOKEN_HEADER = "triton-grpc-protocol-triton-access-token"


def server_python() -> Path | None:
    """The server venv's interpreter: $STREAMSWAP_TRITON_VENV, this checkout's .venv-triton,
    or the one beside the venv running the tests (a worktree sharing a venv)."""
    candidates = [os.environ.get(SERVER_VENV_ENV), REPO / ".venv-triton", Path(sys.prefix).parent / ".venv-triton"]
    for venv in candidates:
        if venv and (Path(venv) / "bin" / "python").exists():
            return Path(venv) / "bin" / "python"
    return None


def free_ports(n: int) -> list[int]:
    """`n` ports free on 127.0.0.1 now (tritonserver takes numbers, not port 0)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class TritonServer:
    """A tritonserver process serving ONNX files through ONNX Runtime, restartable on the
    same ports (to test a server lost mid-run)."""

    def __init__(
        self, models: dict[str, Path], workdir: Path, *, queue_delay_us: int = 4000, max_batch: int = 8
    ) -> None:
        python = server_python()
        require(
            python is not None,
            "the Triton server venv .venv-triton (scripts/install.sh --dev makes it: "
            "/usr/bin/python3 -m venv .venv-triton && .venv-triton/bin/pip install nvidia-pytriton onnxruntime)",
        )
        self.python = python
        self.models = dict(models)
        self.workdir = workdir
        self.queue_delay_us = queue_delay_us
        self.max_batch = max_batch
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.token = secrets.token_hex(16)  # statistics need it: tests the clients' headers

    @property
    def headers(self) -> dict[str, str]:
        return {TOKEN_HEADER: self.token}

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 120.0) -> None:
        self.starts += 1
        log = self.workdir / f"server-{self.starts}.log"
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
        for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(key, None)
        args: Sequence[str] = [
            str(self.python),
            str(SERVER_SCRIPT),
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--queue-delay-us",
            str(self.queue_delay_us),
            "--max-batch",
            str(self.max_batch),
            "--token",
            self.token,
            *[f"{name}={path}" for name, path in self.models.items()],
        ]
        with open(log, "w") as out:
            # Its own process group: tritonserver and the backend stubs are its children.
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Triton server exited ({self.proc.returncode}):\n{log.read_text()[-3000:]}")
            if "READY" in log.read_text():
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Triton server not ready after {timeout}s:\n{log.read_text()[-3000:]}")

    def kill(self) -> None:
        """Lose the server at once (SIGKILL to its whole process group)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def counts(self, model: str) -> tuple[int, int]:
        """(inference count, execution count) of `model` since the server started: requests'
        batch items, and model executions (one per dynamically formed batch)."""
        import tritonclient.grpc as grpcclient

        client = grpcclient.InferenceServerClient(self.grpc_url)
        stats = client.get_inference_statistics(model, as_json=True, headers=self.headers)["model_stats"][0]
        return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))
