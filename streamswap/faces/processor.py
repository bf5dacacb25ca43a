"""FaceProcessor: the face side of the pipeline (`pipeline.stages.FaceStages`).

detect(frame, index): the detector runs every `faces.tracking.detect_every` frames; in
between, each track's face is re-found by the landmarker from its previous landmarks
(MediaPipe's detect-then-track scheme), or held where it was when there is no landmarker.
Tracks keep stable ids (IoU matching) and their points are smoothed over time.

swap(frame, faces): the configured swapper (mesh or a neural adapter) replaces the faces
in place. `set_source_images` may be called from any thread (the control API): the new
identity is computed in the caller's thread and handed over to the swap stage, which
starts using it at its next call.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import cv2
import numpy as np

from streamswap.errors import InputError
from streamswap.faces.detectors.common import Detector
from streamswap.faces.identity import ArcFace, ImageLike, LatentCache, load_source, pick_face, source_label
from streamswap.faces.landmarks import attach_mesh
from streamswap.faces.people import People
from streamswap.faces.selection import DEFAULT_SOURCE
from streamswap.faces.settings import TrackingSettings
from streamswap.faces.tracking import FaceTracker, iou
from streamswap.faces.types import Face
from streamswap.io.images import read_image
from streamswap.logs import kv

log = logging.getLogger(__name__)


class Landmarker(Protocol):
    last_presence: np.ndarray

    def landmarks_many(self, bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray: ...


class SwapperLike(Protocol):
    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None: ...


def _detect_with_mesh(detector: Detector, landmarker: Landmarker | None, bgr: np.ndarray,
                      tracker: FaceTracker | None = None) -> list[Face]:
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


class _SourceDetector:
    """Detector + landmarker as one `detect` for source photos, serialised with the
    pipeline's own use of the same objects (they keep work buffers, so two threads must not
    share them).

    A tight face crop (e.g. an aligned 112×112 ArcFace crop, a passport-style head shot)
    leaves the detector no context and it finds nothing: such a photo is tried once more
    inside a margin of half its size, and the face is mapped back to the photo's pixels."""

    def __init__(self, detector: Detector, landmarker: Landmarker | None, lock: threading.Lock) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.lock = lock

    def detect(self, bgr: np.ndarray) -> list[Face]:
        with self.lock:
            faces = _detect_with_mesh(self.detector, self.landmarker, bgr)
            if faces:
                return faces
            pad = max(bgr.shape[:2]) // 2
            padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            faces = _detect_with_mesh(self.detector, self.landmarker, padded)
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


class _LatentCapture:
    """Stands in for a neural swapper in `identity.load_source` so the latent is computed
    (or read from the cache) now but only handed to the swapper at its next frame."""

    def __init__(self, swapper: Any) -> None:
        self.swapper = swapper
        self.cache_key = swapper.cache_key
        self.latent_value: np.ndarray | None = None

    def latent(self, identity: Any) -> np.ndarray:
        return self.swapper.latent(identity)

    def set_latent(self, latent: np.ndarray) -> None:
        self.latent_value = latent


