"""PipelineSupervisor: keeps one pipeline running for the daemon.

It opens the pipeline on a helper thread (a network open can block), notices when it
ended (its input lost for good, or it never got going) and opens a new one with the same
loaded face stages after a back-off that doubles while it keeps failing. It keeps the
frame count monotonic across pipelines and carries a pause over to the next one. The
pipeline itself owns its state, pause and frame counts; the supervisor only reads them.

Thread-safety: every method takes the supervisor's lock; the daemon's control calls and
its main loop call in from different threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from streamswap.errors import ConfigError, StreamswapError
from streamswap.logs import kv
from streamswap.service.control import PipelineControl
from streamswap.service.settings import ServiceSettings

log = logging.getLogger(__name__)


class PipelineSupervisor:
    """Start, watch and re-open the pipeline `make()` builds (see the module docstring).

    `phase`: "idle" (never started), "starting", "running" or "waiting" (before a re-open).
    `wake()` is called whenever something happened that the daemon's loop should look at;
    `fatal(exc)` when the pipeline can never start (a bad URI will not heal by retrying)."""

    def __init__(
        self,
        make: Callable[[], PipelineControl],
        settings: Callable[[], ServiceSettings],
        *,
        wake: Callable[[], None],
        fatal: Callable[[BaseException], None],
        on_restart: Callable[[], None] = lambda: None,
    ) -> None:
        self._make = make
        self._settings = settings
        self._wake = wake
        self._fatal = fatal
        self._on_restart = on_restart
        self._lock = threading.RLock()
        self.pipeline: PipelineControl | None = None
        self.phase = "idle"
        self.restarts = 0
        self._failures = 0
        self.retry_at: float | None = None
        self._starter: threading.Thread | None = None
        self._started = False  # the current pipeline's start() returned
        self._frames_before = 0  # frames of earlier pipelines (frames_out stays monotonic)

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Build a pipeline and open it on a helper thread."""
        with self._lock:
            self.phase = "starting"
            self.retry_at = None
            paused = self.paused  # a re-opened pipeline keeps the old one's pause
            if self.pipeline is not None:  # keep frames_out monotonic across re-opens
                self._frames_before = self.frames_out()
            self._started = False
            try:
                pipeline = self._make()
            except StreamswapError as exc:  # e.g. the input file was removed meanwhile
                log.error("pipeline cannot start; will retry", extra=kv(error=str(exc)))
                self.pipeline = NotStarted(paused)
                return
            self.pipeline = pipeline

        def open_it() -> None:
            try:
                if paused:
                    pipeline.pause()
                pipeline.start()
                with self._lock:
                    if self.pipeline is pipeline:
                        self._started = True
                        if self.phase == "starting":
                            self.phase = "running"
                # Wake the daemon's loop the moment this pipeline ends.
                threading.Thread(
                    target=self._wake_when_done, args=(pipeline,), name="streamswap-watch", daemon=True
                ).start()
            except ConfigError as exc:  # a bad URI will not heal by retrying
                log.error("pipeline cannot start", extra=kv(error=str(exc)))
                self._fatal(exc)
            except StreamswapError as exc:
                log.error("pipeline cannot start; will retry", extra=kv(error=str(exc)))
            except Exception:
                log.exception("pipeline start crashed; will retry")
            finally:
                self._wake()

        self._starter = threading.Thread(target=open_it, name="streamswap-start", daemon=True)
        self._starter.start()

    def _wake_when_done(self, pipeline: PipelineControl) -> None:
        pipeline.wait()
        self._wake()

    def supervise(self, now: float) -> None:
        """Re-open the pipeline when it ended (input gone for good) or never got going:
        wait, doubling the delay while it keeps failing, then try again."""
        with self._lock:
            pipeline = self.pipeline
            if pipeline is None or (self._starter is not None and self._starter.is_alive()):
                return
            if self.phase == "waiting":
                self._retry(now)
                return
            if not (pipeline.finished or self.phase == "starting"):
                return
            status = self.status_of(pipeline)
            ran = status.get("frames_out", 0) > 0 and status.get("state") == "stopped"
            self._failures = 0 if ran else self._failures + 1
            s = self._settings()
            delay = 0.0 if ran else min(s.restart_delay_s * 2 ** max(self._failures - 1, 0), s.restart_max_delay_s)
            self.phase = "waiting"
            self.retry_at = now + delay
            if ran:  # an input that ended after streaming: start it again at once
                log.info("input ended; starting it again", extra=kv(input=status.get("input")))
            else:
                log.warning(
                    "pipeline ended; re-opening",
                    extra=kv(state=status.get("state"), delay_s=round(delay, 2), failures=self._failures),
                )
            self._retry(now)

    def _retry(self, now: float) -> None:
        if self.retry_at is not None and now >= self.retry_at:
            self.restarts += 1
            self._on_restart()
            if self._failures:
                log.info("re-opening the pipeline", extra=kv(attempt=self._failures))
            self.start()

    def progressed(self) -> None:
        """Frames are flowing: a later failure starts its back-off from the beginning."""
        with self._lock:
            if self.phase == "running":
                self._failures = 0

    def replace(self, timeout: float = 2.0) -> None:
        """Stop the pipeline and open a new one at once (a reload changed its endpoints)."""
        with self._lock:
            self.stop(timeout)
            self.start()

    def stop(self, timeout: float) -> None:
        """Stop the pipeline if it got going; one still opening is given `timeout` to
        finish, one that never started has nothing to drain."""
        with self._lock:
            pipeline, starter = self.pipeline, self._starter
        if pipeline is None:
            return
        if starter is not None and starter.is_alive():
            starter.join(timeout)
        if self._started:
            pipeline.stop(drain=True, timeout=timeout)

    # -- readings ---------------------------------------------------------------------
    @property
    def streaming(self) -> bool:
        """A pipeline was opened and has not ended."""
        pipeline = self.pipeline
        return pipeline is not None and self._started and not pipeline.finished

    @property
    def paused(self) -> bool:
        """The pipeline owns pause; between two pipelines the last one's state holds."""
        pipeline = self.pipeline
        return bool(pipeline is not None and self.status_of(pipeline).get("paused"))

    def frames_out(self) -> int:
        """Frames written by every pipeline so far (monotonic across re-opens)."""
        pipeline = self.pipeline
        if pipeline is None:
            return 0
        return int(pipeline.frames_out()) + self._frames_before

    @staticmethod
    def status_of(pipeline: PipelineControl) -> dict[str, Any]:
        try:
            return dict(pipeline.status())
        except Exception:
            log.exception("pipeline status failed")
            return {}


class NotStarted:
    """Stands in for a pipeline that could not even be built; the supervisor sees it as
    ended and schedules the next attempt with back-off."""

    finished = True

    def __init__(self, paused: bool) -> None:
        self._paused = paused  # carried to the next pipeline

    def start(self) -> None: ...
    def stop(self, drain: bool = True, timeout: float | None = None) -> None: ...

    def wait(self, timeout: float | None = None) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"state": "failed", "frames_out": 0, "paused": self._paused}

    def frames_out(self) -> int:
        return 0

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
