"""systemd's notify protocol in plain Python: datagrams of `KEY=VALUE` lines sent to the
AF_UNIX socket named by $NOTIFY_SOCKET (a path, or '@name' for an abstract socket).

Outside systemd (no $NOTIFY_SOCKET) every call is a cheap no-op, so the daemon code can
notify unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Mapping

from streamswap.logs import kv

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Sends sd_notify messages; thread-safe, never raises."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "SystemdNotifier":
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def _target(self) -> str | bytes:
        assert self.address is not None
        if self.address.startswith("@"):  # abstract namespace: leading NUL byte
            return b"\0" + self.address[1:].encode()
        return self.address

    def notify(self, *lines: str) -> bool:
        """Send one datagram holding `lines`; False when not under systemd or on error."""
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._target())
                return True
            except OSError as exc:
                if not self._warned:  # once: a missing socket would flood the journal
                    self._warned = True
                    log.warning("systemd notify failed", extra=kv(socket=self.address, error=exc))
                return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # systemd ≥ 253 matches a reload to this timestamp (CLOCK_MONOTONIC, µs); older
        # versions ignore the field.
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask systemd for `seconds` more start-up (or stop) time from now, e.g. while a
        TensorRT engine builds. Call it again before that time is up."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(1, int(seconds * 1e6))}")

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when systemd
    asks for none or the watchdog is meant for another process ($WATCHDOG_PID)."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2e6
