"""A real RTMP server for tests: nginx with the RTMP module on 127.0.0.1, own config in a tmp dir.

Debian/Ubuntu: `apt-get install nginx libnginx-mod-rtmp` (scripts/install.sh --dev does it).
Use the `rtmp_server` fixture (import it into the test module); under CI=true a missing
nginx or module fails the test instead of skipping it. The server never outlives the test:
the fixture stops it, and an atexit hook kills any left behind.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import require

MODULE_CANDIDATES = (
    "/usr/lib/nginx/modules/ngx_rtmp_module.so",  # Debian/Ubuntu libnginx-mod-rtmp
    "/usr/lib64/nginx/modules/ngx_rtmp_module.so",
    "/usr/local/nginx/modules/ngx_rtmp_module.so",
)

CONFIG = """
load_module {module};
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 64; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{
            live on;
            record off;
            wait_key on;
            wait_video on;
        }}
    }}
}}
"""

_running: set[int] = set()  # process-group ids still alive (for the atexit safety net)


def rtmp_module() -> str | None:
    """The path of ngx_rtmp_module.so, if installed."""
    return next((p for p in MODULE_CANDIDATES if Path(p).is_file()), None)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RtmpServer:
    """One nginx-rtmp instance; `kill()` simulates a crash, `start()` brings it back on the same port."""

    def __init__(self, root: Path, nginx: str, module: str) -> None:
        self.root = root
        self.nginx = nginx
        self.port = _free_port()
        self.config = root / "nginx.conf"
        self.config.write_text(CONFIG.format(module=module, root=root, port=self.port))
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, key: str = "test") -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"

    def start(self, timeout: float = 10.0) -> None:
        assert self._proc is None, "already running"
        self._proc = subprocess.Popen(
            [self.nginx, "-p", str(self.root), "-c", str(self.config), "-e", str(self.root / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        _running.add(self._proc.pid)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # no readiness event from nginx: poll the port
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode(errors="replace") if self._proc.stderr else ""
                self._forget()
                raise RuntimeError(f"nginx exited at start: {err.strip()} (log: {self.root / 'error.log'})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"nginx-rtmp did not listen on port {self.port} within {timeout}s")

    def kill(self) -> None:
        """Crash the server: SIGKILL to master and workers (connections reset)."""
        self._signal(signal.SIGKILL)

    def freeze(self) -> None:
        """Stop reading: SIGSTOP to master and workers. Connections stay open, nothing is
        read, so a client's socket buffers fill and its writes block (a frozen server)."""
        assert self._proc is not None, "not running"
        os.killpg(self._proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Shut down (fast) and reap."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        proc = self._proc
        if proc is None:
            return
        self.thaw()  # a frozen server would not act on the signal
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # Workers share the group; make sure none is left holding the port.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._forget()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # a dying worker may still accept for a moment
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
            except OSError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"port {self.port} still accepts connections after stopping nginx")

    def _forget(self) -> None:
        if self._proc is not None:
            _running.discard(self._proc.pid)
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None


@atexit.register
def _kill_leftovers() -> None:
    for pgid in list(_running):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def rtmp_server(tmp_path: Path):
    """A started nginx-rtmp server on a free 127.0.0.1 port; stopped after the test."""
    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).is_file()), None
    )
    module = rtmp_module()
    require(bool(nginx and module), "nginx with the RTMP module (apt-get install nginx libnginx-mod-rtmp)")
    root = tmp_path / "nginx"
    root.mkdir()
    server = RtmpServer(root, nginx, module)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()
