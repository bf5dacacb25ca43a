"""Face tracks across frames: stable ids by box overlap, and temporal smoothing of each
track's key points and landmarks so a swapped face does not shimmer.

Smoothing is a One-Euro filter (Casiez et al., CHI 2012) over a face's whole point set:
heavy smoothing while the face is still (kills landmark jitter), little while it moves
(no visible lag). Its speed term is how far the points' centroid moved, in face sizes per
frame: per-point noise averages out over hundreds of landmarks while real head motion
does not, and the behaviour does not depend on how large the face is in the frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from streamswap.faces.landmarks import five_points_from_mesh
from streamswap.faces.mesh_topology import NUM_LANDMARKS
from streamswap.faces.types import Face


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N, 4) and b (M, 4) (x1, y1, x2, y2) -> (N, M)."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


class OneEuroFilter:
    """One-Euro filter over a point array of fixed shape, one sample per frame.

    `smoothing` in [0, 1): the weight kept on the past while the face is still
    (0 = off). `beta` raises the cut-off with speed (in face sizes per frame).
    """

    def __init__(self, smoothing: float, beta: float = 20.0, d_cutoff: float = 1.0) -> None:
        self.smoothing = float(smoothing)
        self.beta = beta
        self.d_alpha = self._alpha(d_cutoff)
        # The still-face alpha is 1 - smoothing; as a cut-off frequency (frames as time unit):
        alpha = max(1.0 - self.smoothing, 1e-3)
        tau = 1.0 / alpha - 1.0
        self.min_cutoff = 1.0 / (2 * math.pi * tau) if tau > 0 else math.inf
        self._x: np.ndarray | None = None
        self._speed = 0.0

    @staticmethod
    def _alpha(cutoff: float) -> float:
        if math.isinf(cutoff):
            return 1.0
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau)

    def reset(self) -> None:
        self._x = None
        self._speed = 0.0

    def __call__(self, x: np.ndarray, scale: float) -> np.ndarray:
        """Filter one sample of points (N, D) (x, y first); `scale` is the face size in
        pixels (speed normaliser)."""
        x = np.asarray(x, dtype=np.float32)
        if self.smoothing <= 0:
            return x
        if self._x is None or self._x.shape != x.shape:
            self._x = x.copy()
            self._speed = 0.0
            return x
        shift = (x - self._x).reshape(len(x), -1).mean(axis=0)[:2]
        raw_speed = float(np.hypot(shift[0], shift[-1])) / max(scale, 1.0)
        self._speed += self.d_alpha * (raw_speed - self._speed)
        alpha = self._alpha(self.min_cutoff + self.beta * self._speed)
        self._x = self._x + alpha * (x - self._x)
        out: np.ndarray = self._x.copy()  # numpy's stub types ndarray.copy() as Any
        return out


@dataclass
class Track:
    """One face followed over frames."""

    id: int
    face: Face  # latest raw (unsmoothed) observation
    box_ratio: float = 1.0  # detector box size / landmark extent, to rebuild boxes from landmarks
    missed: int = 0  # detector runs in a row without a match
    filter: OneEuroFilter | None = field(default=None, repr=False)


def _copy_face(face: Face) -> Face:
    return Face(
        box=face.box.copy(),
        score=face.score,
        kps=face.kps.copy(),
        landmarks=None if face.landmarks is None else face.landmarks.copy(),
        embedding=face.embedding,
        track_id=face.track_id,
        extra=dict(face.extra),
    )


def landmark_extent(landmarks: np.ndarray) -> tuple[float, float, float]:
    """(cx, cy, side) of the landmarks' bounding box (side = its longer edge)."""
    xy = landmarks[:, :2]
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    c = (lo + hi) / 2
    return float(c[0]), float(c[1]), float(max(hi[0] - lo[0], hi[1] - lo[1]))


