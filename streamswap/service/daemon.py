"""The long-running daemon behind `streamswap serve`, in parts:

- `plan_reload(old, new)` (pure): what a re-read config changes live and what needs a
  restart;
- `supervisor.PipelineSupervisor`: keeps one pipeline running with the face stages loaded
  once (opens it off the main thread, re-opens it with back-off when its input is lost
  for good);
- `Daemon`: signals (SIGTERM/SIGINT stop, SIGHUP reloads), loading the stages, systemd
  notify (READY=1 after the first frame is out, STATUS=, WATCHDOG=1 only while frames
  advance, STOPPING=1), and the control facade the API drives (`DaemonControl`: health,
  status, set_source_image, pause, resume, reload), which only delegates: identities to
  the stages, pause to the pipeline, re-opens to the supervisor.

The daemon builds nothing itself: `commands/serve.py` gives it the factories (it imports
no wiring).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import select
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from streamswap.errors import ConfigError, StreamswapError
from streamswap.logs import kv
from streamswap.redact import redact_uri
from streamswap.service.api import ControlApi
from streamswap.service.control import PeopleControl, PipelineControl, StageSet
from streamswap.service.metrics import Metrics
from streamswap.service.notify import SystemdNotifier, watchdog_interval
from streamswap.service.settings import TOKEN_ENV, ServiceSettings
from streamswap.service.supervisor import PipelineSupervisor

log = logging.getLogger(__name__)


# (config, extend_timeout) -> the loaded face stages; extend_timeout(seconds, what=None)
# asks systemd for more start-up time and is meant for long steps such as engine builds.
StagesFactory = Callable[[Any, Callable[..., None]], StageSet]
# (config, stages, observers) -> a pipeline over the configured input and outputs, not
# yet started; raises StreamswapError when they cannot even be built.
PipelineFactory = Callable[[Any, StageSet, Sequence[Any]], PipelineControl]
# (config) -> None: checks the configured endpoints without opening them (every problem
# at once, as one StreamswapError).
EndpointCheck = Callable[[Any], None]


# Each engine-build report (the builder sends a heartbeat every few seconds while a
# TensorRT engine builds) buys this much more start-up time from systemd.
ENGINE_BUILD_EXTEND_S = 90.0
# GET /health/live fails when the main loop (which wakes at least once a second) has not
# turned for this long: the daemon itself is wedged, not just a stage.
LIVENESS_S = 10.0


# How long a reload may take to read and check its config file (it is bounded in size and
# parsed by config.safeyaml, so this is far more than a real one needs).
RELOAD_DEADLINE_S = 5.0
# Seconds a stopping pipeline may take to drain its frames in flight and finalise its
# outputs: at shutdown (SIGTERM), and when a reload re-opens it.
SHUTDOWN_DRAIN_S = 5.0
RELOAD_DRAIN_S = 2.0


def load_within(load: Callable[[], Any], seconds: float) -> Any:
    """`load()` on a helper thread; ConfigError if it has not returned within `seconds`
    (the thread is left to finish on its own; its result is ignored)."""
    result: list[Any] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            result.append(load())
        except BaseException as exc:  # re-raised in the caller
            failed.append(exc)

    worker = threading.Thread(target=work, name="streamswap-reload-parse", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise ConfigError(f"the config did not load within {seconds:g} s; keeping the running configuration")
    if failed:
        raise failed[0]
    return result[0]


# What a reload can apply live, and what needs a restart of the service.
_PIPELINE_KEYS = ("input", "outputs", "io", "pipeline")
_RESTART_KEYS = ("models", "inference", "faces")


@dataclass(frozen=True)
class ReloadPlan:
    """What a reload from one config to the next does (see `plan_reload`)."""

    sources: tuple[str, ...] | None = None  # new source photos to prepare, or None
    pipeline: tuple[str, ...] = ()  # changed keys that re-open the pipeline
    service: bool = False  # service timings change (applied by taking the new config)
    restart: tuple[str, ...] = ()  # changed keys that need a restart of the service

    @property
    def reopen_pipeline(self) -> bool:
        return bool(self.pipeline)


def plan_reload(old: Any, new: Any) -> ReloadPlan:
    """Compare two configs: what a reload applies live and what needs a restart. Pure.

    An emptied `source` keeps the identity in use (uploaded or configured); keys this
    function does not know are compared too and, when changed, need a restart."""
    known = {"source", "service", *_PIPELINE_KEYS, *_RESTART_KEYS}
    fields = [f.name for f in dataclasses.fields(old)] if dataclasses.is_dataclass(old) else sorted(known)
    changed = {k for k in fields if getattr(old, k, None) != getattr(new, k, None)}
    restart = [k for k in _RESTART_KEYS if k in changed]
    restart += sorted(k for k in changed - known)
    service = "service" in changed
    if service and (old.service.api, old.service.token) != (new.service.api, new.service.token):
        restart.append("service.api/token")
    sources = tuple(new.source) if "source" in changed and new.source else None
    return ReloadPlan(
        sources=sources,
        pipeline=tuple(k for k in _PIPELINE_KEYS if k in changed),
        service=service,
        restart=tuple(restart),
    )


class Daemon:
    """Runs until `request_stop()` (or SIGTERM/SIGINT when run in the main thread)."""

    def __init__(
        self,
        config: Any,
        load_config: Callable[[], Any],
        *,
        build_stages: StagesFactory,
        make_pipeline: PipelineFactory,
        check_endpoints: EndpointCheck,
        notifier: SystemdNotifier | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._load_config = load_config
        self.reload_deadline_s = RELOAD_DEADLINE_S
        self._build_stages = build_stages
        self._make_pipeline = make_pipeline
        self._check_endpoints = check_endpoints
        self._env = os.environ if environ is None else environ
        self.notifier = notifier or SystemdNotifier.from_env(self._env)
        self._clock = clock
        self.metrics = Metrics()
        self.api: ControlApi | None = None
        self.page: Any = None  # service.ui.PageParts while the API serves the control page
        self.stages: StageSet | None = None
        self._phase = "created"  # created, loading, supervising, stopping, stopped
        self.ready = False
        self._lock = threading.RLock()  # one control call (reload, pause) at a time
        self._stop = threading.Event()
        self._reload_asked = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._last_frames = 0
        self._last_progress = clock()
        self._fatal: BaseException | None = None
        self.supervisor = PipelineSupervisor(
            self._new_pipeline,
            lambda: self.settings,
            wake=self._wake,
            fatal=self._give_up,
            on_restart=self.metrics.pipeline_restarts_total.inc,
        )
        self.started_at = clock()
        self._heartbeat = clock()  # the main thread's last turn (liveness)
        self._stop_reason = "stop requested"

    @property
    def settings(self) -> ServiceSettings:
        return self.config.service

    @property
    def state(self) -> str:
        """created, loading, then the supervisor's starting / running / waiting, then
        stopping, stopped."""
        return self.supervisor.phase if self._phase == "supervising" else self._phase

    @property
    def pipeline(self) -> PipelineControl | None:
        """The pipeline the supervisor keeps running (None before the first)."""
        return self.supervisor.pipeline

    # -- life cycle -------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; returns the exit code (0 after a clean stop)."""
        handlers = self._install_signals()
        try:
            self._check_endpoints(self.config)  # a typo fails now, not after minutes of engine builds
            self._phase = "loading"  # what the API answers from its first request
            if self.settings.api is not None:
                token = self.settings.token or self._env.get(TOKEN_ENV) or None
                from streamswap.service.faces_api import router as faces_router
                from streamswap.service.ui import PageParts

                # The control page (preview, events) is served with the API, on its address.
                self.page = PageParts(self.settings).start()
                self.api = ControlApi(
                    self.settings,
                    self,
                    self.metrics,
                    token,  # refuses early
                    routers=[faces_router, self.page.router],
                )
                self.api.start()
                log.info(f"control page: {self.api.url}/")
            self._load_stages()
            if self._stop.is_set():
                return 0
            self._phase = "supervising"
            self.supervisor.start()
            self._loop()
            return 0
        except BaseException as exc:
            self._stop_reason = f"error ({type(exc).__name__})"
            raise
        finally:
            self._shutdown()
            self._restore_signals(handlers)
            self._wake_r.close()
            self._wake_w.close()

    def request_stop(self) -> None:
        """Stop from any thread (SIGTERM does the same)."""
        self._stop.set()
        self._wake()

    def request_reload(self) -> None:
        """Reload from any thread, without waiting for it (SIGHUP does the same)."""
        self._reload_asked = True
        self._wake()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # buffer full: the loop is awake anyway
            pass

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def on_stop(signum: int, frame: Any) -> None:
            self._stop_reason = signal.Signals(signum).name
            self._stop.set()

        def on_reload(signum: int, frame: Any) -> None:
            self._reload_asked = True

        old: dict[int, Any] = {
            int(sig): signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        }
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_reload)
        # The handler runs only when the main thread gets to bytecode; the wakeup fd makes
        # the loop's select() return at once.
        old_fd = signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        old[-1] = old_fd  # -1: the previous wakeup fd, restored with the handlers
        return old

    def _restore_signals(self, old: dict[int, Any]) -> None:
        if not old:
            return
        signal.set_wakeup_fd(old.pop(-1))
        for sig, handler in old.items():
            signal.signal(sig, handler)

    def _load_stages(self) -> None:
        """Build the face stages (models, engines) off the main thread so SIGTERM and the
        API stay responsive during a long engine build."""
        self._phase = "loading"
        self.notifier.status("loading models")
        log.info("loading face stages")
        result: dict[str, Any] = {}
        config = self.config

        def load() -> None:
            try:
                stages = self._build_stages(config, self.extend_timeout)
                if config.source:  # the configured face(s); a photo without one is an error
                    self.notifier.status("computing the source identity")
                    stages.set_source_images(_paths(config.source))
                result["stages"] = stages
            except BaseException as exc:  # handed to the main thread
                result["error"] = exc
            finally:
                self._wake()

        thread = threading.Thread(target=load, name="streamswap-load", daemon=True)
        thread.start()
        while thread.is_alive() and not self._stop.is_set():
            self._wait(1.0)
            self._heartbeat = self._clock()
        if self._stop.is_set() and thread.is_alive():
            log.info("stop asked while loading; exiting")
            return
        if "error" in result:
            raise result["error"]
        with self._lock:
            self.stages = result["stages"]
            if self.config.source and self.config.source != config.source:  # reloaded while loading
                try:
                    self.stages.set_source_images(_paths(self.config.source))
                except StreamswapError as exc:
                    log.error("reloaded source face refused; keeping the first", extra=kv(error=str(exc)))

    def extend_timeout(self, seconds: float, what: str | None = None) -> None:
        """For long start-up steps (engine builds): tells systemd to wait `seconds` more.
        Only before READY=1: afterwards the watchdog, not the start timeout, applies."""
        if self.ready:
            return
        self.notifier.extend_timeout(seconds)
        self.notifier.status(f"building engines{': ' + what if what else ''}")

    def _new_pipeline(self) -> PipelineControl:
        """A pipeline over the configured input and outputs with the loaded stages (the
        supervisor opens it)."""
        assert self.stages is not None
        observers = [self.metrics] + ([self.page.tap] if self.page is not None else [])
        return self._make_pipeline(self.config, self.stages, observers)

    def _give_up(self, exc: BaseException) -> None:
        self._fatal = exc
        self.request_stop()

    def _loop(self) -> None:
        wd = watchdog_interval(self._env)
        status_every = self.settings.status_interval_s
        tick = min(status_every, wd) if wd else status_every
        tick = min(tick, 1.0)
        now = self._clock()
        next_ping = now + (wd or 0.0)
        frames_at_ping = 0
        next_status = now
        while not self._stop.is_set():
            retry_at = self.supervisor.retry_at
            retry_in = None if retry_at is None else max(retry_at - self._clock(), 0.0)
            self._wait(tick if retry_in is None else min(tick, retry_in))
            self._heartbeat = self._clock()
            if self._stop.is_set():
                break
            if self._reload_asked:
                self._reload_asked = False
                try:
                    self.reload()
                except StreamswapError as exc:
                    log.error("reload refused; keeping the running configuration", extra=kv(error=str(exc)))
            now = self._clock()
            frames = self._frames_out()
            if frames > self._last_frames:
                self._last_progress = now
                self._last_frames = frames
                self.supervisor.progressed()
                if not self.ready:
                    self.ready = True
                    self.metrics.ready.set(1)
                    self.notifier.ready(self._status_line())
                    log.info("ready: first frame out", extra=kv(seconds=round(now - self.started_at, 2)))
            if self._phase == "supervising":
                self.supervisor.supervise(now)
            if wd and now >= next_ping:
                # Only proof of progress feeds the watchdog: a hung stage stops the frames,
                # the pings stop and systemd restarts us. A deliberate wait before re-opening
                # a lost input is not a hang.
                if self.ready and (frames > frames_at_ping or self.state == "waiting"):
                    self.notifier.watchdog()
                frames_at_ping = frames
                next_ping = now + wd
            if now >= next_status:
                self.notifier.status(self._status_line())
                next_status = now + status_every
            if self.ready:
                self.metrics.ready.set(1 if self._fresh(now) else 0)
        if self._fatal is not None:
            raise self._fatal

    def _wait(self, timeout: float) -> None:
        try:
            readable, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            return
        if readable:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass

    def _shutdown(self) -> None:
        self._phase = "stopping"
        self.notifier.stopping("stopping")
        log.info("stopping", extra=kv(reason=self._stop_reason))
        try:
            self.supervisor.stop(SHUTDOWN_DRAIN_S)
        except Exception:
            log.exception("pipeline stop failed")
        if self.api is not None:
            self.api.close()
        if self.page is not None:
            self.page.close()
        self.metrics.ready.set(0)
        self._phase = "stopped"
        self.notifier.close()
        log.info("stopped")

    # -- readings ---------------------------------------------------------------------
    def _frames_out(self) -> int:
        try:
            return self.supervisor.frames_out()
        except Exception:
            return self._last_frames

    def _pipeline_status(self) -> dict[str, Any]:
        pipeline = self.pipeline
        return {} if pipeline is None else self.supervisor.status_of(pipeline)

    def _fresh(self, now: float) -> bool:
        return now - self._last_progress < self.settings.stall_s

    def _status_line(self) -> str:
        if self.pipeline is None:
            return self.state
        st = self._pipeline_status()
        lat = st.get("latency_ms_p50")
        parts = [
            f"{'paused' if st.get('paused') else st.get('state', self.state)}",
            f"fps {st.get('fps_out', 0.0):.1f}",
            f"latency p50 {lat:.0f} ms" if isinstance(lat, (int, float)) else "latency –",
            f"drops {st.get('dropped', 0)}",
        ]
        errors = sum((st.get("errors") or {}).values())
        if errors:
            parts.append(f"errors {errors}")
        output_drops = {k: v.get("dropped", 0) for k, v in (st.get("output_frames") or {}).items()}
        if any(output_drops.values()):
            parts.append("output drops " + " ".join(f"{k} {v}" for k, v in output_drops.items() if v))
        return ", ".join(parts)

    # -- DaemonControl (the API) ------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Readiness (frames left within `service.stall_s`) and the body of GET /health.
        `live` is the process's own liveness: the main loop turns (it wakes at least once
        a second) and the daemon is not shutting down; it stays true while models load
        and while a lost input is being re-opened, when `ready` is false."""
        now = self._clock()
        frames = self._frames_out()
        # The main loop notes progress once a tick; frames newer than its last look count now.
        since = 0.0 if frames > self._last_frames else round(now - self._last_progress, 3)
        stopping = self.state in ("stopping", "stopped")
        live = not stopping and now - self._heartbeat < LIVENESS_S
        ready = live and self.ready and (since == 0.0 or self._fresh(now))
        pipeline = self._pipeline_status()
        return ready, {
            "live": live,
            "ready": ready,
            "state": self.state,
            "pipeline": pipeline.get("state"),
            "degraded_stages": pipeline.get("degraded_stages", []),
            "frames_out": frames,
            "seconds_since_last_frame": since,
        }

    def status(self) -> dict[str, Any]:
        pipeline = self._pipeline_status() if self.pipeline is not None else {"state": self.state}
        return {
            **pipeline,
            "paused": self.paused,
            "daemon": {
                "state": self.state,
                "ready": self.ready,
                "pipeline_restarts": self.supervisor.restarts,
                "uptime_s": round(self._clock() - self.started_at, 1),
                "api": self.api.url if self.api else None,
                "config": {
                    "source": list(self.config.source),
                    "input": redact_uri(self.config.input),
                    "outputs": [redact_uri(uri) for uri in self.config.outputs],
                    "service": asdict(self.settings) | {"token": None},
                },
            },
        }

    def frames_out(self) -> int:
        return self._frames_out()

    @property
    def paused(self) -> bool:
        """The pipeline owns pause; between two pipelines the last one's state holds."""
        return self.supervisor.paused

    def _loaded(self) -> StageSet:
        if self.stages is None or self.state in ("loading", "created"):
            raise StreamswapError("the daemon is still loading its models; try again when /health says ready")
        return self.stages

    def people(self) -> PeopleControl | None:
        """The face stages' selection/mapping control, None before the stages are loaded
        or when they have none."""
        return None if self.stages is None else self.stages.people

    def set_source_image(self, image_bgr: Any) -> None:
        """Prepared off the hot path (the stages' identity worker), switched at the next
        frame boundary; the stages outlive pipelines, so this works between two as well."""
        self._loaded().set_source_images([image_bgr])
        log.info("source face replaced through the API")

    def pause(self) -> None:
        self._set_paused(True)

    def resume(self) -> None:
        self._set_paused(False)

    def _set_paused(self, paused: bool) -> None:
        with self._lock:
            pipeline = self.pipeline
            if pipeline is None:
                raise StreamswapError("the daemon is still loading its models; try again when /health says ready")
            pipeline.pause() if paused else pipeline.resume()
            self.metrics.paused.set(int(paused))

    def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply what can change live (see `plan_reload`): the
        source face(s) at the next frame boundary; input/outputs/io/pipeline by re-opening
        the pipeline with the loaded models; service timings. Model/face settings need a
        restart (reported). A config that fails to load leaves everything as it was."""
        # Parsed before taking the lock every control call needs, on its own thread with a
        # deadline: a config that cannot be read in time leaves the API, the pipeline, the
        # watchdog and SIGTERM answering, and everything as it was.
        new = load_within(self._load_config, self.reload_deadline_s)
        with self._lock:
            was_ready = self.ready  # RELOADING=1 … READY=1 only once READY=1 was sent
            if was_ready:
                self.notifier.reloading()
            try:
                plan = plan_reload(self.config, new)
                if plan.reopen_pipeline:
                    self._check_endpoints(new)  # a typo must not tear down the running pipeline
                applied: list[str] = []
                if plan.sources is not None and self.stages is not None:
                    self.stages.set_source_images(_paths(plan.sources))
                    applied.append("source")
                if plan.service:
                    applied.append("service")
                self.config = new
                if plan.reopen_pipeline and self.state != "loading":
                    self.supervisor.replace(RELOAD_DRAIN_S)
                    applied += list(plan.pipeline)
            finally:
                if was_ready:
                    self.notifier.ready(self._status_line())
        log.info(
            "config reloaded",
            extra=kv(applied=",".join(applied) or "-", restart_required=",".join(plan.restart) or "-"),
        )
        return {"applied": applied, "restart_required": list(plan.restart)}


def _paths(sources: Sequence[str]) -> list[Path]:
    return [Path(p).expanduser() for p in sources]