class FaceProcessor:
    """Detect/track, landmark, smooth and swap faces; implements `FaceStages`."""

    def __init__(
        self,
        detector: Detector,
        swapper: SwapperLike | None,
        *,
        landmarker: Landmarker | None = None,
        tracking: TrackingSettings | None = None,
        recognizer: ArcFace | None = None,
        source_face_index: int | None = None,
        latent_cache: LatentCache | None = None,
        min_presence: float = 0.5,
        enhancer: Any = None,
    ) -> None:
        self.detector = detector
        self.landmarker = landmarker
        self.swapper = swapper
        self.enhancer = enhancer  # optional: enhance(frame, faces) after the swap
        self.recognizer = recognizer
        self.tracking = tracking or TrackingSettings()
        self.source_face_index = source_face_index
        self.latent_cache = latent_cache
        self.min_presence = min_presence
        # With a landmarker, a track lives while the landmarker still sees its face; without
        # one, it survives a single missed detection.
        self.tracker = FaceTracker(smoothing=self.tracking.smoothing,
                                   max_missed=30 if landmarker is not None else 1)
        self.detector_calls = 0
        self.source_names: list[str] = []
        self._last_detect: int | None = None
        self._models_lock = threading.Lock()  # detector/landmarker buffers: one user at a time
        self._sources_lock = threading.Lock()  # one identity computation at a time
        self._pending_lock = threading.Lock()
        self._pending: Callable[[], None] | None = None
        self._has_identity = False
        self._source_detector = _SourceDetector(detector, landmarker, self._models_lock)
        self._default_latent: np.ndarray | None = None
        # Who is swapped and with which source (faces.select / faces.map), live-changeable.
        self.people = People(self._source_detector.detect, self._identity_of, recognizer)

    # --- FaceStages ---------------------------------------------------------------------------
    def detect(self, frame: np.ndarray, index: int) -> list[Face]:
        """Faces of `frame` (frame sequence number `index`), tracked and smoothed."""
        faces = self._tracked(frame, index)
        return self.people.choose(frame, faces, index) if self.people.active else faces

    def _tracked(self, frame: np.ndarray, index: int) -> list[Face]:
        with self._models_lock:
            last = self._last_detect
            # A lost track resets `last`; an empty scene still waits for the detector's turn,
            # so no face in view does not turn detect-every-N into detect-every-frame.
            if last is None or index < last or index - last >= self.tracking.detect_every:
                return self._detect(frame, index)
            return self._track(frame)

    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        """Replace `faces` in `frame` in place with the current source identity."""
        self._apply_pending()
        if self.swapper is None or not faces:
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
            elif not self._swap_as(frame, group, self.people.identities.get(key)):
                continue
            swapped.extend(group)
        if self.enhancer is not None and swapped:
            self.enhancer.enhance(frame, swapped)

    def _swap_as(self, frame: np.ndarray, faces: list[Face], identity: Any) -> bool:
        """Swap `faces` with a mapping's identity (one generator call for the group)."""
        if identity is None:
            return False
        if hasattr(self.swapper, "prepare_identity"):  # mesh: identities go per face
            self.swapper.swap(frame, faces, identities=[identity] * len(faces))
            return True
        self.swapper.set_latent(identity)
        try:
            self.swapper.swap(frame, faces)
        finally:
            if self._default_latent is not None:
                self.swapper.set_latent(self._default_latent)
        return True

    def detect_still(self, image: np.ndarray) -> list[Face]:
        """Faces of a still photo (no tracking across images). A face cropped too tightly
        for the detector (e.g. a 112 px aligned crop) gets the same padded retry as a source
        photo."""
        self.reset()
        faces = self._tracked(image, 0) or self._source_detector.detect(image)
        return self.people.choose(image, faces, 0) if self.people.active else faces

    def reset(self) -> None:
        """Forget all tracks (a new, unrelated image or stream follows)."""
        with self._models_lock:
            self.tracker.reset()
            self._last_detect = None
            self.people.reset()

    # --- identity -----------------------------------------------------------------------------
    def set_source_images(self, images: Sequence[ImageLike]) -> None:
        """Compute the identity of `images` (arrays or paths, `~` expanded) now, in the caller's
        thread, and switch to it at the swap stage's next call. Raises NoFaceError/InputError
        naming the image when one has no usable face; the current identity then stays."""
        if not images:
            raise InputError("no source image given; pass at least one face photo")
        images = [item if isinstance(item, np.ndarray) else Path(item).expanduser() for item in images]
        names = [source_label(item, i) for i, item in enumerate(images)]
        with self._sources_lock:
            apply = self._prepare(list(images), names)
        with self._pending_lock:
            self._pending = apply
        log.info("source identity ready", extra=kv(images=len(images), first=names[0]))

    def _identity_of(self, images: list[ImageLike], names: list[str]) -> Any:
        """The swapper's identity object for source photos (mesh: texture; neural: latent)."""
        swapper = self.swapper
        if swapper is None:
            raise InputError("no swapper configured; set faces.swapper.model")
        if hasattr(swapper, "prepare_identity"):  # the mesh swapper: texture + landmarks
            pairs = []
            for item, name in zip(images, names):
                bgr = item if isinstance(item, np.ndarray) else read_image(item)
                face = pick_face(self._source_detector.detect(bgr), self.source_face_index, name)
                pairs.append((bgr, face))
            return swapper.prepare_identity(pairs, names)
        if self.recognizer is None:
            raise InputError(f"the {getattr(swapper, 'name', 'configured')} swapper needs a recognizer; "
                             "set faces.recognizer.model (e.g. arcface_w600k_r50)")
        capture = _LatentCapture(swapper)
        load_source(images, capture, self._source_detector, self.recognizer,
                    face_index=self.source_face_index, cache=self.latent_cache)
        return capture.latent_value

    def _prepare(self, images: list[ImageLike], names: list[str]) -> Callable[[], None]:
        swapper = self.swapper
        identity = self._identity_of(images, names)

        def apply() -> None:
            if hasattr(swapper, "prepare_identity"):
                swapper.set_identity(identity)
            else:
                swapper.set_latent(identity)
                self._default_latent = identity
            self.source_names = names

        return apply

    def _apply_pending(self) -> None:
        if self._pending is None:
            return
        with self._pending_lock:
            apply, self._pending = self._pending, None
        if apply is not None:
            apply()
            self._has_identity = True

    # --- detection and tracking ---------------------------------------------------------------
    def _detect(self, frame: np.ndarray, index: int) -> list[Face]:
        self._last_detect = index
        self.detector_calls += 1
        out = self.tracker.update(_detect_with_mesh(self.detector, self.landmarker, frame, self.tracker))
        if self.landmarker is None:
            return out
        # Faces the detector missed this time keep being followed by their landmarks: the
        # detector adds faces, a single missed detection must not make a swap blink.
        missed = [f for f in self.tracker.predict() if self.tracker.tracks[f.track_id].missed > 0]
        if missed:
            boxes = np.stack([f.box for f in out]) if out else np.zeros((0, 4), np.float32)
            for face in self._follow(frame, missed, on_loss_detect=False):
                if len(boxes) and iou(face.box[None], boxes).max() > 0.3:
                    self.tracker.drop(face.track_id)  # a stale twin of a detected face
                    continue
                out.append(face)
        return out

    def _track(self, frame: np.ndarray) -> list[Face]:
        predicted = self.tracker.predict()
        if self.landmarker is None or not predicted:
            return [self.tracker.observe(f.track_id, f) for f in predicted]  # held in place
        return self._follow(frame, predicted)

    def _follow(self, frame: np.ndarray, predicted: list[Face], on_loss_detect: bool = True) -> list[Face]:
        """Re-find tracked faces with the landmarker; drop those it no longer sees."""
        assert self.landmarker is not None
        meshes = self.landmarker.landmarks_many(frame, predicted)
        presence = getattr(self.landmarker, "last_presence", None)
        out = []
        for i, (face, mesh) in enumerate(zip(predicted, meshes)):
            if presence is not None and len(presence) == len(predicted) and presence[i] < self.min_presence:
                self.tracker.drop(face.track_id)
                if on_loss_detect:  # lost: the next frame runs the detector
                    self._last_detect = None
                continue
            attach_mesh(face, mesh)
            out.append(self.tracker.observe(face.track_id, face))
        return out

