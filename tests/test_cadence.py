"""Adaptive detect-every-N with a fake clock: N follows the measured times on a live input,
stays bounded, steps down only after the lower N has fitted for a while, and files keep
the configured N."""

from __future__ import annotations

from streamswap.faces.cadence import SETTLE_S, WARMUP_CALLS, DetectCadence


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_frames(
    cadence: DetectCadence,
    clock: FakeClock,
    frames: int,
    detect_s: float,
    track_s: float,
    start: int = 0,
    last: list[int | None] | None = None,
) -> list[int]:
    """Drive `frames` frames at 30 fps through the cadence; returns the detector frames."""
    last = last if last is not None else [None]
    detected = []
    for index in range(start, start + frames):
        frame_start = index / 30
        clock.now = max(clock.now, frame_start)
        detect = cadence.due(index, last[0])
        cadence.begin()
        clock.now += detect_s if detect else track_s
        cadence.end(detect)
        if detect:
            last[0] = index
            detected.append(index)
    return detected


def test_files_keep_the_configured_n_however_slow_the_detector() -> None:
    clock = FakeClock()
    cadence = DetectCadence(detect_every=2, max_detect_every=6, clock=clock)
    cadence.set_live_rate(None)
    detected = run_frames(cadence, clock, 40, detect_s=0.5, track_s=0.001)
    assert detected == list(range(0, 40, 2)) and cadence.every == 2
    assert cadence.snapshot()["detect_adaptive"] is False


def test_live_n_is_the_smallest_that_holds_the_rate() -> None:
    clock = FakeClock()
    cadence = DetectCadence(detect_every=1, max_detect_every=6, clock=clock)
    cadence.set_live_rate(30)
    # 60 ms detector, 5 ms tracked frame, 33 ms frames: (60 + 2·5)/3 = 23 ms ≤ 0.85·33 → N = 3
    detected = run_frames(cadence, clock, 60, detect_s=0.060, track_s=0.005)
    assert cadence.every == 3
    assert detected[: WARMUP_CALLS + 1] == list(range(WARMUP_CALLS + 1))  # warm-up calls do not count
    gaps = {b - a for a, b in zip(detected[WARMUP_CALLS + 2 :], detected[WARMUP_CALLS + 3 :])}
    assert gaps == {3}
    snap = cadence.snapshot()
    assert snap["detect_every"] == 3 and snap["detect_adaptive"] is True and snap["detect_call_ms"] == 60.0


def test_n_is_bounded() -> None:
    clock = FakeClock()
    cadence = DetectCadence(detect_every=1, max_detect_every=4, clock=clock)
    cadence.set_live_rate(30)
    run_frames(cadence, clock, 60, detect_s=0.400, track_s=0.010)
    assert cadence.every == 4
    run_frames(cadence, clock, 60, detect_s=0.400, track_s=0.050, start=60)  # tracking alone too slow
    assert cadence.every == 4


def test_n_steps_down_one_at_a_time_after_it_settled() -> None:
    clock = FakeClock()
    cadence = DetectCadence(detect_every=1, max_detect_every=6, clock=clock)
    cadence.set_live_rate(30)
    last: list[int | None] = [None]
    run_frames(cadence, clock, 60, detect_s=0.100, track_s=0.004, last=last)
    high = cadence.every
    assert high >= 4
    # the machine gets quiet: the detector takes 20 ms; N does not drop at once
    run_frames(cadence, clock, 30, detect_s=0.020, track_s=0.004, start=60, last=last)
    assert high - 1 <= cadence.every <= high
    seen = []
    for i in range(8):
        run_frames(cadence, clock, int(30 * SETTLE_S), detect_s=0.020, track_s=0.004, start=90 + i * 60, last=last)
        seen.append(cadence.every)
    assert seen[-1] == 1
    assert all(a - b <= 1 for a, b in zip(seen, seen[1:]))  # one step per settle time, never a jump
    assert seen == sorted(seen, reverse=True)


def test_a_slow_spell_raises_n_at_once() -> None:
    clock = FakeClock()
    cadence = DetectCadence(detect_every=1, max_detect_every=6, clock=clock)
    cadence.set_live_rate(30)
    last: list[int | None] = [None]
    run_frames(cadence, clock, 30, detect_s=0.015, track_s=0.003, last=last)
    assert cadence.every == 1
    run_frames(cadence, clock, 12, detect_s=0.090, track_s=0.003, start=30, last=last)
    assert cadence.every >= 3


def test_detect_every_shows_in_the_stats_line_and_log_fields() -> None:
    from streamswap.commands.progress import flat_stats
    from streamswap.pipeline.stats import Stats, format_stats_line

    snap = Stats().snapshot()
    assert "detect 1/" not in format_stats_line(snap)
    cadence = DetectCadence(detect_every=1, max_detect_every=4, clock=FakeClock())
    cadence.set_live_rate(30)
    live = dict(snap, **cadence.snapshot())
    assert format_stats_line(live).endswith("| detect 1/1 auto")
    cadence.every = 3
    assert "| detect 1/3 auto" in format_stats_line(dict(snap, **cadence.snapshot()))
    assert flat_stats(dict(snap, **cadence.snapshot()))["detect_every"] == 3
    fixed = DetectCadence(detect_every=2)
    assert format_stats_line(dict(snap, **fixed.snapshot())).endswith("| detect 1/2")


