"""The face side of the pipeline, one owner per part (`pipeline.stage.Stage`):

- `DetectStage` owns the detector, the landmarker and the tracker. The detector runs
  every `faces.tracking.detect_every` frames, on a live input every N frames with N
  adapted to the measured times so the stage holds the input's rate (`faces.cadence`,
  up to `max_detect_every`); in between, each track's face is re-found by the
  landmarker from its previous landmarks (MediaPipe's detect-then-track scheme), or
  followed by optical flow when there is no landmarker (`faces.flow`). Tracks keep
  stable ids (IoU matching) and their points are smoothed over time. Per-frame face
  selection (faces.select / faces.map through `faces.people.People`: which faces, which
  source each) runs on every frame's faces.
- `SwapStage` owns the swapper and the enhancer, and one "next identity" slot: a new
  identity is taken from it at a frame boundary, so a switch never stalls a frame. Faces
  mapped to another person's source are swapped group by group with that identity.
- `IdentityPreparer` turns source photos into an identity off the hot path: a worker
  thread with its own detector and landmarker instances (they keep work buffers, so they
  are never shared with the detect stage), then offers the result to the swap stage.
  Every way a face arrives (upload, reload, SIGHUP, config, `run --source`) uses it.

No lock is shared between the live stages and identity preparation.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from streamswap.errors import Busy, InputError
from streamswap.faces.cadence import DetectCadence
from streamswap.faces.detectors.common import Detector
from streamswap.faces.flow import FaceFlow
from streamswap.faces.identity import ImageLike, SourceFace, SourceFaces, identity_hash, pick_face, source_label
from streamswap.faces.landmarks import Landmarker, attach_mesh
from streamswap.faces.people import People
from streamswap.faces.selection import DEFAULT_SOURCE
from streamswap.faces.settings import TrackingSettings
from streamswap.faces.swappers.base import Enhancer, Swapper
from streamswap.faces.tracking import FaceTracker, iou
from streamswap.faces.types import Face
from streamswap.io.base import VideoFormat
from streamswap.io.images import read_image
from streamswap.logs import kv
from streamswap.pipeline.frame_queue import FrameItem
from streamswap.pipeline.stage import ErrorPolicy

log = logging.getLogger(__name__)

# Identity requests that may wait for the preparer; more are refused (each holds decoded
# photos in memory, and a burst of uploads must not grow the daemon without bound).
MAX_WAITING_IDENTITIES = 4
# How long a caller waits for a place in that queue before being told to retry.
SUBMIT_TIMEOUT_S = 30.0


def detect_with_mesh(
    detector: Detector, landmarker: Landmarker | None, bgr: np.ndarray, tracker: FaceTracker | None = None
) -> list[Face]:
    """The detector's faces, each with its dense mesh (and mesh key points) when there is a
    landmarker: all faces in one landmarker call. With a `tracker`, faces continuing a
    track are landmarked from the track's crop (`FaceTracker.seed`)."""
    faces = list(detector.detect(bgr))
    if tracker is not None and landmarker is not None:
        faces = tracker.seed(faces)
    if landmarker is not None and faces:
        for face, mesh in zip(faces, landmarker.landmarks_many(bgr, faces)):
            attach_mesh(face, mesh)
    return faces


