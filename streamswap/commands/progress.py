"""What a running pipeline shows on the command line: an updating stats line (live runs)
or a progress bar with percent, fps and ETA (tqdm) when the frame count is known (files).
Without a terminal both become a log record every `log_every` seconds (10 by default), not
one per stats tick."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Callable

from streamswap.logs import kv

log = logging.getLogger(__name__)

# Seconds between progress/stats log records when stderr is not a terminal (a journal or
# a CI log): often enough to see that it moves, rarely enough to stay readable.
LOG_EVERY_S = 10.0


class StatsPrinter:
    """One updating line on a terminal, a log record every `log_every` seconds otherwise."""

    def __init__(
        self,
        stream: Any = None,
        render: Callable[[dict[str, Any]], str] | None = None,
        *,
        log_every: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if render is None:
            from streamswap.pipeline.stats import format_stats_line

            render = format_stats_line
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.render: Callable[[dict[str, Any]], str] = render
        self.log_every = log_every
        self._clock = clock
        self._last_log: float | None = None
        self._shown = False

    def show(self, snap: dict[str, Any]) -> None:
        if self.tty:
            self.stream.write("\r\033[K" + self.render(snap))
            self.stream.flush()
            self._shown = True
        elif self._due():
            self.log(snap)

    def _due(self) -> bool:
        now = self._clock()
        if self._last_log is not None and now - self._last_log < self.log_every:
            return False
        self._last_log = now
        return True

    def log(self, snap: dict[str, Any]) -> None:
        log.info("stats", extra=kv(**flat_stats(snap)))

    def done(self) -> None:
        if self._shown:
            self.stream.write("\n")
            self.stream.flush()
            self._shown = False


class ProgressPrinter(StatsPrinter):
    """A tqdm bar (percent, frames, fps, ETA, drops) on a terminal; a progress log record
    every `log_every` seconds otherwise. `total()` gives the frame count once the input is
    open (None: unknown, then it behaves as a StatsPrinter)."""

    def __init__(
        self,
        total: Callable[[], int | None],
        stream: Any = None,
        *,
        label: str = "run",
        log_every: float = LOG_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream, log_every=log_every, clock=clock)
        self._total_of = total
        self.label = label
        self._bar: Any = None
        self._started = clock()

    def show(self, snap: dict[str, Any]) -> None:
        total = self._total_of()
        if not total:
            super().show(snap)
            return
        done = min(snap["frames_out"], total)
        if self.tty:
            if self._bar is None:
                from tqdm import tqdm

                # Frames done before the first tick are its starting point, not a burst of
                # speed (the rate and ETA count from here). A terminal that reports no width
                # (a pty nobody sized) gets 100 columns rather than nothing.
                sized = _terminal_columns(self.stream) > 0
                self._bar = tqdm(
                    total=total,
                    initial=done,
                    unit="frame",
                    desc=self.label,
                    file=self.stream,
                    dynamic_ncols=sized,
                    ncols=None if sized else 100,
                    nrows=None if sized else 24,
                    smoothing=0.1,
                    leave=True,
                )
            self._bar.update(done - self._bar.n)
            extra = f"drops {snap['dropped']}"
            errors = sum(snap.get("errors", {}).values())
            if errors:
                extra += f", errors {errors}"
            self._bar.set_postfix_str(extra, refresh=True)
        elif self._due():
            elapsed = max(self._clock() - self._started, 1e-9)
            rate = snap["frames_out"] / elapsed
            eta = (total - done) / rate if rate > 0 else None
            log.info(
                "progress",
                extra=kv(
                    percent=round(100.0 * done / total, 1),
                    frames=f"{done}/{total}",
                    fps=round(rate, 1),
                    eta=format_duration(eta),
                    dropped=snap["dropped"],
                ),
            )

    def done(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        super().done()


def _terminal_columns(stream: Any) -> int:
    import os

    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return 0


def format_duration(seconds: float | None) -> str:
    """'1h02m03s', '4m05s', '12s'; '?' when unknown."""
    if seconds is None:
        return "?"
    s = int(round(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def flat_stats(snap: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one stats snapshot as flat key=value fields for a log record."""
    out = {
        k: snap[k]
        for k in ("frames_in", "frames_out", "dropped", "fps_in", "fps_out", "latency_ms_p50", "latency_ms_p95")
    }
    out.update({f"{k}_ms": v for k, v in snap.get("stage_ms", {}).items()})
    errors = sum(snap.get("errors", {}).values())
    if errors:
        out["errors"] = errors
    reconnects = sum(snap.get("reconnects", {}).values())
    if reconnects:
        out["reconnects"] = reconnects
    if snap.get("detect_every") is not None:  # the detector's period (adaptive on live inputs)
        out["detect_every"] = snap["detect_every"]
    return out
