"""The face stages (faces/stages.py) with scripted stand-ins for the models: detect-every-N,
landmark tracking in between, stable track ids, smoothing, and the identity handoff from
the preparer (its own detector instance, its own thread) to the swap stage."""

from __future__ import annotations

import threading
from typing import Sequence

import numpy as np
import pytest

from streamswap.errors import Busy, NoFaceError
from streamswap.faces import stages as stages_mod
from streamswap.faces.settings import TrackingSettings
from streamswap.faces.stages import (
    MAX_WAITING_IDENTITIES,
    DetectStage,
    FaceStageSet,
    IdentityPreparer,
    SourceDetector,
    SwapStage,
)
from streamswap.faces.tracking import FaceTracker, OneEuroFilter, iou
from streamswap.faces.types import Face

SIDE = 100.0
_rng = np.random.default_rng(7)
# A fixed 468-point layout in a unit square (what a mesh looks like to the tracker).
LAYOUT = _rng.uniform(-0.5, 0.5, size=(468, 3)).astype(np.float32)
LAYOUT[:, 2] *= 0.2


def face_at(cx: float, cy: float, side: float = SIDE) -> Face:
    h = side / 2
    kps = np.array(
        [[cx - 20, cy - 10], [cx + 20, cy - 10], [cx, cy + 5], [cx - 15, cy + 25], [cx + 15, cy + 25]], np.float32
    )
    return Face(box=np.array([cx - h, cy - h, cx + h, cy + h], np.float32), score=0.9, kps=kps)


class Scene:
    """Where the faces really are in the current frame (centres), set by each test."""

    def __init__(self, centres: list[tuple[float, float]]) -> None:
        self.centres = centres
        self.noise = 0.0


class FakeDetector:
    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.calls = 0
        self.reverse = False
        self.miss: set[int] = set()  # indices of real faces the detector overlooks

    def detect(self, bgr: np.ndarray) -> list[Face]:
        self.calls += 1
        faces = [face_at(x, y) for i, (x, y) in enumerate(self.scene.centres) if i not in self.miss]
        return faces[::-1] if self.reverse else faces


