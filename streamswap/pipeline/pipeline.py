"""The real-time pipeline: a source, a list of stages and a set of sinks, each on its own
thread, joined by bounded `FrameQueue`s:

    capture ──► [q] ──► stage 1 ──► [q] ──► … stage N ──tee─┬─► [q] ──► sink 1
                                                             └─► [q] ──► sink 2

Frames live in a fixed SlotPool; the queues carry slot indices and FrameMeta. A live
source never waits (the oldest unprocessed frame is dropped and counted); a file source
blocks and loses nothing. Frames leave in order. The last stage hands every frame to each
sink's own queue (`_Tee`, no extra thread), so a slow or stuck output never delays
another: live, a sink that falls behind drops its own oldest frame (counted per output);
a lossless run waits for it.

A stage that raises is logged with the frame index and the frame goes on as its
`ErrorPolicy` says; consecutive failures of one stage turn the status "degraded".
stop() stops reading, lets the in-flight frames drain, then every sink thread closes its
own sink, all in parallel, so one frozen server does not cost a file its index.

The pipeline alone owns pause, state and frame counts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from streamswap.errors import InputError, StreamswapError
from streamswap.io.base import AudioFormat, FrameMeta, Reconnects, Sink, Source, VideoFormat, check_frame_size
from streamswap.logs import kv
from streamswap.pipeline.frame_queue import FrameItem, FrameQueue, QueueClosed
from streamswap.pipeline.settings import PipelineSettings
from streamswap.pipeline.slots import Allocator, SlotPool, SlotPoolClosed
from streamswap.pipeline.stage import Stage
from streamswap.pipeline.stats import FrameTap, ObserverFanout, PipelineObserver, Stats

log = logging.getLogger(__name__)

_AUDIO_ONLY = -1  # FrameItem.slot of an item that only carries trailing audio packets
# After an aborted drain, how long stop() still waits for the threads (a sink stuck in a
# write to a frozen server is left behind: it holds no other output).
_ABORT_GRACE_S = 1.0
# While draining, how long a live output's full queue is waited for before that output is
# given up on (it then drops its frames, as when live).
DRAIN_OUTPUT_WAIT_S = 0.5


class _SlotRefs:
    """How many sinks still hold each slot: the last one to finish a frame frees it."""

    def __init__(self, pool: SlotPool) -> None:
        self._pool = pool
        self._left: dict[int, int] = {}
        self._wrote: dict[int, bool] = {}
        self._lock = threading.Lock()

    def hold(self, slot: int, count: int) -> None:
        with self._lock:
            self._left[slot] = count
            self._wrote[slot] = False

    def done(self, slot: int, wrote: bool) -> bool | None:
        """One sink finished `slot` (wrote it or dropped it). Returns None while other sinks
        hold it, else whether any sink wrote it (the slot is then free again)."""
        with self._lock:
            self._left[slot] -= 1
            self._wrote[slot] = self._wrote[slot] or wrote
            if self._left[slot]:
                return None
            del self._left[slot]
            any_wrote = self._wrote.pop(slot)
        self._pool.release(slot)
        return any_wrote


class _Tee:
    """The last stage's outbox: puts each frame into every sink's own queue. Offers what a
    stage thread asks of a FrameQueue (put, put_drop_oldest, wait_room, end, close)."""

    name = "outputs"
    max_depth = 0

    def __init__(
        self,
        queues: list[FrameQueue],
        refs: _SlotRefs,
        live: bool,
        dropped: Callable[[int, FrameItem], None],
        no_sink: Callable[[FrameItem], None],
        look: Callable[[FrameItem], None],
    ) -> None:
        self.queues = queues
        self._look = look  # frame taps see each frame before the sinks get it
        self._refs = refs
        self._live = live
        self._dropped = dropped  # (sink number, item) a sink's queue pushed out
        self._no_sink = no_sink  # a frame of a pipeline without outputs
        # Set once the input ended or a stop was asked: the frames still in flight are few
        # and should all arrive, so a live output's queue is waited for too, but only a
        # moment: an output that takes nothing for that long (a frozen server) is given up
        # on and drops its frames again, so it cannot hold the others' last frames back.
        self.draining = False
        self._stuck: set[int] = set()  # outputs given up on while draining

    def __len__(self) -> int:
        return 0

    def put(self, item: FrameItem) -> None:
        if item.slot != _AUDIO_ONLY:
            self._look(item)
        if not self.queues:
            self._no_sink(item)
            return
        if item.slot != _AUDIO_ONLY:
            self._refs.hold(item.slot, len(self.queues))
        for number, queue in enumerate(self.queues):
            # Each sink gets its own item: a drop moves audio onto that sink's next frame.
            mine = FrameItem(item.slot, item.meta, (), list(item.audio))
            if not self._live:
                queue.put(mine)
                continue
            if self.draining and number not in self._stuck:
                if queue.put(mine, timeout=DRAIN_OUTPUT_WAIT_S):
                    continue
                self._stuck.add(number)
            dropped = queue.put_drop_oldest(mine)
            if dropped is not None:
                self._dropped(number, dropped)

    def put_drop_oldest(self, item: FrameItem) -> None:
        self.put(item)  # each sink's queue drops for itself

    def wait_room(self) -> None:
        if not self._live:
            for queue in self.queues:
                queue.wait_room()

    def end(self) -> None:
        for queue in self.queues:
            queue.end()


class Pipeline:
    """One running pipeline over already built parts (no config, no URIs).

    `stages` run in order between capture and the outputs (an empty list passes frames
    through); `source` and `sinks` are opened by start() and closed when it ends.
    Observers get every event; `self.stats` is always one of them. A `FrameTap` among them
    also sees each frame leaving for the outputs.
    """

    def __init__(
        self,
        source: Source,
        stages: Sequence[Stage],
        sinks: Sequence[Sink],
        *,
        settings: PipelineSettings | None = None,
        observers: Sequence[PipelineObserver | FrameTap] = (),
        allocator: Allocator | None = None,
        thread_init: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings or PipelineSettings()
        self.stages: list[Stage] = list(stages)
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names) or {"capture", "output"} & set(names):
            raise ValueError(f"stage names must be unique and not capture/output: {names}")
        self._source = source
        self._sinks: list[Sink] = list(sinks)
        self._allocator = allocator
        self._thread_init = thread_init  # run first on every pipeline thread (the GPU device)
        self.stats = Stats(window=self.settings.stats_window)
        self._obs = ObserverFanout([self.stats, *(o for o in observers if isinstance(o, PipelineObserver))])
        # Observers that also look at the frames leaving (the control page's preview).
        self._taps: list[FrameTap] = [o for o in observers if isinstance(o, FrameTap)]
        self.state = "created"
        self.live = False
        self.video: VideoFormat | None = None
        self.audio: AudioFormat | None = None
        self.pool: SlotPool | None = None
        self.queues: list[FrameQueue] = []  # into each stage (capture → stage 1 → …)
        self.sink_queues: list[FrameQueue] = []  # one per sink, fed by the last stage
        self._refs: _SlotRefs | None = None
        self._tee: _Tee | None = None
        self._threads: list[threading.Thread] = []
        self._stop_reading = threading.Event()
        self._done = threading.Event()
        self._running_threads = 0
        self._threads_lock = threading.Lock()
        self._paused = False
        self._consecutive: dict[str, int] = {}
        self._degraded: set[str] = set()
        self._input_error: BaseException | None = None
        self._seen_counters: dict[tuple[int, str], int] = {}
        self._backups: dict[str, np.ndarray] = {}
        self.order_violations = 0  # stays 0; checked by each sink thread (tests assert it)

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> None:
        """Open the source and sinks, allocate the slots, start the threads.

        Raises the source's/sinks' StreamswapError (nonexistent file, unreachable URL,
        audio-only input, …) before any thread starts.
        """
        if self.state != "created":
            raise RuntimeError("a Pipeline is started once")
        self.state = "starting"
        source = self._source
        try:
            self.video = source.open()
            self.audio = source.audio
            # Whatever the source is, no slot is allocated for a frame no run can carry.
            check_frame_size(self.video.width, self.video.height, source.name)
        except BaseException:
            self.state = "failed"
            _close_quietly(source, "source")
            raise
        policy = self.settings.policy
        self.live = source.live if policy == "auto" else policy == "drop-oldest"
        opened: list[Sink] = []
        try:
            for sink in self._sinks:
                sink.open(self.video, self.audio)
                opened.append(sink)
        except BaseException:
            self.state = "failed"
            for sink in opened:
                _close_quietly(sink, "sink")
            _close_quietly(source, "source")
            raise
        q = self.settings.queue_size
        n_stages, n_sinks = len(self.stages), len(self._sinks)
        # Every slot a frame can occupy: one per queue entry plus one held by each thread;
        # so a free slot always exists when capture asks for one.
        q_out = self.settings.output_queue_size
        slots = n_stages * q + (n_stages + 1) + n_sinks * (q_out + 1)
        self.pool = SlotPool(slots, self.video.height, self.video.width, self._allocator)
        self._refs = _SlotRefs(self.pool)
        if self.settings.restore_on_error:
            self._backups = {
                s.name: np.empty(self.pool.shape, np.uint8) for s in self.stages if s.error_policy.restore_frame
            }
        for stage in self.stages:
            stage.start(self.video, self.live)
        self.queues = [FrameQueue(q, s.name) for s in self.stages]
        self.sink_queues = [FrameQueue(q_out, f"sink {sink.name}") for sink in self._sinks]
        tee = self._tee = _Tee(
            self.sink_queues,
            self._refs,
            self.live,
            lambda number, item: self._sink_done(self._sinks[number], item, wrote=False, reason="output_full"),
            self._nowhere,
            self._tap,
        )
        outboxes: list[FrameQueue | _Tee] = [*self.queues[1:], tee]
        targets: list[tuple[str, Callable[[], None]]] = [
            ("capture", _bind(self._capture_loop, self.queues[0] if self.queues else tee))
        ]
        for stage, inbox, outbox in zip(self.stages, self.queues, outboxes):
            targets.append((stage.name, _bind(self._stage_loop, stage, inbox, outbox)))
        for i, (sink, queue) in enumerate(zip(self._sinks, self.sink_queues)):
            targets.append((f"sink-{sink.name}", _bind(self._sink_loop, i, sink, queue)))
        for name, target in targets:
            self._threads.append(
                threading.Thread(target=self._run_thread, args=(target,), name=f"streamswap-{name}", daemon=True)
            )
        self._running_threads = len(self._threads)
        self.state = "running"
        log.info(
            "pipeline started",
            extra=kv(
                size=f"{self.video.width}x{self.video.height}",
                fps=float(self.video.fps),
                live=self.live,
                audio=self.audio.codec if self.audio else None,
                stages=",".join(s.name for s in self.stages) or "-",
                sinks=n_sinks,
                slots=len(self.pool),
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
        drain takes longer than `timeout`, default settings.drain_timeout). Each sink is
        closed (files finalised) by its own thread as soon as it has its last frame."""
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
        if not self.wait(_ABORT_GRACE_S):
            stuck = [t.name for t in self._threads if t.is_alive()]
            log.warning("threads still busy after stop; left behind", extra=kv(threads=",".join(stuck)))

    def _run_thread(self, target: Callable[[], None]) -> None:
        try:
            if self._thread_init is not None:
                try:
                    self._thread_init()
                except Exception:  # the stage then fails on its own device calls, counted
                    log.exception("thread set-up failed", extra=kv(thread=threading.current_thread().name))
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
                for stage in self.stages:
                    _close_quietly(stage, "stage")
                log.info("pipeline stopped", extra=kv(state=self.state, **_summary(self.stats.snapshot())))
                self._done.set()

    def _abort(self) -> None:
        for queue in self.queues:
            for item in queue.close():
                if item.slot != _AUDIO_ONLY and self.pool is not None:
                    self.pool.release(item.slot)
                    self._obs.frame_dropped("stopped")
        for sink, queue in zip(self._sinks, self.sink_queues):
            for item in queue.close():
                self._sink_done(sink, item, wrote=False, reason="stopped")
        if self.pool is not None:
            self.pool.close()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every thread ended (input finished or stopped); True if so."""
        return self._done.wait(timeout)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def input_error(self) -> BaseException | None:
        """The error that ended the input early (None at a normal end or after stop())."""
        return self._input_error

    # -- control ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        snap = self.stats.snapshot()
        state = self.state
        if state == "running" and self._degraded:
            state = "degraded"
        described: dict[str, Any] = {}
        for stage in self.stages:
            described.update(stage.describe())
        return {
            "state": state,
            "paused": self._paused,
            "live": self.live,
            "degraded_stages": sorted(self._degraded),
            "input": self._source.name,
            "input_counters": {k: v for k, v in self._source.counters.items() if isinstance(v, int)},
            "outputs": [s.name for s in self._sinks],
            "output_states": [_sink_state(s) for s in self._sinks],
            "stages": [s.name for s in self.stages],
            "video": None
            if self.video is None
            else {
                "width": self.video.width,
                "height": self.video.height,
                "fps": float(self.video.fps),
            },
            "audio": None if self.audio is None else self.audio.codec,
            "queue_depths": [len(q) for q in self.queues],
            **described,
            **snap,
        }

    def frames_out(self) -> int:
        return self.stats.frames_out

    def pause(self) -> None:
        """Frames pass through the stages untouched until resume()."""
        self._paused = True
        log.info("swapping paused; frames pass through unchanged")

    def resume(self) -> None:
        self._paused = False
        log.info("swapping resumed")

    @property
    def paused(self) -> bool:
        return self._paused

    # -- failure accounting -----------------------------------------------------------
    def _ok(self, key: str) -> None:
        if self._consecutive.get(key):
            self._consecutive[key] = 0
            stage = key.split(" ", 1)[0]
            if stage in self._degraded and not any(
                n for k, n in self._consecutive.items() if k.split(" ", 1)[0] == stage
            ):
                self._degraded.discard(stage)
                log.info("stage recovered", extra=kv(stage=stage))

    def _failed(self, key: str, index: int) -> None:
        """`key` is a stage name, or "output <sink>" (each sink has its own streak)."""
        stage = key.split(" ", 1)[0]
        self._obs.stage_error(stage)
        n = self._consecutive[key] = self._consecutive.get(key, 0) + 1
        what = "frame skipped" if stage in ("capture", "output") else "frame passes through unchanged"
        # The first failure of a streak gets its traceback; a stage failing on every frame
        # logs one line per 100 failures, not 30 tracebacks a second.
        if n == 1:
            log.error(f"{key} failed; {what}", exc_info=True, extra=kv(stage=key, frame=index))
        elif n % 100 == 0:
            log.error(f"{key} still failing; {what}", extra=kv(stage=key, frame=index, consecutive=n))
        else:
            log.debug(f"{key} failed", exc_info=True, extra=kv(stage=key, frame=index, consecutive=n))
        if n >= self.settings.max_stage_errors and stage not in self._degraded:
            self._degraded.add(stage)
            log.error("stage keeps failing; status degraded", extra=kv(stage=key, consecutive=n))

    def _poll_counters(self, obj: Source | Sink, what: str) -> None:
        """Turn the io objects' own counters (reconnects, decode errors) into events."""
        counters = obj.counters
        for name in ("reconnects", "decode_errors", "demux_errors"):
            value = counters.get(name, 0)
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

    # -- threads ----------------------------------------------------------------------
    def _capture_loop(self, queue: FrameQueue | _Tee) -> None:
        assert self.pool is not None
        source, pool, obs = self._source, self.pool, self._obs
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
                    dropped = queue.put_drop_oldest(item)
                    if dropped is not None:
                        pool.release(dropped.slot)
                        obs.frame_dropped("pipeline_full")
                else:
                    queue.put(item)
                item = None
            tail = source.take_audio()
            if tail:
                queue.put(FrameItem(_AUDIO_ONLY, FrameMeta(-1, None, time.monotonic()), (), tail))
        except (QueueClosed, SlotPoolClosed):
            self._drop_held(item)
        except Exception:
            log.exception("capture stage crashed")
            self._input_error = self._input_error or InputError("the capture stage crashed (see log)")
        finally:
            if self._tee is not None:
                self._tee.draining = True
            queue.end()
            _close_quietly(source, "source")

    def _stage_loop(self, stage: Stage, inbox: FrameQueue, outbox: FrameQueue | _Tee) -> None:
        item: FrameItem | None = None
        try:
            while True:
                if self.live:
                    # Live: take a frame only when its result can move on at once. A stage
                    # that worked ahead would hold a finished frame while the next stage is
                    # busy, and that frame (older than the one the capture queue keeps
                    # fresh) would add a whole stage time of latency under overload.
                    outbox.wait_room()
                item = inbox.get()
                if item is None:
                    break
                if item.slot != _AUDIO_ONLY:
                    self._process(stage, item)
                    item.meta.stage_times[stage.name] = time.monotonic()
                outbox.put(item)
                item = None
        except QueueClosed:
            self._drop_held(item)
        except Exception:
            log.exception("stage loop crashed", extra=kv(stage=stage.name))
            self._abort()
        finally:
            outbox.end()

    def _process(self, stage: Stage, item: FrameItem) -> None:
        if self._paused and stage.pausable:
            item.faces = ()
            return
        assert self.pool is not None
        frame = self.pool[item.slot]
        policy = stage.error_policy
        backup = self._backups.get(stage.name)
        t0 = time.monotonic()
        if backup is not None and item.faces:
            np.copyto(backup, frame)
        try:
            stage.process(frame, item)
            self._ok(stage.name)
        except Exception:
            if backup is not None and item.faces:
                np.copyto(frame, backup)  # a half-changed frame never leaves
            if policy.clear_faces:
                item.faces = ()
            self._failed(stage.name, item.meta.index)
        self._obs.stage_time(stage.name, time.monotonic() - t0)

    def _drop_held(self, item: FrameItem | None) -> None:
        """A frame a stage held when the queues were aborted: free its slot, count it, so
        that frames in = frames out + dropped after a stop without draining too."""
        if item is not None and item.slot != _AUDIO_ONLY and self.pool is not None:
            self.pool.release(item.slot)
            self._obs.frame_dropped("stopped")

    def _tap(self, item: FrameItem) -> None:
        for tap in self._taps:
            assert self.pool is not None
            try:
                tap.output_frame(self.pool[item.slot], item.meta)
            except Exception:  # a preview bug must not stop the video
                log.exception("frame tap failed", extra=kv(tap=type(tap).__name__))

    def _nowhere(self, item: FrameItem) -> None:
        """A frame of a pipeline without outputs is out once the stages are done with it."""
        if item.slot != _AUDIO_ONLY and self.pool is not None:
            self.pool.release(item.slot)
            self._obs.frame_out(time.monotonic() - item.meta.capture_time)

    def _sink_loop(self, number: int, sink: Sink, queue: FrameQueue) -> None:
        """Writes one sink's frames, then closes it (in parallel with the other sinks)."""
        key = f"output {number}:{sink.name}"  # its own failure streak
        last_index = -1
        try:
            while True:
                item = queue.get()
                if item is None:
                    break
                if item.slot != _AUDIO_ONLY:
                    if item.meta.index <= last_index:
                        self.order_violations += 1
                        log.error(
                            "frame out of order", extra=kv(frame=item.meta.index, after=last_index, sink=sink.name)
                        )
                    last_index = item.meta.index
                t0 = time.monotonic()
                wrote = False
                reason = "output_error"
                try:
                    if item.audio:
                        sink.write_audio(item.audio)
                    if item.slot != _AUDIO_ONLY:
                        assert self.pool is not None
                        # A reconnecting network output drops (and counts) frames while it
                        # is down instead of raising: that is this output's drop too.
                        dropped = sink.counters.get("dropped", 0)
                        sink.write(self.pool[item.slot], item.meta)
                        wrote = sink.counters.get("dropped", 0) == dropped
                        reason = "output_down"
                    self._ok(key)
                except Exception:
                    self._failed(key, item.meta.index)
                self._poll_counters(sink, sink.name)
                if item.slot != _AUDIO_ONLY:
                    self._obs.stage_time("output", time.monotonic() - t0)
                    self._sink_done(sink, item, wrote=wrote, reason=reason)
        except QueueClosed:
            pass
        except Exception:
            log.exception("sink thread crashed", extra=kv(sink=sink.name))
        finally:
            _close_quietly(sink, "sink")

    def _sink_done(self, sink: Sink, item: FrameItem, *, wrote: bool, reason: str) -> None:
        """`sink` is finished with `item`: count it for that output; the last sink to
        finish a frame frees its slot and counts it out (or dropped, when none wrote it)."""
        if item.slot == _AUDIO_ONLY or self._refs is None:
            return
        if wrote:
            self._obs.output_written(sink.name)
        else:
            self._obs.output_dropped(sink.name, reason)
        any_wrote = self._refs.done(item.slot, wrote)
        if any_wrote is None:
            return
        meta = item.meta
        if any_wrote:
            t1 = time.monotonic()
            meta.stage_times["output"] = t1
            self._obs.frame_out(t1 - meta.capture_time)
        else:
            self._obs.frame_dropped(reason)


def _sink_state(sink: Sink) -> dict[str, Any]:
    """One output for status(): its name, "up" or "reconnecting" (a network output says
    whether its connection is up), and what it counts (frames, dropped, reconnects, ...)."""
    up = sink.up if isinstance(sink, Reconnects) else True
    return {
        "name": sink.name,
        "state": "up" if up else "reconnecting",
        **{k: v for k, v in sink.counters.items() if isinstance(v, int)},
    }


def _bind(fn: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: fn(*args)


def _summary(snap: dict[str, Any]) -> dict[str, Any]:
    return {k: snap[k] for k in ("frames_in", "frames_out", "dropped")} | {"errors": sum(snap["errors"].values())}


class _Closable(Protocol):
    """What the pipeline closes at its end: the source, the sinks, the stages."""

    @property
    def name(self) -> str: ...

    def close(self) -> None: ...


def _close_quietly(obj: _Closable, what: str) -> None:
    try:
        obj.close()
    except Exception:
        log.exception("closing failed", extra=kv(what=what, name=obj.name))
