"""The real-time pipeline: capture → detect → swap → output, one thread per stage.

Frames live in a fixed SlotPool; Rings carry slot indices and FrameMeta between the
threads. A live source never waits (the oldest unprocessed frame is dropped and
counted); a file source blocks and loses nothing. Frames always leave in order.

A stage that raises is logged with the frame index and the frame passes through
unswapped; consecutive failures of one stage turn the status "degraded". stop() stops
reading, lets the in-flight frames drain, then closes the sinks (files get their index).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from streamswap.errors import InputError, StreamswapError
from streamswap.io.base import AudioFormat, FrameMeta, Sink, Source, VideoFormat, check_frame_size
from streamswap.logs import kv
from streamswap.pipeline.ring import FrameItem, Ring, RingClosed
from streamswap.pipeline.settings import PipelineSettings
from streamswap.pipeline.slots import Allocator, SlotPool, SlotPoolClosed
from streamswap.pipeline.stages import FaceStages
from streamswap.pipeline.stats import PipelineObserver, Stats

log = logging.getLogger(__name__)

_AUDIO_ONLY = -1  # FrameItem.slot of an item that only carries trailing audio packets


class PassThroughStages:
    """FaceStages that find nothing and change nothing (no --source, tests, benchmarks)."""

    source_names: Sequence[str] = ()

    def detect(self, frame: np.ndarray, index: int) -> Sequence[Any]:
        return ()

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        return None

    def set_source_images(self, images: Sequence[Any]) -> None:
        raise StreamswapError("this pipeline has no face swapper; start it with --source FACE.jpg")


class _Fanout:
    """Calls every observer; one failing observer never breaks the pipeline."""

    def __init__(self, observers: Sequence[PipelineObserver]) -> None:
        self.observers = list(observers)

    def _call(self, name: str, *args: Any) -> None:
        for obs in self.observers:
            try:
                getattr(obs, name)(*args)
            except Exception:  # an observer bug must not stop the video
                log.exception("observer failed", extra=kv(observer=type(obs).__name__, call=name))

    def frame_in(self) -> None:
        self._call("frame_in")

    def frame_dropped(self, reason: str) -> None:
        self._call("frame_dropped", reason)

    def frame_out(self, latency_s: float) -> None:
        self._call("frame_out", latency_s)

    def stage_time(self, stage: str, seconds: float) -> None:
        self._call("stage_time", stage, seconds)

    def stage_error(self, stage: str) -> None:
        self._call("stage_error", stage)

    def reconnect(self, what: str) -> None:
        self._call("reconnect", what)


class Runtime:
    """One running pipeline; implements `service.control.RuntimeControl`.

    `config` is the whole Config (its `pipeline`, `io`, `input`, `outputs` are used);
    `source`/`sinks` default to opening `config.input` / `config.outputs` through
    `streamswap.io.uri`. `stages` defaults to pass-through. Observers get every event;
    `self.stats` is always one of them.
    """

    def __init__(
        self,
        config: Any,
        stages: FaceStages | None = None,
        *,
        source: Source | None = None,
        sinks: Sequence[Sink] | None = None,
        observers: Sequence[PipelineObserver] = (),
        allocator: Allocator | None = None,
        reload_hook: Callable[[], None] | None = None,
        settings: PipelineSettings | None = None,
    ) -> None:
        self.config = config
        self.settings: PipelineSettings = settings or getattr(config, "pipeline", None) or PipelineSettings()
        self.stages: FaceStages = stages if stages is not None else PassThroughStages()
        self._source = source
        self._sinks: list[Sink] | None = list(sinks) if sinks is not None else None
        self._allocator = allocator
        self._reload_hook = reload_hook
        self.stats = Stats(window=self.settings.stats_window)
        self._obs = _Fanout([self.stats, *observers])
        # Observers that also look at the frames leaving (the control page's preview): called
        # from the output stage after the sinks; they must return at once (copy or skip).
        self._frame_taps = [o for o in observers if callable(getattr(o, "output_frame", None))]
        self.state = "created"
        self.live = False
        self.video: VideoFormat | None = None
        self.audio: AudioFormat | None = None
        self.pool: SlotPool | None = None
        self.rings: list[Ring] = []
        self._threads: list[threading.Thread] = []
        self._stop_reading = threading.Event()
        self._done = threading.Event()
        self._running_threads = 0
        self._threads_lock = threading.Lock()
        self._paused = False
        self._swap_lock = threading.Lock()  # reload hooks run between two swaps
        self._consecutive: dict[str, int] = {"capture": 0, "detect": 0, "swap": 0, "output": 0}
        self._degraded: set[str] = set()
        self._input_error: BaseException | None = None
        self._seen_counters: dict[tuple[int, str], int] = {}
        self._backup: np.ndarray | None = None
        self._last_index = -1
        self.order_violations = 0  # stays 0; checked by the output stage (tests assert it)

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the source and sinks, allocate the slots, start the stage threads.

        Raises the source's/sinks' StreamswapError (nonexistent file, unreachable URL,
        audio-only input, …) before any thread starts.
        """
        if self.state != "created":
            raise RuntimeError("a Runtime is started once")
        self.state = "starting"
        source = self._source
        if source is None:
            from streamswap.io.uri import open_source

            source = self._source = open_source(self.config.input, self.config.io)
        try:
            self.video = source.open()
            self.audio = source.audio
            # Whatever the source is, no slot is allocated for a frame no run can carry.
            check_frame_size(self.video.width, self.video.height, getattr(source, "name", "input"))
        except BaseException:
            self.state = "failed"
            _close_quietly(source, "source")
            raise
        policy = self.settings.policy
        self.live = bool(getattr(source, "live", False)) if policy == "auto" else policy == "drop-oldest"
        sinks = self._sinks
        opened: list[Sink] = []
        try:
            if sinks is None:
                from streamswap.io.uri import open_sink

                sinks = self._sinks = [open_sink(uri, self.config.io) for uri in self.config.outputs]
            for sink in sinks:
                sink.open(self.video, self.audio)
                opened.append(sink)
        except BaseException:
            self.state = "failed"
            for sink in opened:
                _close_quietly(sink, "sink")
            _close_quietly(source, "source")
            raise
        q = self.settings.queue_size
        # Every slot a frame can occupy: one per ring entry plus one held by each stage
        # thread; so a free slot always exists when capture asks for one.
        self.pool = SlotPool(3 * q + 4, self.video.height, self.video.width, self._allocator)
        if self.settings.restore_on_error:
            self._backup = np.empty(self.pool.shape, np.uint8)
        self.rings = [Ring(q, "detect"), Ring(q, "swap"), Ring(q, "output")]
        for name, target in (
            ("capture", self._capture_loop),
            ("detect", self._detect_loop),
            ("swap", self._swap_loop),
            ("output", self._output_loop),
        ):
            thread = threading.Thread(
                target=self._run_thread, args=(target,), name=f"streamswap-{name}", daemon=True
            )
            self._threads.append(thread)
        self._running_threads = len(self._threads)
        self.state = "running"
        log.info(
            "pipeline started",
            extra=kv(
                size=f"{self.video.width}x{self.video.height}", fps=float(self.video.fps),
                live=self.live, audio=self.audio.codec if self.audio else None,
                sinks=len(sinks), slots=len(self.pool),
            ),
        )
        for thread in self._threads:
            thread.start()

    def request_stop(self) -> None:
        """Stop reading now; frames in flight keep going to the sinks (does not wait)."""
        if self.state == "running":
            self.state = "stopping"
        self._stop_reading.set()

    def stop(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stop reading; let in-flight frames reach the sinks (unless drain=False or the
        drain takes longer than `timeout`, default settings.drain_timeout), close sinks."""
        if self.state in ("created", "failed") and not self._threads:
            return
        if self.state == "running":
            self.state = "stopping"
        self._stop_reading.set()
        if drain:
            wait = self.settings.drain_timeout if timeout is None else timeout
            if self.wait(wait):
                return
            log.warning("drain timed out; dropping in-flight frames", extra=kv(seconds=wait))
        self._abort()
        self.wait(5.0)

    def _run_thread(self, target: Callable[[], None]) -> None:
        try:
            target()
        finally:
            with self._threads_lock:
                self._running_threads -= 1
                last = self._running_threads == 0
            if last:
                if self._input_error is not None and not self._stop_reading.is_set():
                    self.state = "failed"
                elif self.state in ("running", "stopping"):
                    self.state = "stopped"
                log.info("pipeline stopped", extra=kv(state=self.state, **_summary(self.stats.snapshot())))
                self._done.set()

    def _abort(self) -> None:
        for ring in self.rings:
            for item in ring.close():
                if item.slot != _AUDIO_ONLY and self.pool is not None:
                    self.pool.release(item.slot)
                    self._obs.frame_dropped("stopped")
        if self.pool is not None:
            self.pool.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every stage thread ended (input finished or stopped); True if so."""
        return self._done.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def input_error(self) -> BaseException | None:
        """The error that ended the input early (None at a normal end or after stop())."""
        return self._input_error

    # -- RuntimeControl ---------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        state = self.state
        if state == "running" and self._degraded:
            state = "degraded"
        identity = self.stages.source_names
        return {
            "state": state,
            "paused": self._paused,
            "live": self.live,
            "degraded_stages": sorted(self._degraded),
            "input": getattr(self._source, "name", None) or getattr(self.config, "input", None),
            "outputs": [getattr(s, "name", type(s).__name__) for s in (self._sinks or [])],
            "output_states": [_sink_state(s) for s in (self._sinks or [])],
            "video": None if self.video is None else {
                "width": self.video.width, "height": self.video.height, "fps": float(self.video.fps),
            },
            "audio": None if self.audio is None else self.audio.codec,
            "source_identity": list(identity) if identity else None,
            "queue_depths": [len(r) for r in self.rings],
            **snap,
        }

    def frames_out(self) -> int:
        return self.stats.frames_out

    def set_source_image(self, image_bgr: Any) -> None:
        """Compute the new identity in the caller's thread; the stages switch to it at the
        next swap (FaceProcessor.set_source_images). Raises NoFaceError/InputError."""
        self.stages.set_source_images([image_bgr])
        log.info("source identity switched")

    def pause(self) -> None:
        self._paused = True
        log.info("swapping paused; frames pass through unchanged")

    def resume(self) -> None:
        self._paused = False
        log.info("swapping resumed")

    @property
    def paused(self) -> bool:
        return self._paused

    def reload(self) -> None:
        if self._reload_hook is None:
            log.warning("reload asked but this runtime has no reload hook; nothing changed")
            return
        with self._swap_lock:
            self._reload_hook()

    # -- stage threads ----------------------------------------------------------------
    def _ok(self, stage: str) -> None:
        if self._consecutive[stage]:
            self._consecutive[stage] = 0
            if stage in self._degraded:
                self._degraded.discard(stage)
                log.info("stage recovered", extra=kv(stage=stage))

    def _failed(self, stage: str, index: int) -> None:
        self._obs.stage_error(stage)
        n = self._consecutive[stage] = self._consecutive[stage] + 1
        what = "frame passes through unswapped" if stage in ("detect", "swap") else "frame skipped"
        # The first failure of a streak gets its traceback; a stage failing on every frame
        # logs one line per 100 failures, not 30 tracebacks a second.
        if n == 1:
            log.error(f"{stage} failed; {what}", exc_info=True, extra=kv(stage=stage, frame=index))
        elif n % 100 == 0:
            log.error(f"{stage} still failing; {what}", extra=kv(stage=stage, frame=index, consecutive=n))
        else:
            log.debug(f"{stage} failed", exc_info=True, extra=kv(stage=stage, frame=index, consecutive=n))
        if n >= self.settings.max_stage_errors and stage not in self._degraded:
            self._degraded.add(stage)
            log.error("stage keeps failing; status degraded", extra=kv(stage=stage, consecutive=n))

    def _poll_counters(self, obj: Any, what: str) -> None:
        """Forward what io objects count in their `counters` dict: reconnects, and the
        decoder/demuxer errors of frames the source skipped (errors of the capture stage)."""
        counters = getattr(obj, "counters", None)
        if not isinstance(counters, dict):
            return
        # Called once per frame for the source and for each sink: no closures built here.
        for name in ("reconnects", "decode_errors", "demux_errors"):
            value = counters.get(name)
            if not isinstance(value, int):
                continue
            key = (id(obj), name)
            seen = self._seen_counters.get(key, 0)
            if value == seen:
                continue
            self._seen_counters[key] = value
            for _ in range(value - seen):
                if name == "reconnects":
                    self._obs.reconnect(what)
                else:
                    self._obs.stage_error("capture")

    def _capture_loop(self) -> None:
        assert self.pool is not None and self._source is not None
        source, pool, ring, obs = self._source, self.pool, self.rings[0], self._obs
        item: FrameItem | None = None
        try:
            while not self._stop_reading.is_set():
                slot = pool.acquire()
                assert slot is not None
                t0 = time.monotonic()
                try:
                    meta = source.read_into(pool[slot])
                except Exception as exc:  # the source gave up (it retries what it can itself)
                    pool.release(slot)
                    self._input_error = exc
                    obs.stage_error("capture")
                    if isinstance(exc, StreamswapError):
                        log.error("input failed", extra=kv(error=str(exc)))
                    else:
                        log.exception("input failed")
                    break
                if meta is None:
                    pool.release(slot)
                    break
                t1 = time.monotonic()
                meta.stage_times["capture"] = t1
                item = FrameItem(slot, meta, (), source.take_audio())
                self._poll_counters(source, "source")
                obs.frame_in()
                obs.stage_time("capture", t1 - t0)
                if self.live:
                    dropped = ring.put_drop_oldest(item)
                    if dropped is not None:
                        pool.release(dropped.slot)
                        obs.frame_dropped("pipeline_full")
                else:
                    ring.put(item)
                item = None
            tail = source.take_audio()
            if tail:
                ring.put(FrameItem(_AUDIO_ONLY, FrameMeta(-1, None, time.monotonic()), (), tail))
        except (RingClosed, SlotPoolClosed):
            self._drop_held(item)
        except Exception:
            log.exception("capture stage crashed")
            self._input_error = self._input_error or InputError("the capture stage crashed (see log)")
        finally:
            ring.end()
            _close_quietly(source, "source")

    def _detect_loop(self) -> None:
        self._stage_loop("detect", self.rings[0], self.rings[1], self._detect_one)

    def _swap_loop(self) -> None:
        self._stage_loop("swap", self.rings[1], self.rings[2], self._swap_one)

    def _stage_loop(
        self, stage: str, inbox: Ring, outbox: Ring, work: Callable[[FrameItem], None]
    ) -> None:
        item: FrameItem | None = None
        try:
            while True:
                if self.live:
                    # Live: take a frame only when its result can move on at once. A stage
                    # that worked ahead would hold a finished frame while the next stage is
                    # busy, and that frame (older than the one the capture ring keeps fresh)
                    # would add a whole stage time of latency under overload.
                    outbox.wait_room()
                item = inbox.get()
                if item is None:
                    break
                if item.slot != _AUDIO_ONLY:
                    work(item)
                    item.meta.stage_times[stage] = time.monotonic()
                outbox.put(item)
                item = None
        except RingClosed:
            self._drop_held(item)
        except Exception:
            log.exception("stage loop crashed", extra=kv(stage=stage))
            self._abort()
        finally:
            outbox.end()

    def _drop_held(self, item: FrameItem | None) -> None:
        """A frame a stage held when the rings were aborted: free its slot, count it, so
        that frames in = frames out + dropped after a stop without draining too."""
        if item is not None and item.slot != _AUDIO_ONLY and self.pool is not None:
            self.pool.release(item.slot)
            self._obs.frame_dropped("stopped")

    def _detect_one(self, item: FrameItem) -> None:
        if self._paused:
            item.faces = ()
            return
        t0 = time.monotonic()
        assert self.pool is not None
        try:
            item.faces = self.stages.detect(self.pool[item.slot], item.meta.index)
            self._ok("detect")
        except Exception:
            item.faces = ()
            self._failed("detect", item.meta.index)
        self._obs.stage_time("detect", time.monotonic() - t0)

    def _swap_one(self, item: FrameItem) -> None:
        if self._paused or not item.faces:
            return
        assert self.pool is not None
        frame = self.pool[item.slot]
        t0 = time.monotonic()
        with self._swap_lock:
            if self._backup is not None:
                np.copyto(self._backup, frame)
            try:
                self.stages.swap(frame, item.faces)
                self._ok("swap")
            except Exception:
                if self._backup is not None:
                    np.copyto(frame, self._backup)  # a half-swapped frame never leaves
                self._failed("swap", item.meta.index)
        self._obs.stage_time("swap", time.monotonic() - t0)

    def _output_loop(self) -> None:
        assert self.pool is not None and self._sinks is not None
        pool, ring, sinks, obs = self.pool, self.rings[2], self._sinks, self._obs
        label = getattr(getattr(self.config, "io", None), "label", None)
        labeler = None
        if label is not None and label.enabled:  # responsible use: on every output frame
            from streamswap.io.label import Labeler

            labeler = Labeler(label)
        try:
            while True:
                item = ring.get()
                if item is None:
                    break
                t0 = time.monotonic()
                failed = False
                if labeler is not None and item.slot != _AUDIO_ONLY:
                    labeler.draw(pool[item.slot])
                for sink in sinks:
                    try:
                        if item.audio:
                            sink.write_audio(item.audio)
                        if item.slot != _AUDIO_ONLY:
                            sink.write(pool[item.slot], item.meta)
                    except Exception:
                        failed = True
                        self._failed("output", item.meta.index)
                    self._poll_counters(sink, getattr(sink, "name", "sink"))
                # Only a frame every sink took ends a failure streak: one broken output
                # beside a working one must still log once per streak and turn degraded.
                if not failed:
                    self._ok("output")
                if item.slot == _AUDIO_ONLY:
                    continue
                t1 = time.monotonic()
                meta = item.meta
                meta.stage_times["output"] = t1
                if meta.index <= self._last_index:
                    self.order_violations += 1
                    log.error("frame out of order", extra=kv(frame=meta.index, after=self._last_index))
                self._last_index = meta.index
                for tap in self._frame_taps:
                    try:
                        tap.output_frame(pool[item.slot], meta)
                    except Exception:  # a preview bug must not stop the video
                        log.exception("frame tap failed", extra=kv(tap=type(tap).__name__))
                pool.release(item.slot)
                obs.stage_time("output", t1 - t0)
                obs.frame_out(t1 - meta.capture_time)
        except RingClosed:
            pass
        except Exception:
            log.exception("output stage crashed")
            self._abort()
        finally:
            for sink in sinks:
                _close_quietly(sink, "sink")


def _sink_state(sink: Any) -> dict[str, Any]:
    """One output for status(): its name, "up" or "reconnecting" (network outputs say
    whether a connection is up), and what it counts (frames, dropped, reconnects, ...)."""
    counters = getattr(sink, "counters", None)
    up = getattr(sink, "up", True)
    return {"name": getattr(sink, "name", type(sink).__name__), "state": "up" if up else "reconnecting",
            **({k: v for k, v in counters.items() if isinstance(v, int)} if isinstance(counters, dict) else {})}


def _summary(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("frames_in", "frames_out", "dropped")} | {
        "errors": sum(snap["errors"].values())
    }


def _close_quietly(obj: Any, what: str) -> None:
    try:
        obj.close()
    except Exception:
        log.exception("closing failed", extra=kv(what=what, name=getattr(obj, "name", "?")))
