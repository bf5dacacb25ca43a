"""Download progress on a text stream: a live bar on a terminal, periodic lines otherwise
(journald and CI logs get a readable line every few seconds instead of carriage returns)."""

from __future__ import annotations

import time
from typing import Callable, Protocol, TextIO


class Progress(Protocol):
    """What a download reports while it runs."""

    def start(self, label: str, total: int | None, done: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def finish(self, ok: bool) -> None: ...


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f} MB"


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class StreamProgress:
    """Progress written to `stream` (stderr in the CLI): a bar if it is a TTY, else lines."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval_s: float | None = None,
        width: int = 28,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        # A terminal redraws ten times a second; a log gets a line every five seconds.
        self.interval_s = interval_s if interval_s is not None else (0.1 if self.tty else 5.0)
        self.width = width
        self.clock = clock
        self.label = ""
        self.total: int | None = None
        self.done = 0
        self._resumed_at = 0
        self._t0 = 0.0
        self._last = 0.0

    def start(self, label: str, total: int | None, done: int) -> None:
        self.label, self.total, self.done = label, total, done
        self._resumed_at = done
        self._t0 = self._last = self.clock()
        if not self.tty:
            resumed = f", resuming at {_mb(done)}" if done else ""
            size = _mb(total) if total else "unknown size"
            self._write(f"{label}: downloading {size}{resumed}\n")

    def advance(self, nbytes: int) -> None:
        self.done += nbytes
        now = self.clock()
        if now - self._last >= self.interval_s:
            self._last = now
            self._draw(now)

    def finish(self, ok: bool) -> None:
        now = self.clock()
        if self.tty:
            self._draw(now)
            self._write("\n")
        elif ok:
            elapsed = max(now - self._t0, 1e-9)
            rate = (self.done - self._resumed_at) / elapsed
            self._write(f"{self.label}: {_mb(self.done)} in {elapsed:.1f} s ({_mb(rate)}/s)\n")
        else:
            self._write(f"{self.label}: stopped at {_mb(self.done)}\n")

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.done - self._resumed_at) / elapsed
        if self.total:
            frac = min(self.done / self.total, 1.0)
            eta = _eta((self.total - self.done) / rate) if rate > 0 else "?"
            stats = f"{frac:6.1%} {_mb(self.done)}/{_mb(self.total)} {_mb(rate)}/s ETA {eta}"
        else:
            frac, stats = 0.0, f"{_mb(self.done)} {_mb(rate)}/s"
        if self.tty:
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            self._write(f"\r{self.label} [{bar}] {stats}\033[K")
        else:
            self._write(f"{self.label}: {stats}\n")

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