class FakeLandmarker:
    """Puts the mesh on the real face nearest to the face it is given (as FaceMesh does
    when its crop still contains the face); presence 0 when no real face is near."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.calls = 0
        self.last_presence = np.zeros(0, np.float32)

    def landmarks_many(self, bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        self.calls += 1
        out = np.empty((len(faces), 468, 3), np.float32)
        presence = np.zeros(len(faces), np.float32)
        for i, face in enumerate(faces):
            cx, cy = face.center
            if self.scene.centres:
                d = [np.hypot(cx - x, cy - y) for x, y in self.scene.centres]
                j = int(np.argmin(d))
                if d[j] < SIDE:
                    cx, cy = self.scene.centres[j]
                    presence[i] = 0.99
            noise = _rng.normal(0, self.scene.noise, size=(468, 3)).astype(np.float32) if self.scene.noise else 0
            out[i] = LAYOUT * SIDE + np.array([cx, cy, 0], np.float32) + noise
        self.last_presence = presence
        return out


class FakeSwapper:
    """Records which identity each swap call used."""

    def __init__(self) -> None:
        self.identity = None
        self.used: list[object] = []
        self.prepared = 0

    name = "fake"

    def prepare_identity(self, sources):
        self.prepared += 1
        return ("identity", int(sources.faces[0].image[0, 0, 0]))

    def set_identity(self, identity) -> None:
        self.identity = identity

    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        self.used.append(self.identity)


FRAME = np.zeros((480, 640, 3), np.uint8)


def make(scene: Scene, every: int = 1, smoothing: float = 0.0, landmarks: bool = True):
    det = FakeDetector(scene)
    lm = FakeLandmarker(scene) if landmarks else None
    sw = FakeSwapper()
    detect = DetectStage(det, landmarker=lm, tracking=TrackingSettings(detect_every=every, smoothing=smoothing))
    swap = SwapStage(sw)
    # The preparer has its own detector and landmarker instances (same scene).
    preparer = IdentityPreparer(
        SourceDetector(FakeDetector(scene), FakeLandmarker(scene) if landmarks else None), sw, swap
    )
    return Proc(FaceStageSet(detect, swap, preparer)), det, lm, sw


class Proc:
    """The calls a tool makes on the stage set, by their old short names."""

    def __init__(self, stages: FaceStageSet) -> None:
        self.stages = stages
        self.detect = stages.detect.detect
        self.swap = stages.swap.swap
        self.set_source_images = stages.set_source_images

    @property
    def detector_calls(self) -> int:
        return self.stages.detect.detector_calls

    @property
    def source_names(self) -> list[str]:
        return list(self.stages.source_names)


@pytest.mark.parametrize("every, expected", [(1, 10), (3, 4), (4, 3), (10, 1)])
def test_detector_runs_every_n_frames(every: int, expected: int) -> None:
    scene = Scene([(200, 200)])
    proc, det, lm, _ = make(scene, every=every)
    for index in range(10):
        faces = proc.detect(FRAME, index)
        assert len(faces) == 1 and faces[0].landmarks is not None
    assert det.calls == expected == proc.detector_calls
    assert lm.calls == 10  # landmarks every frame, tracked frames included


def test_empty_scene_does_not_detect_every_frame() -> None:
    scene = Scene([])
    proc, det, _, _ = make(scene, every=5)
    for index in range(10):
        assert proc.detect(FRAME, index) == []
    assert det.calls == 2


def test_lost_track_triggers_detection_next_frame() -> None:
    scene = Scene([(200, 200)])
    proc, det, _, _ = make(scene, every=30)
    proc.detect(FRAME, 0)
    proc.detect(FRAME, 1)
    assert det.calls == 1
    scene.centres = []  # the face leaves: the landmarker loses it
    assert proc.detect(FRAME, 2) == []
    scene.centres = [(400, 300)]
    faces = proc.detect(FRAME, 3)
    assert det.calls == 2 and len(faces) == 1


def test_track_ids_stable_under_motion_and_detector_order() -> None:
    scene = Scene([(150, 200), (450, 220)])
    proc, det, _, _ = make(scene, every=3)
    ids = None
    for index in range(30):
        scene.centres = [(150 + 4 * index, 200 + 2 * index), (450 - 3 * index, 220 + index)]
        det.reverse = index % 2 == 1  # the detector's order must not matter
        faces = proc.detect(FRAME, index)
        assert len(faces) == 2
        current = []
        for x, y in scene.centres:  # the id of the face found at each true face
            nearest = min(faces, key=lambda f: np.hypot(f.center[0] - x, f.center[1] - y))
            assert np.hypot(nearest.center[0] - x, nearest.center[1] - y) < 15
            current.append(nearest.track_id)
        ids = ids or current
        assert current == ids, f"frame {index}: ids {current} != {ids}"
    assert ids[0] != ids[1]


def test_face_the_detector_misses_keeps_its_track() -> None:
    scene = Scene([(150, 200), (450, 200)])
    proc, det, _, _ = make(scene, every=2)
    first = {round(f.center[0]): f.track_id for f in proc.detect(FRAME, 0)}
    det.miss = {1}
    for index in range(1, 8):  # detector runs at 2, 4, 6 and never sees the right face
        faces = proc.detect(FRAME, index)
        assert {round(f.center[0]): f.track_id for f in faces} == first
    assert det.calls == 4
    scene.centres = [(150, 200)]  # the right face really leaves: its track ends
    assert [f.track_id for f in proc.detect(FRAME, 8)] == [first[150]]


def test_new_face_gets_a_new_id_without_disturbing_others() -> None:
    scene = Scene([(150, 200)])
    proc, _, _, _ = make(scene, every=1, landmarks=False)
    (a,) = proc.detect(FRAME, 0)
    scene.centres = [(150, 200), (450, 200)]
    faces = proc.detect(FRAME, 1)
    ids = {round(f.center[0]): f.track_id for f in faces}
    assert ids[150] == a.track_id and ids[450] != a.track_id


def test_without_landmarker_faces_are_held_between_detections() -> None:
    scene = Scene([(200, 200)])
    proc, det, _, _ = make(scene, every=4, landmarks=False)
    first = proc.detect(FRAME, 0)[0]
    scene.centres = [(260, 200)]
    held = proc.detect(FRAME, 1)[0]
    assert held.track_id == first.track_id and np.allclose(held.box, first.box)
    assert det.calls == 1


def _jitter(smoothing: float, noise: float = 2.0, frames: int = 60) -> float:
    scene = Scene([(300, 240)])
    scene.noise = noise
    proc, _, _, _ = make(scene, every=1, smoothing=smoothing)
    track = []
    for index in range(frames):
        track.append(proc.detect(FRAME, index)[0].landmarks[:, :2].copy())
    series = np.stack(track[10:])  # after the filter settled
    return float(series.std(axis=0).mean())


def test_smoothing_reduces_jitter() -> None:
    raw = _jitter(0.0)
    smooth = _jitter(0.8)
    assert raw > 1.5  # the noise is really there
    assert smooth < raw / 2


def test_smoothing_follows_motion_without_much_lag() -> None:
    scene = Scene([(100, 240)])
    proc, _, _, _ = make(scene, every=1, smoothing=0.8)
    errors = []
    for index in range(40):
        scene.centres = [(100 + 8 * index, 240)]  # 8 % of the face size per frame
        face = proc.detect(FRAME, index)[0]
        errors.append(abs(face.center[0] - scene.centres[0][0]))
    assert np.mean(errors[10:]) < 8.0  # less than one frame of motion behind


def test_one_euro_off_is_identity_and_iou_basics() -> None:
    f = OneEuroFilter(0.0)
    x = np.array([[1.0, 2.0]], np.float32)
    assert np.array_equal(f(x, 100), x)
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)
    m = iou(boxes, boxes)
    assert m[0, 0] == pytest.approx(1.0) and m[0, 1] == pytest.approx(50 / 150)
    assert FaceTracker().update([]) == []


def _image(value: int) -> np.ndarray:
    return np.full((64, 64, 3), value, np.uint8)


def test_identity_switch_takes_effect_at_the_next_swap() -> None:
    scene = Scene([(200, 200)])
    proc, _, _, sw = make(scene)
    faces = proc.detect(FRAME, 0)
    proc.swap(FRAME.copy(), faces)
    assert sw.used == []  # no identity yet: frames pass unchanged
    proc.set_source_images([_image(10)])
    assert sw.identity is None  # handed over at the swap stage's next call, not before
    proc.swap(FRAME.copy(), faces)
    assert sw.used[-1] == ("identity", 10)

    done = threading.Event()
    worker = threading.Thread(target=lambda: (proc.set_source_images([_image(20)]), done.set()))
    worker.start()
    worker.join(5)
    assert done.is_set()
    assert sw.used[-1] == ("identity", 10)
    proc.swap(FRAME.copy(), faces)
    assert sw.used[-1] == ("identity", 20)
    assert proc.source_names == ["source image #1"]


def test_source_without_face_keeps_the_current_identity() -> None:
    scene = Scene([(200, 200)])
    proc, _, _, sw = make(scene)
    proc.set_source_images([_image(10)])
    faces = proc.detect(FRAME, 0)
    proc.swap(FRAME.copy(), faces)
    scene.centres = []
    with pytest.raises(NoFaceError, match="source image #1"):
        proc.set_source_images([_image(30)])
    proc.swap(FRAME.copy(), faces)
    assert sw.used[-1] == ("identity", 10)


def test_source_path_with_a_tilde_is_read_from_home(tmp_path, monkeypatch) -> None:
    """A config's `source: [~/face.png]` names a file in the home folder (no shell expands it)."""
    import cv2

    monkeypatch.setenv("HOME", str(tmp_path))
    cv2.imwrite(str(tmp_path / "face.png"), _image(40))
    proc, _, _, sw = make(Scene([(200, 200)]))
    proc.set_source_images(["~/face.png"])
    proc.swap(FRAME.copy(), proc.detect(FRAME, 0))
    assert sw.used[-1] == ("identity", 40)
    assert proc.source_names == [str(tmp_path / "face.png")]