class FaceTracker:
    """Assigns stable track ids to detections and smooths each track's points.

    `update(faces)` after a detector run (IoU matching against the tracks);
    `predict()` between runs gives each track's face for the landmarker to refine;
    `observe(track_id, face)` records a tracked (not detected) observation.
    """

    def __init__(
        self, smoothing: float = 0.5, iou_threshold: float = 0.3, max_missed: int = 1, follow_iou: float = 0.5
    ) -> None:
        self.smoothing = smoothing
        self.iou_threshold = iou_threshold
        self.follow_iou = follow_iou
        self.max_missed = max_missed
        self.tracks: dict[int, Track] = {}
        self._next_id = 0

    def reset(self) -> None:
        self.tracks.clear()

    def _match(
        self, faces: Sequence[Face], skip_faces: Sequence[int] = (), skip_tracks: Sequence[int] = ()
    ) -> dict[int, int]:
        """Greedy IoU matching of `faces` to live tracks: face index -> track id."""
        ids = [tid for tid in self.tracks if tid not in skip_tracks]
        matched: dict[int, int] = {}
        if ids and faces:
            overlap = iou(np.stack([f.box for f in faces]), np.stack([self.tracks[i].face.box for i in ids]))
            pairs = sorted(
                ((overlap[fi, ti], fi, ti) for fi in range(len(faces)) for ti in range(len(ids))), reverse=True
            )
            used_f: set[int] = set(skip_faces)
            used_t: set[int] = set()
            for score, fi, ti in pairs:
                if score < self.iou_threshold:
                    break
                if fi in used_f or ti in used_t:
                    continue
                used_f.add(fi)
                used_t.add(ti)
                matched[fi] = ids[ti]
        return matched

    def seed(self, faces: Sequence[Face]) -> list[Face]:
        """The detector's faces as the landmarker should see them: a face that continues a
        track (box overlap ≥ `follow_iou` with the track's prediction) gets the track's
        predicted box and key points, so its landmarks come from the same crop as on the
        tracked frames in between. Re-cropping from the detector's box instead moves every
        landmark a little at each detector run: a visible pulse at 30/N Hz. A face far
        from its track's prediction (the tracking drifted) keeps the detector's box."""
        predicted = {f.track_id: f for f in self.predict()}
        matched = self._match(faces)
        out = []
        for fi, face in enumerate(faces):
            tid = matched.get(fi)
            guess = predicted.get(tid) if tid is not None else None
            if (
                guess is not None
                and guess.landmarks is not None
                and float(iou(face.box[None], guess.box[None])[0, 0]) >= self.follow_iou
            ):
                face = _copy_face(face)
                face.box, face.kps, face.track_id = guess.box, guess.kps, tid
            out.append(face)
        return out

    def update(self, faces: Sequence[Face]) -> list[Face]:
        """Match a detector's faces to tracks (a face `seed` gave a track id keeps it, the
        rest greedy by IoU), start tracks for new faces, drop tracks unmatched for more
        than `max_missed` runs. Returns smoothed faces with `track_id` set, in the
        detector's order."""
        ids = list(self.tracks)
        seeded = {fi: f.track_id for fi, f in enumerate(faces) if f.track_id in self.tracks}
        matched = self._match(faces, skip_faces=list(seeded), skip_tracks=list(seeded.values()))
        matched.update(seeded)
        seen = set(matched.values())
        for tid in ids:
            if tid not in seen:
                track = self.tracks[tid]
                track.missed += 1
                if track.missed > self.max_missed:
                    del self.tracks[tid]
        out = []
        for fi, face in enumerate(faces):
            known = matched.get(fi)
            if known is not None:
                tid = known
            else:
                tid = self._next_id
                self._next_id += 1
                self.tracks[tid] = Track(tid, face, filter=OneEuroFilter(self.smoothing))
            track = self.tracks[tid]
            track.missed = 0
            if face.landmarks is not None and fi not in seeded:  # a seeded box is the track's own
                side = landmark_extent(face.landmarks)[2]
                track.box_ratio = max(face.width, face.height) / max(side, 1.0)
            out.append(self._observe(track, face, rebuild_box=fi in seeded))
        return out

    def predict(self) -> list[Face]:
        """Each live track's face for the next frame (its last raw observation, box rebuilt
        from its landmarks), for the landmarker to refine. `track_id` is set."""
        faces = []
        for track in self.tracks.values():
            face = _copy_face(track.face)
            face.track_id = track.id
            if face.landmarks is not None:
                face.box = self._box_from_landmarks(track, face.landmarks)
            faces.append(face)
        return faces

    @staticmethod
    def _box_from_landmarks(track: Track, landmarks: np.ndarray) -> np.ndarray:
        cx, cy, side = landmark_extent(landmarks)
        half = side * track.box_ratio / 2
        return np.array([cx - half, cy - half, cx + half, cy + half], dtype=np.float32)

    def observe(self, track_id: int, face: Face) -> Face:
        """Record a tracked observation of `track_id` (landmarks found from the predicted
        crop; its box is rebuilt from them) and return its smoothed face."""
        return self._observe(self.tracks[track_id], face, rebuild_box=True)

    def drop(self, track_id: int) -> None:
        self.tracks.pop(track_id, None)

    def _observe(self, track: Track, face: Face, rebuild_box: bool = False) -> Face:
        if rebuild_box and face.landmarks is not None:  # the box of this frame, not the crop's
            face.box = self._box_from_landmarks(track, face.landmarks)
        face.track_id = track.id
        track.face = face
        out = _copy_face(face)
        filt = track.filter
        if filt is None or filt.smoothing <= 0:
            return out
        scale = max(face.width, face.height, 1.0)
        corners = face.box.reshape(2, 2)
        if face.landmarks is not None:
            lm = face.landmarks
            corners3 = np.zeros((2, lm.shape[1]), np.float32)
            corners3[:, :2] = corners
            smooth = filt(np.concatenate([corners3, lm]), scale)
            out.box = smooth[:2, :2].reshape(4).copy()
            out.landmarks = smooth[2:].copy()
            if out.landmarks.shape[0] == NUM_LANDMARKS:
                out.kps = five_points_from_mesh(out.landmarks)
        else:
            smooth = filt(np.concatenate([corners, face.kps]), scale)
            out.box = smooth[:2].reshape(4).copy()
            out.kps = smooth[2:].copy()
        return out
