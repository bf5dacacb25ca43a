"""Pipeline logic with tiny in-test sources/sinks (the contract in io/base.py) and stages
(pipeline/stage.py): drop and block policies, order, bounded depth and latency (in
frames), failing stages, pause, one queue and thread per output."""

from __future__ import annotations

import re
import threading
import time
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import pytest

from streamswap.errors import InputError
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.pipeline.frame_queue import FrameItem
from streamswap.pipeline.pipeline import Pipeline
from streamswap.pipeline.settings import PipelineSettings
from streamswap.pipeline.stage import ErrorPolicy, Stage

H, W = 16, 24


def encode(frame: np.ndarray, index: int) -> None:
    frame[..., 0] = index % 256
    frame[..., 1] = index // 256
    frame[..., 2] = 0


def decode(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


class FakeSource:
    """Makes `count` frames (None: endless) as fast as asked; index painted into pixels."""

    def __init__(self, count: int | None, live: bool, gate_at: int | None = None) -> None:
        self.count, self.live = count, live
        self.produced = 0
        self.cond = threading.Condition()
        self.gate_at = gate_at
        self.gate = threading.Event()
        self.closed = False
        self._audio: list[Any] = []
        self.audio_sent: list[str] = []

    name = "fake://"
    counters: dict[str, int] = {}

    def open(self) -> VideoFormat:
        return VideoFormat(W, H, Fraction(30), Fraction(1, 30))

    @property
    def audio(self) -> AudioFormat | None:
        return AudioFormat("aac", 48000, 2, Fraction(1, 48000))

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        if self.count is not None and self.produced >= self.count:
            return None
        if self.gate_at is not None and self.produced == self.gate_at:
            assert self.gate.wait(10)
        if self.live:
            # A camera blocks between frames; a pure-Python loop that never lets go of
            # the GIL would starve the stage threads on a busy machine (flaky lag).
            time.sleep(0)
        i = self.produced
        encode(out, i)
        packet = f"a{i}"
        self._audio.append(packet)
        self.audio_sent.append(packet)
        with self.cond:
            self.produced += 1
            self.cond.notify_all()
        return FrameMeta(index=i, pts=i, capture_time=time.monotonic())

    def wait_produced(self, n: int) -> None:
        with self.cond:
            self.cond.wait_for(
                lambda: self.produced >= n or self.closed or (self.count is not None and self.produced >= self.count),
                10,
            )

    def take_audio(self) -> list[Any]:
        out, self._audio = self._audio, []
        return out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class FakeSink:
    counters: dict[str, int] = {}

    def __init__(self, source: FakeSource | None = None, name: str = "fake-sink://") -> None:
        self.name = name
        self.indices: list[int] = []
        self.painted: list[int] = []
        self.swapped: list[bool] = []
        self.audio: list[Any] = []
        self.audio_before: list[tuple[int, int]] = []  # (frame index, audio packets so far)
        self.lag: list[int] = []  # frames the source was ahead when this frame was written
        self.source = source
        self.opened = self.closed = False

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        self.opened = True

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        self.indices.append(meta.index)
        self.painted.append(decode(frame))
        self.swapped.append(bool((frame[..., 2] == 200).all()))
        self.audio_before.append((meta.index, len(self.audio)))
        if self.source is not None:
            self.lag.append(self.source.produced - meta.index)
        assert set(meta.stage_times) >= {"capture", "detect", "swap"}

    def write_audio(self, packets: list[Any]) -> None:
        self.audio.extend(packets)

    def close(self) -> None:
        self.closed = True


class _CallStage:
    """A Stage calling `detect(frame, index)` (its result becomes the faces) or
    `swap(frame, faces)` of a test's stages object."""

    pausable = True

    def __init__(self, name: str, owner: Any) -> None:
        self.name = name
        self.owner = owner
        self.error_policy = ErrorPolicy(clear_faces=True) if name == "detect" else ErrorPolicy(restore_frame=True)

    def start(self, video: Any, live: bool) -> None:
        pass

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        if self.name == "detect":
            item.faces = self.owner.detect(frame, item.meta.index)
        elif item.faces:
            self.owner.swap(frame, item.faces)

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class TwoStages:
    """detect + swap as two pipeline stages (subclasses define the two methods)."""

    def detect(self, frame: np.ndarray, index: int) -> Sequence[Any]:
        return ()

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        pass

    @property
    def stages(self) -> list[Stage]:
        return [_CallStage("detect", self), _CallStage("swap", self)]


def make_pipeline(
    stages: TwoStages | None,
    *,
    source: Any,
    sinks: Sequence[Any],
    settings: PipelineSettings | None = None,
    observers: Sequence[Any] = (),
) -> Pipeline:
    return Pipeline(source, stages.stages if stages is not None else [], sinks, settings=settings, observers=observers)


class Stages(TwoStages):
    """detect finds one 'face'; swap paints channel 2. Optional slowness tied to the source
    (the stage waits until the source is `ahead` frames further) and failures by index."""

    def __init__(
        self,
        source: FakeSource | None = None,
        ahead: int = 0,
        fail_detect: Sequence[int] = (),
        fail_swap: Sequence[int] = (),
        always_fail: bool = False,
    ) -> None:
        self.source, self.ahead = source, ahead
        self.fail_detect, self.fail_swap, self.always_fail = set(fail_detect), set(fail_swap), always_fail
        self.detected: list[int] = []
        self.produced_when_done: list[int] = []  # source.produced as each detect returned

    def detect(self, frame: np.ndarray, index: int) -> Sequence[Any]:
        if self.source is not None and self.ahead:
            self.source.wait_produced(index + self.ahead)
        self.detected.append(index)
        if self.source is not None:
            self.produced_when_done.append(self.source.produced)
        if index in self.fail_detect:
            raise ValueError(f"detector broke on {index}")
        return ["face"]

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        index = decode(frame)
        if self.always_fail or index in self.fail_swap:
            frame[..., 2] = 77  # half-done work that must not leave the pipeline
            raise RuntimeError(f"swapper broke on {index}")
        frame[..., 2] = 200


def run_to_end(rt: Pipeline) -> None:
    rt.start()
    assert rt.wait(30), "pipeline did not finish"


def settings(**kw: Any) -> PipelineSettings:
    return PipelineSettings(**kw)


def assert_dropped_in_front_of_the_stages(snap: dict[str, Any]) -> None:
    """The stages were outrun, so frames were dropped in front of them. On a loaded machine
    the sink's thread may also fall behind and its own queue drop (output_full): that is
    the policy too, so it may appear, but nothing else, and every drop is counted once."""
    reasons = snap["dropped_by_reason"]
    assert reasons.get("pipeline_full", 0) > 0, reasons
    assert set(reasons) <= {"pipeline_full", "output_full"}, reasons
    assert sum(reasons.values()) == snap["dropped"]


def test_live_source_faster_than_slowest_stage_drops_oldest_in_order() -> None:
    n, q = 300, 2
    src = FakeSource(n, live=True)
    sink = FakeSink(src)
    stages = Stages(src, ahead=12)
    rt = make_pipeline(stages, source=src, sinks=[sink], settings=settings(queue_size=q))
    run_to_end(rt)
    snap = rt.status()
    assert snap["frames_in"] == n
    assert_dropped_in_front_of_the_stages(snap)
    assert snap["frames_out"] + snap["dropped"] == n == len(sink.indices) + snap["dropped"]
    assert sink.indices == sorted(sink.indices) and len(set(sink.indices)) == len(sink.indices)
    assert sink.painted == sink.indices  # each slot held its own frame
    assert all(r.max_depth <= q for r in rt.queues)
    # Latency in frames, counted in frames (not wall-clock time, so a loaded machine that
    # lets the source run on while the stage threads wait for a CPU cannot fail it):
    # 1. Drop-oldest in front of the slow stage: when it takes its next frame, the queue
    #    holds the newest ≤ q frames read, so that frame is at most q + 1 (one read but not
    #    yet queued) behind the frames read when the stage finished the previous one.
    #    Dropping the newest, or a queue that grows, takes frames long behind.
    assert len(stages.detected) >= 5
    for taken, produced, after in zip(stages.detected, stages.produced_when_done, stages.detected[1:]):
        assert produced >= taken + 12 or produced == n  # the stage's cost: 12 source frames
        assert after >= produced - q - 1, (taken, produced, after)
    # 2. Bounded depth behind each frame: the frames read before frame i reached the sink
    #    and written after it were in flight together with it, at most every slot there is.
    written = np.asarray(sink.indices)
    for index, lag in zip(sink.indices, sink.lag):
        behind = int(((written > index) & (written < index + lag)).sum())
        assert behind <= len(rt.pool), (index, lag, behind)
    assert rt.order_violations == 0
    assert sink.audio == src.audio_sent  # audio of dropped frames still reaches the sinks
    assert sink.closed and src.closed and rt.status()["state"] == "stopped"


class SlowSwapStages(TwoStages):
    """A fast detector and a swap that lasts `cost` source frames (the usual overload:
    the generator is the slowest stage). Records, per frame, how many swaps had started
    when its detection ran and when its swap started: the difference is the number of
    slowest-stage times the frame waited between the two stages."""

    def __init__(self, source: FakeSource, cost: int) -> None:
        self.source, self.cost = source, cost
        self.swaps_started = 0
        self.at_detect: dict[int, int] = {}
        self.waited: list[int] = []

    def detect(self, frame: np.ndarray, index: int) -> Sequence[Any]:
        self.at_detect[index] = self.swaps_started
        return ["face"]

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        index = decode(frame)
        self.waited.append(self.swaps_started - self.at_detect[index])
        self.swaps_started += 1
        self.source.wait_produced(self.source.produced + self.cost)
        frame[..., 2] = 200


class PacedSource(FakeSource):
    """A live camera stand-in: a frame about every millisecond (the stages get to run)."""

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        if self.count is not None and self.produced >= self.count:
            return None  # ends at once, like a camera unplugged: not one frame time later
        threading.Event().wait(0.001)
        return super().read_into(out)


@pytest.mark.parametrize("q", [1, 2])
def test_live_overload_latency_stays_bounded_by_the_slowest_stage(q: int) -> None:
    n = 400
    src = PacedSource(n, live=True)
    sink = FakeSink(src)
    stages = SlowSwapStages(src, cost=3)
    # The sink's own queue is roomy here: frames 1 ms apart on a loaded 2-core machine must
    # not make a starved sink thread drop (that is the output's drop, tested elsewhere).
    rt = make_pipeline(stages, source=src, sinks=[sink], settings=settings(queue_size=q, output_queue_size=8))
    rt.start()
    in_flight = []
    while not rt.wait(0.001):  # slots taken while the overload lasts
        assert rt.pool is not None
        in_flight.append(len(rt.pool) - rt.pool.free)
    snap = rt.status()
    assert_dropped_in_front_of_the_stages(snap)
    assert snap["frames_out"] + snap["dropped"] == n
    assert sink.indices == sorted(sink.indices) and sink.painted == sink.indices and all(sink.swapped)
    assert all(r.max_depth <= q for r in rt.queues)
    # a slot per queue entry (into detect, into swap, the output's own) and per thread
    # (capture, detect, swap, the output)
    assert max(in_flight) <= len(rt.pool) == 2 * q + 3 + rt.settings.output_queue_size + 1
    # A detected frame waits at most the swaps of the q frames queued before it: the
    # detector takes a frame only when its result can be queued at once (it never holds
    # a finished, ageing frame), and the capture ring keeps the newest frame meanwhile.
    assert max(stages.waited) <= q, stages.waited
    assert sink.audio == src.audio_sent


def test_file_policy_blocks_and_loses_nothing() -> None:
    n = 300
    src = FakeSource(n, live=False)
    sink = FakeSink(src)
    # the detector only runs once the reader is 2 frames ahead: the reader must block
    rt = make_pipeline(Stages(src, ahead=2), source=src, sinks=[sink], settings=settings(queue_size=2))
    run_to_end(rt)
    snap = rt.status()
    assert all(r.max_depth <= 2 for r in rt.queues)
    assert snap["frames_in"] == snap["frames_out"] == n and snap["dropped"] == 0
    assert sink.indices == list(range(n)) == sink.painted
    assert all(sink.swapped)
    assert sink.audio == src.audio_sent
    # a frame's own audio packet was written before the frame
    assert all(count >= index + 1 for index, count in sink.audio_before)


def test_forced_policy_overrides_source() -> None:
    src = FakeSource(100, live=True)
    rt = make_pipeline(Stages(src, ahead=2), source=src, sinks=[FakeSink()], settings=settings(policy="block"))
    run_to_end(rt)
    assert rt.status()["dropped"] == 0 and rt.frames_out() == 100


def test_stage_exception_passes_frame_through_unswapped(caplog: pytest.LogCaptureFixture) -> None:
    src = FakeSource(40, live=False)
    sink = FakeSink()
    rt = make_pipeline(Stages(fail_detect=[5], fail_swap=[7]), source=src, sinks=[sink])
    run_to_end(rt)
    assert sink.indices == list(range(40)) == sink.painted
    unswapped = [i for i, s in zip(sink.indices, sink.swapped) if not s]
    assert unswapped == [5, 7]
    snap = rt.status()
    assert snap["errors"] == {"detect": 1, "swap": 1}
    assert snap["degraded_stages"] == []
    logged = {(r.kv["stage"], r.kv["frame"]) for r in caplog.records if r.levelname == "ERROR"}
    assert logged == {("detect", 5), ("swap", 7)}


def test_repeated_failures_surface_as_degraded() -> None:
    src = FakeSource(None, live=True, gate_at=30)
    sink = FakeSink()
    rt = make_pipeline(
        Stages(always_fail=True), source=src, sinks=[sink], settings=settings(max_stage_errors=5, policy="block")
    )
    rt.start()
    src.wait_produced(30)
    seen = threading.Event()
    while not seen.wait(0.01):  # frames 0..29 are through the swap stage
        if rt.frames_out() >= 25:
            seen.set()
    status = rt.status()
    assert status["state"] == "degraded" and status["degraded_stages"] == ["swap"]
    assert status["errors"]["swap"] >= 25
    src.gate.set()
    rt.stop()
    assert rt.wait(10) and not any(sink.swapped)
    assert sink.painted == sink.indices


def test_pause_and_resume_mid_stream() -> None:
    src = FakeSource(100, live=False, gate_at=50)
    sink = FakeSink()
    rt = make_pipeline(Stages(), source=src, sinks=[sink])
    rt.start()
    reached = threading.Event()
    while not reached.wait(0.005):
        if rt.frames_out() >= 50:
            reached.set()
    rt.pause()
    assert rt.status()["paused"] is True
    src.gate.set()
    assert rt.wait(20)
    assert sink.indices == list(range(100))
    assert all(sink.swapped[:50]) and not any(sink.swapped[50:])
    rt2src = FakeSource(10, live=False)
    sink2 = FakeSink()
    rt2 = make_pipeline(Stages(), source=rt2src, sinks=[sink2])
    rt2.pause()
    rt2.resume()
    run_to_end(rt2)
    assert all(sink2.swapped)


def test_stop_drains_in_flight_frames_and_closes_sinks() -> None:
    src = FakeSource(None, live=True)
    sink = FakeSink(src)
    rt = make_pipeline(Stages(src, ahead=3), source=src, sinks=[sink])
    rt.start()
    src.wait_produced(100)
    rt.stop()
    assert rt.finished and sink.closed and src.closed
    snap = rt.status()
    assert snap["frames_in"] == snap["frames_out"] + snap["dropped"]
    assert sink.indices == sorted(sink.indices)
    assert snap["state"] == "stopped"


class HoldingStages(Stages):
    """Swap of frame `hold_at` waits for `release` (a stage busy when the stop comes)."""

    def __init__(self, hold_at: int) -> None:
        super().__init__()
        self.hold_at = hold_at
        self.holding = threading.Event()
        self.release = threading.Event()

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        if decode(frame) == self.hold_at:
            self.holding.set()
            assert self.release.wait(10)
        super().swap(frame, faces)


def test_stop_without_draining_accounts_for_every_frame_and_slot() -> None:
    src = FakeSource(None, live=False)
    sink = FakeSink(src)
    stages = HoldingStages(hold_at=5)
    rt = make_pipeline(stages, source=src, sinks=[sink], settings=settings(queue_size=1))
    rt.start()
    assert stages.holding.wait(10)
    stopper = threading.Thread(target=rt.stop, kwargs={"drain": False})
    stopper.start()
    closed = threading.Event()
    while not rt.sink_queues[0]._closed and not closed.wait(0.005):  # the abort happened
        pass
    stages.release.set()  # the swap stage finishes frame 5 into a closed ring
    stopper.join(10)
    assert rt.finished and sink.closed
    snap = rt.status()
    assert snap["frames_in"] == snap["frames_out"] + snap["dropped"]
    assert snap["dropped_by_reason"].get("stopped", 0) >= 1
    assert rt.pool is not None and rt.pool.free == len(rt.pool)  # every slot came back
    assert sink.indices == list(range(len(sink.indices))) and 5 not in sink.indices


class BrokenSource(FakeSource):
    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        if self.produced == 20:
            raise InputError("stream went away for good")
        return super().read_into(out)


def test_source_failure_ends_run_with_error_after_draining() -> None:
    src = BrokenSource(None, live=False)
    sink = FakeSink()
    rt = make_pipeline(Stages(), source=src, sinks=[sink])
    run_to_end(rt)
    assert sink.indices == list(range(20)) and sink.closed
    assert isinstance(rt.input_error, InputError)
    assert rt.status()["state"] == "failed"


def test_failing_sink_does_not_stop_the_others() -> None:
    class Flaky(FakeSink):
        def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
            if meta.index % 3 == 0:
                raise OSError("network hiccup")
            super().write(frame, meta)

    src = FakeSource(30, live=False)
    good, flaky = FakeSink(), Flaky()
    rt = make_pipeline(Stages(), source=src, sinks=[flaky, good])
    run_to_end(rt)
    assert good.indices == list(range(30))
    assert flaky.indices == [i for i in range(30) if i % 3]
    assert rt.status()["errors"] == {"output": 10}


def test_an_output_failing_beside_a_working_one_logs_once_and_turns_degraded(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(FakeSink):
        def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
            raise OSError(28, "No space left on device")

    src = FakeSource(30, live=False)
    good = FakeSink()
    rt = make_pipeline(Stages(), source=src, sinks=[Broken(), good], settings=settings(max_stage_errors=5))
    run_to_end(rt)
    assert good.indices == list(range(30))
    status = rt.status()
    assert status["errors"] == {"output": 30}
    assert "output" in status["degraded_stages"]  # the working output did not hide the broken one
    tracebacks = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(tracebacks) == 1  # the first failure of the streak, not one per frame


def test_observers_get_events_and_bad_observer_is_contained() -> None:
    class Counting:
        def __init__(self) -> None:
            self.calls: dict[str, int] = {}

        def __getattr__(self, name: str) -> Any:
            def record(*_: Any) -> None:
                self.calls[name] = self.calls.get(name, 0) + 1

            return record

    class Broken:
        def __getattr__(self, name: str) -> Any:
            def boom(*_: Any) -> None:
                raise RuntimeError("observer bug")

            return boom

    obs = Counting()
    src = FakeSource(20, live=False)
    rt = make_pipeline(Stages(), source=src, sinks=[FakeSink()], observers=[Broken(), obs])
    run_to_end(rt)
    assert obs.calls["frame_in"] == obs.calls["frame_out"] == 20
    assert obs.calls["stage_time"] == 20 * 4


def test_stage_descriptions_reach_the_status_and_no_stages_pass_frames_through() -> None:
    class Describing(Stages):
        @property
        def stages(self) -> list[Stage]:
            stages = super().stages
            stages[1].describe = lambda: {"source_identity": ["face.png"]}  # type: ignore[method-assign]
            return stages

    rt = make_pipeline(Describing(), source=FakeSource(1, live=False), sinks=[FakeSink()])
    run_to_end(rt)
    assert rt.status()["source_identity"] == ["face.png"]

    class Plain(FakeSink):
        def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
            self.indices.append(meta.index)

    sink = Plain()
    rt = make_pipeline(None, source=FakeSource(3, live=False), sinks=[sink])
    run_to_end(rt)
    assert rt.status()["stages"] == [] and "source_identity" not in rt.status()
    assert rt.status()["frames_out"] == 3 and sink.indices == [0, 1, 2]


def test_stage_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Pipeline(FakeSource(1, live=False), [*Stages().stages, Stages().stages[0]], [FakeSink()])


def test_a_stuck_output_neither_delays_nor_stops_the_others() -> None:
    """Live: a sink that blocks in write() drops its own frames (counted per output); the
    other sink gets every frame, and stop() closes it while the stuck one still hangs."""

    class Stuck(FakeSink):
        def __init__(self) -> None:
            super().__init__(name="stuck://")
            self.release = threading.Event()

        def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
            self.release.wait(30)

    class Camera(FakeSource):  # a frame every 5 ms
        def read_into(self, out: np.ndarray) -> FrameMeta | None:
            threading.Event().wait(0.005)
            return super().read_into(out)

    stuck, good = Stuck(), FakeSink(name="good://")
    src = Camera(60, live=True)
    q_out = 3
    rt = make_pipeline(
        Stages(), source=src, sinks=[stuck, good], settings=settings(drain_timeout=0.5, output_queue_size=q_out)
    )
    rt.start()
    deadline = time.monotonic() + 10
    while not good.closed and time.monotonic() < deadline:  # the input ended: good is finalised
        time.sleep(0.01)
    assert good.closed and not rt.finished  # the stuck output still hangs in write()
    outputs = rt.status()["output_frames"]
    written = len(good.indices)
    assert written >= 10 and good.indices == sorted(good.indices)
    good_dropped = outputs["good://"]["dropped"]  # only by thread scheduling, if at all
    assert outputs["good://"]["written"] == written and good_dropped <= written // 10
    # the stuck output holds one frame in write() and q_out waiting; it lost the others
    assert outputs["stuck://"] == {"written": 0, "dropped": written + good_dropped - q_out - 1}
    t0 = time.monotonic()
    rt.stop(drain=True)  # gives up on the stuck output after the drain deadline
    assert time.monotonic() - t0 < 0.5 + 1.5
    stuck.release.set()
    assert rt.wait(5)
    snap = rt.status()
    assert snap["frames_in"] == snap["frames_out"] + snap["dropped"]


def test_start_failure_closes_what_was_opened() -> None:
    class BadSink(FakeSink):
        def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
            raise OSError("cannot open")

    src = FakeSource(5, live=False)
    good = FakeSink()
    rt = make_pipeline(Stages(), source=src, sinks=[good, BadSink()])
    with pytest.raises(OSError):
        rt.start()
    assert good.closed and src.closed and rt.status()["state"] == "failed"


def test_io_counters_reach_observers_as_reconnects_and_capture_errors() -> None:
    class CountingSource(FakeSource):
        def read_into(self, out: np.ndarray) -> FrameMeta | None:
            meta = super().read_into(out)
            if meta is not None and meta.index in (3, 7):
                self.counters["reconnects"] += 1
            if meta is not None and meta.index == 5:
                self.counters["decode_errors"] += 2
            return meta

    src = CountingSource(10, live=False)
    src.counters = {"reconnects": 0, "decode_errors": 0}
    sink = FakeSink()
    sink.counters = {"reconnects": 1}  # type: ignore[attr-defined]
    rt = make_pipeline(Stages(), source=src, sinks=[sink])
    run_to_end(rt)
    snap = rt.status()
    assert snap["reconnects"] == {"source": 2, "fake-sink://": 1}
    assert snap["errors"] == {"capture": 2}


def test_stats_percentiles_fps_and_bounded_memory() -> None:
    from streamswap.pipeline.stats import Stats, format_stats_line

    now = [100.0]
    stats = Stats(window=50, clock=lambda: now[0])
    for i in range(1000):  # 1000 frames at 25 fps, latency 10..19 ms
        now[0] += 0.04
        stats.frame_in()
        stats.stage_time("swap", 0.005)
        stats.frame_out(0.010 + (i % 10) / 1000)
    stats.frame_dropped("pipeline_full")
    stats.stage_error("detect")
    snap = stats.snapshot()
    assert snap["frames_in"] == snap["frames_out"] == 1000 and snap["dropped"] == 1
    assert snap["fps_in"] == pytest.approx(25, rel=0.01) and snap["fps_out"] == pytest.approx(25, rel=0.01)
    assert 13 <= snap["latency_ms_p50"] <= 16 and 18 <= snap["latency_ms_p95"] <= 19
    assert snap["stage_ms"] == {"swap": 5.0}
    assert len(stats._latency) == 50  # only the last `window` samples are kept
    line = format_stats_line(snap)
    assert "fps 25.0→25.0" in line and "drops 1" in line and "swap 5.0" in line and "errors 1" in line
    assert re.search(r"latency p50 1\d ms p95 1[89] ms", line), line
    fast = format_stats_line(dict(snap, latency_ms_p50=0.43, latency_ms_p95=2.71))
    assert "latency p50 0.4 ms p95 2.7 ms" in fast  # a fast run does not read "0 ms"


def test_stats_printer_updates_one_line_on_a_tty() -> None:
    import io

    from streamswap.commands.run import StatsPrinter

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    printer = StatsPrinter(stream, render=lambda snap: f"out {snap['n']}")
    printer.show({"n": 1})
    printer.show({"n": 2})
    printer.done()
    assert stream.getvalue() == "\r\033[Kout 1\r\033[Kout 2\n"