class DetectStage:
    """Detect/track, landmark and smooth faces (see the module docstring)."""

    name = "detect"
    error_policy = ErrorPolicy(clear_faces=True)
    pausable = True

    def __init__(
        self,
        detector: Detector,
        *,
        landmarker: Landmarker | None = None,
        tracking: TrackingSettings | None = None,
        min_presence: float = 0.5,
        people: People | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.people = people  # faces.select / faces.map; None: every face, the main source
        self.tracking = tracking or TrackingSettings()
        self.min_presence = min_presence
        # With a landmarker, a track lives while the landmarker still sees its face; without
        # one, it survives a single missed detection.
        self.tracker = FaceTracker(smoothing=self.tracking.smoothing, max_missed=30 if landmarker is not None else 1)
        self.cadence = DetectCadence(self.tracking.detect_every, self.tracking.max_detect_every, clock=clock)
        self.flow = FaceFlow() if landmarker is None else None
        self.detector_calls = 0
        self._frames = 0  # frames this stage processed
        self._last_detect: int | None = None  # … of which the last that ran the detector
        self._last_index: int | None = None

    # --- Stage --------------------------------------------------------------------------------
    def start(self, video: VideoFormat, live: bool) -> None:
        """A live input adapts the detect period to its frame rate; a file keeps detect_every."""
        self.cadence.set_live_rate(float(video.fps) if live else None)

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        item.faces = self.faces(frame, item.meta.index)

    def describe(self) -> dict[str, Any]:
        return self.cadence.snapshot()

    def close(self) -> None:
        """A pipeline ended: the next one starts with fresh tracks."""
        self.reset()

    # --- work ---------------------------------------------------------------------------------
    def faces(self, frame: np.ndarray, index: int) -> list[Face]:
        """The faces to swap in frame `index`: found or tracked, then selected. The whole
        stage's time per frame is what the cadence weighs against the frame interval."""
        calls = self.detector_calls
        self.cadence.begin()
        try:
            return self.select(frame, self.detect(frame, index), index)
        finally:
            self.cadence.end(detect=self.detector_calls > calls)

    def select(self, frame: np.ndarray, faces: list[Face], index: int) -> list[Face]:
        """Which of the frame's faces are swapped, and with which source (`Face.source`):
        all of them with the main source unless faces.select / faces.map say otherwise."""
        if self.people is not None and self.people.active:
            return self.people.choose(frame, faces, index)
        return faces

    def detect(self, frame: np.ndarray, index: int) -> list[Face]:
        """Faces of `frame` (frame sequence number `index`), tracked and smoothed."""
        # A lost track resets `last`; an empty scene still waits for the detector's turn,
        # so no face in view does not turn detect-every-N into detect-every-frame. N counts
        # the frames this stage processes (a live input's drops leave gaps in `index`); an
        # index going back (a new stream) runs the detector.
        self._frames += 1
        if self._last_index is not None and index < self._last_index:
            self._last_detect = None
        elif self._last_index is not None:
            self.cadence.record_input(index - self._last_index - 1)  # frames dropped before us
        self._last_index = index
        if self.cadence.due(self._frames, self._last_detect):
            faces = self._detect(frame, index)
        else:
            faces = self._track(frame)
        if self.flow is not None and (self.cadence.adaptive or self.cadence.every > 1):
            self.flow.remember(frame, faces)  # where the next tracked frame follows them from
        return faces

    def reset(self) -> None:
        """Forget all tracks (a new, unrelated image or stream follows)."""
        self.tracker.reset()
        self._last_detect = self._last_index = None
        if self.flow is not None:
            self.flow.reset()
        if self.people is not None:
            self.people.reset()

    def _detect(self, frame: np.ndarray, index: int) -> list[Face]:
        self._last_detect = self._frames
        self.detector_calls += 1
        out = self.tracker.update(detect_with_mesh(self.detector, self.landmarker, frame, self.tracker))
        if self.landmarker is None:
            return out
        # Faces the detector missed this time keep being followed by their landmarks: the
        # detector adds faces, a single missed detection must not make a swap blink.
        missed = [f for f in self.tracker.predict() if self.tracker.tracks[_track(f)].missed > 0]
        if missed:
            boxes = np.stack([f.box for f in out]) if out else np.zeros((0, 4), np.float32)
            for face in self._follow(frame, missed, on_loss_detect=False):
                if len(boxes) and iou(face.box[None], boxes).max() > 0.3:
                    self.tracker.drop(_track(face))  # a stale twin of a detected face
                    continue
                out.append(face)
        return out

    def _track(self, frame: np.ndarray) -> list[Face]:
        predicted = self.tracker.predict()
        if self.landmarker is None or not predicted:
            if self.flow is not None:  # moved as the image moved (held when it cannot tell)
                predicted = self.flow.follow(frame, predicted)
            return [self.tracker.observe(_track(f), f) for f in predicted]
        return self._follow(frame, predicted)

    def _follow(self, frame: np.ndarray, predicted: list[Face], on_loss_detect: bool = True) -> list[Face]:
        """Re-find tracked faces with the landmarker; drop those it no longer sees."""
        assert self.landmarker is not None
        meshes = self.landmarker.landmarks_many(frame, predicted)
        presence = self.landmarker.last_presence
        out = []
        for i, (face, mesh) in enumerate(zip(predicted, meshes)):
            if len(presence) == len(predicted) and presence[i] < self.min_presence:
                self.tracker.drop(_track(face))
                if on_loss_detect:  # lost: the next frame runs the detector
                    self._last_detect = None
                continue
            attach_mesh(face, mesh)
            out.append(self.tracker.observe(_track(face), face))
        return out


def _track(face: Face) -> int:
    """The track id of a face the tracker handed out (always set there)."""
    assert face.track_id is not None
    return face.track_id


@dataclass(frozen=True)
class PreparedIdentity:
    """An identity ready for the swap stage: the swapper's own value and the photo names."""

    value: Any
    names: tuple[str, ...]


class SwapStage:
    """Swap (and enhance) the detected faces with the current identity, in place."""

    name = "swap"
    error_policy = ErrorPolicy(restore_frame=True)
    pausable = True

    def __init__(self, swapper: Swapper, *, enhancer: Enhancer | None = None, people: People | None = None) -> None:
        self.swapper = swapper
        self.enhancer = enhancer
        self.people = people  # the identities faces.map names (Face.source)
        self.source_names: tuple[str, ...] = ()
        self._identity: Any = None  # the main source's identity, once there is one
        # The "next identity" slot: written by the preparer, emptied by this stage at a frame
        # boundary. A deque of one: append replaces, popleft takes — both atomic, no lock.
        self._next: deque[PreparedIdentity] = deque(maxlen=1)
        self._has_identity = False

    def offer(self, identity: PreparedIdentity) -> None:
        """Use `identity` from the next frame on (any thread; a newer offer replaces an
        identity not taken yet)."""
        self._next.append(identity)

    # --- Stage --------------------------------------------------------------------------------
    def start(self, video: VideoFormat, live: bool) -> None:
        pass

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        self.swap(frame, item.faces)

    def describe(self) -> dict[str, Any]:
        return {"source_identity": list(self.source_names) or None}

    def close(self) -> None:
        pass

    # --- work ---------------------------------------------------------------------------------
    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        """Replace `faces` in `frame` in place: each with the source selection gave it
        (`Face.source`), by default the current main identity; one swapper call per group."""
        self._take_next()
        if not faces:
            return
        groups: dict[str, list[Face]] = {}
        for face in faces:
            groups.setdefault(face.source or DEFAULT_SOURCE, []).append(face)
        swapped: list[Face] = []
        for key, group in groups.items():
            if key == DEFAULT_SOURCE:
                if not self._has_identity:
                    continue
                self.swapper.swap(frame, group)
            else:
                mapped = self.people.identities.get(key) if self.people is not None else None
                if mapped is None:
                    continue
                self.swapper.set_identity(mapped)  # the same contract as the main identity
                try:
                    self.swapper.swap(frame, group)
                finally:
                    if self._has_identity:
                        self.swapper.set_identity(self._identity)
            swapped.extend(group)
        if self.enhancer is not None and swapped:
            self.enhancer.enhance(frame, swapped)

    def _take_next(self) -> None:
        try:
            identity = self._next.popleft()
        except IndexError:
            return
        self.swapper.set_identity(identity.value)
        self._identity = identity.value
        self.source_names = identity.names
        self._has_identity = True


class SourceDetector:
    """Detector + landmarker for source photos (the preparer's own instances).

    A tight face crop (e.g. an aligned 112×112 ArcFace crop, a passport-style head shot)
    leaves the detector no context and it finds nothing: such a photo is tried once more
    inside a margin of half its size, and the face is mapped back to the photo's pixels."""

    def __init__(self, detector: Detector, landmarker: Landmarker | None) -> None:
        self.detector = detector
        self.landmarker = landmarker

    def detect(self, bgr: np.ndarray) -> list[Face]:
        faces = detect_with_mesh(self.detector, self.landmarker, bgr)
        if faces:
            return faces
        pad = max(bgr.shape[:2]) // 2
        padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        faces = detect_with_mesh(self.detector, self.landmarker, padded)
        h, w = bgr.shape[:2]
        for face in faces:
            face.box = np.clip(face.box - pad, 0, [w, h, w, h]).astype(np.float32)
            face.kps = face.kps - np.float32(pad)
            if face.landmarks is not None:
                face.landmarks = face.landmarks - np.array([pad, pad, 0], np.float32)
            face.extra = {k: v - np.float32(pad) for k, v in face.extra.items()}
        if faces:
            log.info("source face found inside a margin (tight crop)", extra=kv(faces=len(faces)))
        return [f for f in faces if f.area > 0]


@dataclass
class _Request:
    work: Callable[[], Any]
    done: Future[Any] = field(default_factory=Future)


class IdentityPreparer:
    """Prepares identities on its own worker thread and offers them to the swap stage.

    `set_source_images` waits for the result (so the caller learns about a photo without
    a face) while the live stages go on; the worker starts on first use and is a daemon
    thread (it holds no output that needs finalising)."""

    def __init__(
        self,
        detector: SourceDetector,
        swapper: Swapper,
        target: SwapStage,
        *,
        face_index: int | None = None,
    ) -> None:
        self.detector = detector
        self.swapper = swapper
        self.target = target
        self.face_index = face_index
        self._requests: queue.Queue[_Request | None] = queue.Queue(MAX_WAITING_IDENTITIES)
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()  # one worker, however many callers arrive at once

    def set_source_images(self, images: Sequence[ImageLike]) -> tuple[str, ...]:
        """Prepare the identity of `images` (arrays or paths, `~` expanded) and switch to it
        at the swap stage's next frame; returns the photo names. Raises NoFaceError /
        InputError naming the photo when one has no usable face (the identity in use stays)."""
        return self.submit(images).result().names

    def submit(self, images: Sequence[ImageLike]) -> Future[PreparedIdentity]:
        """Queue `images` for preparation; the future ends with the identity (offered to the
        swap stage already) or the error. Raises Busy when too many wait."""
        if not images:
            raise InputError("no source image given; pass at least one face photo")
        items: list[ImageLike] = [i if isinstance(i, np.ndarray) else Path(i).expanduser() for i in images]
        names = [source_label(item, i) for i, item in enumerate(items)]

        def work() -> PreparedIdentity:
            identity = self.prepare(items, names)
            self.target.offer(identity)
            log.info("source identity ready", extra=kv(images=len(names), first=names[0]))
            return identity

        return self._submit(work)

    def call(self, work: Callable[[], Any]) -> Any:
        """Run `work` on the worker thread (its detector is only ever used there) and return
        its result; for others that turn photos into faces or identities (faces.people)."""
        if threading.current_thread() is self._thread:
            return work()
        return self._submit(work).result()

    def detect_source(self, bgr: np.ndarray) -> list[Face]:
        """Faces of a photo (with the padded retry for tight crops), found on the worker."""
        faces: list[Face] = self.call(lambda: self.detector.detect(bgr))
        return faces

    def prepare_value(self, images: list[ImageLike], names: list[str]) -> Any:
        """The swapper's identity value for photos (not offered to the swap stage)."""
        return self.call(lambda: self.prepare(images, names).value)

    def _submit(self, work: Callable[[], Any]) -> Future[Any]:
        request = _Request(work)
        self._ensure_worker()
        try:
            self._requests.put(request, timeout=SUBMIT_TIMEOUT_S)
        except queue.Full:
            raise Busy("busy preparing other source faces; try again in a moment") from None
        return request.done

    def prepare(self, images: Sequence[ImageLike], names: Sequence[str]) -> PreparedIdentity:
        """The identity of `images` (called on the worker thread; public for tools)."""
        photos = []
        for item, name in zip(images, names):
            bgr = item if isinstance(item, np.ndarray) else read_image(item)
            face = pick_face(self.detector.detect(bgr), self.face_index, name)
            photos.append(SourceFace(bgr, face, name))
        sources = SourceFaces(tuple(photos), identity_hash(images, self.face_index))
        return PreparedIdentity(self.swapper.prepare_identity(sources), tuple(names))

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        if self._thread is not None:
            self._requests.put(None)
            self._thread.join(5.0)
            self._thread = None

    def _ensure_worker(self) -> None:
        with self._start_lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="streamswap-identity", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            request = self._requests.get()
            if request is None:
                return
            try:
                result = request.work()
            except BaseException as exc:  # handed to the caller
                request.done.set_exception(exc)
                continue
            request.done.set_result(result)


@dataclass
class FaceStageSet:
    """The face stages of one configuration, built once and reused by every pipeline the
    process runs (models stay loaded): `stages` go into the pipeline in order; identities
    arrive through `identities`."""

    detect: DetectStage
    swap: SwapStage
    identities: IdentityPreparer
    people: People | None = None  # faces.select / faces.map, live-changeable (control API)
    on_close: list[Callable[[], None]] = field(default_factory=list)
    # The process's GPU context (inference.cuda.GpuContext) when these stages' networks run
    # on it: the pipeline's frame slots come from its pinned memory (wiring.build_pipeline).
    gpu: Any = None

    @property
    def stages(self) -> list[DetectStage | SwapStage]:
        return [self.detect, self.swap]

    @property
    def source_names(self) -> tuple[str, ...]:
        return self.swap.source_names

    def set_source_images(self, images: Sequence[ImageLike]) -> tuple[str, ...]:
        """See `IdentityPreparer.set_source_images`."""
        return self.identities.set_source_images(images)

    def detect_still(self, image: np.ndarray) -> list[Face]:
        """Faces of a still photo (no tracking across images). A face cropped too tightly
        for the detector (e.g. a 112 px aligned crop) gets the same padded retry as a source
        photo. For tools (`swap-image`, benches) on the caller's thread, never while a
        pipeline runs these stages."""
        self.detect.reset()
        faces = self.detect.detect(image, 0)
        if not faces:
            faces = SourceDetector(self.detect.detector, self.detect.landmarker).detect(image)
        return self.detect.select(image, faces, 0)

    def swap_image(self, image: np.ndarray) -> list[Face]:
        """Swap the faces of one still image in place (see `detect_still`); returns them."""
        faces = self.detect_still(image)
        self.swap.swap(image, faces)
        return faces

    def close(self) -> None:
        self.identities.close()
        for fn in self.on_close:
            fn()