class _ClockedDetector:
    """A detector that 'takes' `seconds` of the fake clock and finds the anchor scene's face."""

    def __init__(self, clock: FakeClock, seconds: float, truth: dict[int, object]) -> None:
        self.clock, self.seconds, self.truth, self.index = clock, seconds, truth, 0

    def detect(self, bgr):  # noqa: ANN001 - a Detector
        from test_face_flow import face_at

        self.clock.now += self.seconds
        face = face_at(self.truth[self.index])
        face.track_id = None
        return [face]


def test_detect_stage_adapts_on_a_live_input_and_follows_faces_in_between() -> None:
    """DetectStage with a slow detector on a live 30 fps input: the detector runs on one frame
    of N (N from the measured times, shown by describe()), and on the frames in between the
    face is followed by optical flow, not held where the detector saw it."""
    from fractions import Fraction

    import numpy as np
    from test_face_flow import scene, textured_photo

    from streamswap.faces.settings import TrackingSettings
    from streamswap.faces.stages import DetectStage
    from streamswap.io.base import VideoFormat

    clock = FakeClock()
    truth: dict[int, object] = {}
    detector = _ClockedDetector(clock, 0.070, truth)
    stage = DetectStage(
        detector, tracking=TrackingSettings(detect_every=1, max_detect_every=4, smoothing=0.0), clock=clock
    )
    stage.start(VideoFormat(1280, 720, Fraction(30), Fraction(1, 30)), live=True)
    photo = textured_photo()
    errors = []
    for index in range(40):
        clock.now = max(clock.now, index / 30)
        frame, truth[index] = scene(index, photo)
        detector.index = index
        faces = stage.faces(frame, index)
        errors.append(float(np.abs(faces[0].box - truth[index]).max()))
    snap = stage.describe()
    assert snap["detect_adaptive"] is True and snap["detect_every"] == 3  # (70 + 2·~0)/3 ms ≤ 28 ms
    assert stage.detector_calls <= 40 // 3 + 3
    assert max(errors[10:]) < 4  # tracked frames follow the moving photo (~15 px a frame)

    # the same stage on a file: every frame runs the detector, whatever it costs
    stage.close()
    stage.start(VideoFormat(1280, 720, Fraction(30), Fraction(1, 30)), live=False)
    calls = stage.detector_calls
    for index in range(10):
        frame, truth[index] = scene(index, photo)
        detector.index = index
        stage.faces(frame, index)
    assert stage.detector_calls - calls == 10 and stage.describe()["detect_every"] == 1


def test_n_counts_the_frames_the_stage_processes_not_source_indices() -> None:
    """On a live input the capture ring drops frames: indices 0, 2, 5, … still run the
    detector on one processed frame of N; an index going back (a new stream) runs it at once."""
    import numpy as np

    from streamswap.faces.settings import TrackingSettings
    from streamswap.faces.stages import DetectStage

    class Counting:
        def detect(self, bgr):  # noqa: ANN001 - a Detector
            return []

    stage = DetectStage(Counting(), tracking=TrackingSettings(detect_every=3))
    frame = np.zeros((48, 64, 3), np.uint8)
    ran = []
    for index in (0, 2, 5, 6, 9, 13, 14, 18, 20):
        calls = stage.detector_calls
        stage.faces(frame, index)
        ran.append(stage.detector_calls > calls)
    assert ran == [True, False, False, True, False, False, True, False, False]
    assert stage.describe()["input_dropped_share"] > 0  # the gaps were seen as drops
    calls = stage.detector_calls
    stage.faces(frame, 1)  # the input started again
    assert stage.detector_calls == calls + 1


def test_drops_before_the_stage_raise_n_step_by_step_and_it_returns_when_they_stop() -> None:
    """The detect stage fits its interval, but the pipeline drops half the input (another
    stage or process short of CPU): N rises one step per RAISE_S up to the bound; once nothing
    is dropped any more it comes back down."""
    from streamswap.faces.cadence import RAISE_S

    clock = FakeClock()
    cadence = DetectCadence(detect_every=1, max_detect_every=4, clock=clock)
    cadence.set_live_rate(30)
    last: list[int | None] = [None]
    seen = []
    for second in range(6):  # every other source frame reaches the stage
        for k in range(15):
            frame = second * 15 + k
            clock.now = max(clock.now, frame / 15)
            cadence.record_input(0 if frame == 0 else 1)
            detect = cadence.due(frame, last[0])
            cadence.begin()
            clock.now += 0.010 if detect else 0.002
            cadence.end(detect)
            if detect:
                last[0] = frame
        seen.append(cadence.every)
    assert seen[-1] == 4 and seen[0] <= 2
    assert all(b - a <= max(1, int(1 / RAISE_S)) for a, b in zip(seen, seen[1:]))  # one step at a time
    assert cadence.snapshot()["input_dropped_share"] > 0.3
    for second in range(20):  # the machine is free again: nothing dropped
        for k in range(30):
            frame = 1000 + second * 30 + k
            clock.now = max(clock.now, 100 + frame / 30)
            cadence.record_input(0)
            detect = cadence.due(frame, last[0])
            cadence.begin()
            clock.now += 0.010 if detect else 0.002
            cadence.end(detect)
            if detect:
                last[0] = frame
    assert cadence.every == 1