def test_identities_waiting_for_the_preparer_are_bounded(monkeypatch) -> None:
    """While the preparer is busy, MAX_WAITING_IDENTITIES requests wait; one more is told
    Busy (a retry-later error, not a queue that grows with every upload). The waiting ones
    all finish once the worker is free, and the last one submitted is the identity in use."""
    monkeypatch.setattr(stages_mod, "SUBMIT_TIMEOUT_S", 0.05)
    scene = Scene([(200, 200)])
    proc, _, _, sw = make(scene)
    entered, release = threading.Event(), threading.Event()
    prepare = sw.prepare_identity

    def blocking(sources):
        entered.set()
        release.wait(10)
        return prepare(sources)

    sw.prepare_identity = blocking
    preparer = proc.stages.identities
    first = preparer.submit([_image(1)])
    assert entered.wait(5)  # the worker holds the first; the queue is empty again
    waiting = [preparer.submit([_image(v)]) for v in range(2, 2 + MAX_WAITING_IDENTITIES)]
    with pytest.raises(Busy, match="try again"):
        preparer.submit([_image(99)])
    release.set()
    for future in [first, *waiting]:
        future.result(5)
    proc.swap(FRAME.copy(), proc.detect(FRAME, 0))
    assert sw.used[-1] == ("identity", 1 + MAX_WAITING_IDENTITIES)


def test_concurrent_detect_and_source_switch() -> None:
    """Source photos are detected on the preparer's thread while the detect stage runs."""
    scene = Scene([(200, 200)])
    proc, _, _, sw = make(scene, every=2, smoothing=0.5)
    errors: list[BaseException] = []

    def switch() -> None:
        try:
            for value in range(1, 30):
                proc.set_source_images([_image(value)])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=switch)
    worker.start()
    for index in range(200):
        faces = proc.detect(FRAME, index)
        assert len(faces) == 1
        proc.swap(FRAME, faces)
    worker.join(10)
    proc.swap(FRAME, proc.detect(FRAME, 200))
    assert not errors
    assert sw.used[-1] == ("identity", 29)


@pytest.mark.parametrize("max_missed", [1, 3])
def test_track_survives_exactly_max_missed_detector_runs(max_missed: int) -> None:
    """The edge: a track unmatched for `max_missed` runs keeps its id when its face comes
    back; one run more and it is gone, so the face returns with a new id."""
    for misses, kept in ((max_missed, True), (max_missed + 1, False)):
        tracker = FaceTracker(smoothing=0.0, max_missed=max_missed)
        (first,) = tracker.update([face_at(200, 200)])
        for _ in range(misses):
            tracker.update([])
        assert (first.track_id in tracker.tracks) is kept, (misses, max_missed)
        (back,) = tracker.update([face_at(200, 200)])
        assert (back.track_id == first.track_id) is kept, (misses, max_missed)
