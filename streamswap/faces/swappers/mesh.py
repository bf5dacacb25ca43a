"""The offline mesh swapper: no neural weights, commercially safe, runs anywhere.

With 468 FaceMesh landmarks on the source and on each target face, the source face's
texture is warped triangle by triangle (piecewise affine) onto the target's mesh, its
colour is matched to the target's skin (mean/std transfer in LAB), the target keeps its own
eyes and mouth interior (so gaze, blinks and speech stay live), and the result is blended
in with a feathered face-oval mask.

Cost model: everything heavy about the source (texture pyramid in LAB, landmarks per level,
triangulation, skin statistics) is computed once per source image in `prepare_identity`.
Per target face only its bounding region is touched: one triangle-id raster, one gather of
per-triangle affine coefficients, one remap of the texture and of its alpha, a 256-entry
LUT for the colour match (plus the relight on a ~32 px copy), one mask blur and one blend.
Work buffers are cached per (quantised) region size.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import cv2
import numpy as np

from streamswap.errors import ConfigError, InputError
from streamswap.faces.adapters import AdapterParts, adapter
from streamswap.faces.identity import SourceFaces
from streamswap.faces.masks import FaceMasks
from streamswap.faces.mesh_topology import (
    CHIN,
    FACE_OVAL,
    FOREHEAD,
    LEFT_CHEEK_EDGE,
    LEFT_EYE,
    LEFT_EYEBROW,
    LIPS_INNER,
    LIPS_OUTER,
    MIRROR,
    NOSE_TIP,
    NUM_LANDMARKS,
    RIGHT_CHEEK_EDGE,
    RIGHT_EYE,
    RIGHT_EYEBROW,
    delaunay,
)
from streamswap.faces.settings import MeshSettings, PasteSettings
from streamswap.faces.types import Face
from streamswap.logs import kv

__all__ = [
    "MeshIdentity",
    "MeshSettings",
    "MeshSwapper",
    "capped_oval",
    "frontality",
    "painted_stretch",
    "prepare_identity",
    "source_quality",
    "texture_sources",
]

log = logging.getLogger(__name__)

_OVAL = np.array(FACE_OVAL, dtype=np.int32)
_EYES = (np.array(RIGHT_EYE, dtype=np.int32), np.array(LEFT_EYE, dtype=np.int32))
_MOUTH_IN = np.array(LIPS_INNER, dtype=np.int32)
_MOUTH_OUT = np.array(LIPS_OUTER, dtype=np.int32)
_BROWS = np.array(RIGHT_EYEBROW + LEFT_EYEBROW, dtype=np.int32)
_BROW_PAIR = (np.array(RIGHT_EYEBROW, dtype=np.int32), np.array(LEFT_EYEBROW, dtype=np.int32))
_LOW_RES_FACE = 200  # source faces smaller than this (px) are denoised before use

_SHIFT = 4  # sub-pixel bits for OpenCV's polygon fills
_ONE = 1 << _SHIFT
_QUANT = 16  # region sizes are rounded up to this so buffers are reused across frames
_MAX_TEXTURE_FACE = 384  # source face size (px) of the finest texture level
_MIN_TEXTURE_FACE = 24
_COLOURLESS_STD = 1.5  # LAB a/b spread (8-bit scale) of a source skin with no colour
_HOLE_KERNEL = np.ones((3, 3), np.uint8)
_HOLE_STEPS = 3  # uncovered slivers up to ~6 px wide are closed


@dataclass(frozen=True)
class _Level:
    """One texture pyramid level of the source face."""

    lab: np.ndarray  # (h, w, 3) uint8 LAB texture
    alpha: np.ndarray  # (h, w) uint8: where the texture is the source's skin (255) vs not (0)
    points: np.ndarray  # (468, 2) float32, landmark positions in this texture
    face_size: float  # the oval's larger side in this level's pixels


@dataclass(frozen=True)
class MeshIdentity:
    """Everything about one source face the per-frame work needs; built once per source."""

    levels: tuple[_Level, ...]  # finest first, each half the previous
    triangles: np.ndarray  # (T, 3) int32 landmark indices
    mirrored: np.ndarray  # (T, 3) int32: each triangle's mirror image across the face midline
    area: np.ndarray  # (T,) float32 source triangle areas / source face size²
    mirror_area: np.ndarray  # (T,) float32 the same for the mirrored triangles
    side: np.ndarray  # (T,) int8: -1 / +1 triangle wholly on one half of the face, 0 on the midline
    lab_mean: np.ndarray  # (3,) float32, skin statistics of the source (LAB, 8-bit scale)
    lab_std: np.ndarray  # (3,) float32

    @property
    def colourless(self) -> bool:
        """A black-and-white (or near-grey) source photo: its skin has no chroma to carry."""
        return bool((self.lab_std[1:] <= _COLOURLESS_STD).all())


def _check_landmarks(landmarks: np.ndarray | None, what: str) -> np.ndarray:
    if landmarks is None:
        raise InputError(f"{what}: the mesh swapper needs dense landmarks; set faces.landmarker.model: facemesh")
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] < 2:
        raise InputError(f"{what}: expected {NUM_LANDMARKS} FaceMesh landmarks, got shape {lm.shape}")
    return lm


def _polygon_mask(
    shape: tuple[int, int], polygons: Sequence[np.ndarray], value: int = 255, out: np.ndarray | None = None
) -> np.ndarray:
    mask = np.zeros(shape, np.uint8) if out is None else out
    pts = [np.round(p * _ONE).astype(np.int32) for p in polygons]
    cv2.fillPoly(mask, pts, value, cv2.LINE_8, _SHIFT)
    return mask


def _scaled_about_centre(poly: np.ndarray, factor: float) -> np.ndarray:
    c = poly.mean(axis=0)
    scaled: np.ndarray = c + (poly - c) * factor
    return scaled


def _skin_polygons(pts: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Face oval, and what to cut out of it for skin statistics and the relight (eyes, brows,
    lips): a dark brow inside the target's low frequencies would reappear as a shadow brow
    next to the source's."""
    holes = (
        [_scaled_about_centre(pts[e], 1.4) for e in _EYES]
        + [pts[_MOUTH_OUT]]
        + [_scaled_about_centre(pts[b], 1.3) for b in _BROW_PAIR]
    )
    return pts[_OVAL], holes


def prepare_identity(
    image: np.ndarray, landmarks: np.ndarray, name: str = "source image", settings: MeshSettings | None = None
) -> MeshIdentity:
    """Build the mesh identity of one source face (BGR image + its 468 landmarks)."""
    st = settings or MeshSettings()
    lm = _check_landmarks(landmarks, name)[:, :2]
    oval = lm[_OVAL]
    x0, y0 = oval.min(axis=0)
    x1, y1 = oval.max(axis=0)
    size = float(max(x1 - x0, y1 - y0))
    if size < 8:
        raise InputError(f"{name}: the source face is only {size:.0f} px across; use a larger photo")
    margin = 0.08 * size + 2
    h, w = image.shape[:2]
    cx0, cy0 = max(int(np.floor(x0 - margin)), 0), max(int(np.floor(y0 - margin)), 0)
    cx1, cy1 = min(int(np.ceil(x1 + margin)), w), min(int(np.ceil(y1 + margin)), h)
    crop = image[cy0:cy1, cx0:cx1]
    pts = lm - np.array([cx0, cy0], np.float32)
    scale = min(1.0, _MAX_TEXTURE_FACE / size)
    if scale < 1.0:
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        pts = pts * scale
    face_px = size * scale
    if face_px < _LOW_RES_FACE:
        # A small source is magnified onto the target: its JPEG blocks and sensor noise
        # would become dark specks (along the nose, the lips). Edge-preserving smoothing
        # keeps the features and drops the speckle; it runs once per source.
        crop = cv2.bilateralFilter(crop, 5, 24.0, 2.0)
    lab = cv2.cvtColor(crop, cv2.COLOR_BGR2LAB)
    oval_poly, holes = _skin_polygons(pts)
    skin = _polygon_mask(lab.shape[:2], [oval_poly])
    _polygon_mask(lab.shape[:2], holes, 0, out=skin)
    mean, std = cv2.meanStdDev(lab, mask=skin)
    # Where the source texture may be used: the face oval below the fringe line, pulled in
    # from its edge and feathered, so the source's hair and background never come along.
    soft = max(1.0, st.source_feather * face_px)
    usable = _shrink_polygon(capped_oval(pts, st.forehead), soft)
    alpha = _polygon_mask(lab.shape[:2], [usable])
    cv2.GaussianBlur(alpha, (0, 0), soft / 2, dst=alpha)
    levels = [_Level(lab, alpha, pts.astype(np.float32), face_px)]
    while levels[-1].face_size / 2 >= _MIN_TEXTURE_FACE and min(levels[-1].lab.shape[:2]) >= 16:
        prev = levels[-1]
        down = cv2.pyrDown(prev.lab)
        fy = down.shape[0] / prev.lab.shape[0]
        fx = down.shape[1] / prev.lab.shape[1]
        levels.append(
            _Level(
                down,
                cv2.pyrDown(prev.alpha),
                (prev.points * np.array([fx, fy], np.float32)).astype(np.float32),
                prev.face_size / 2,
            )
        )
    triangles = delaunay(lm)
    mirrored = np.asarray(MIRROR, np.int32)[triangles]
    norm = 1.0 / (size * size)
    point_side = face_sides(landmarks)[triangles]  # (T, 3)
    tri_side = np.where(
        (point_side <= 0).all(axis=1) & (point_side < 0).any(axis=1),
        -1,
        np.where((point_side >= 0).all(axis=1) & (point_side > 0).any(axis=1), 1, 0),
    )
    log.debug("mesh identity", extra=kv(source=name, face_px=round(size), triangles=len(triangles), levels=len(levels)))
    return MeshIdentity(
        levels=tuple(levels),
        triangles=triangles,
        mirrored=mirrored,
        area=(_areas(lm[triangles]) * norm).astype(np.float32),
        side=tri_side.astype(np.int8),
        mirror_area=(_areas(lm[mirrored]) * norm).astype(np.float32),
        lab_mean=mean.ravel().astype(np.float32),
        lab_std=np.maximum(std.ravel(), 1.0).astype(np.float32),
    )


def _areas(tris: np.ndarray) -> np.ndarray:
    """Unsigned areas of (T, 3, 2) triangles."""
    e1 = tris[:, 1] - tris[:, 0]
    e2 = tris[:, 2] - tris[:, 0]
    areas: np.ndarray = np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]) * 0.5
    return areas


def face_sides(landmarks: np.ndarray) -> np.ndarray:
    """(468,) int8: which half of the face each landmark is on (-1: the image-left half of a
    frontal face, +1 the other, 0 the midline), from the 3-D mesh: the sign of the distance
    to the plane through the midline landmarks, so a turned face is split as a frontal one."""
    lm = np.asarray(landmarks, np.float32)
    xyz = lm[:, :3] if lm.shape[1] >= 3 else np.concatenate([lm[:, :2], np.zeros((len(lm), 1), np.float32)], 1)
    mid = np.array([i for i, j in enumerate(MIRROR) if i == j])
    pairs = np.array([i for i, j in enumerate(MIRROR) if i < j])
    # The plane's normal: the mean direction from each point to its mirror image.
    normal = (xyz[np.asarray(MIRROR)[pairs]] - xyz[pairs]).mean(axis=0)
    normal /= max(float(np.linalg.norm(normal)), 1e-6)
    dist = (xyz - xyz[mid].mean(axis=0)) @ normal
    side: np.ndarray = np.sign(dist).astype(np.int8)
    side[mid] = 0
    if side[RIGHT_EYE[0]] > 0:  # orient: MediaPipe's "right" eye is on the image-left half
        side = -side
    return side


def texture_sources(
    identity: MeshIdentity, landmarks: np.ndarray, mirror_fill: bool = True, limit: float = 1.8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which source landmarks texture each target triangle, and how much the texture is
    stretched there: (T, 3) landmark indices, (T,) stretch, (T,) mirrored flags.

    Stretch is the target triangle's area over its source triangle's, both relative to
    their face size: about 1 where the source shows a part as much as the target does,
    large where the source saw it edge-on (the far half of a turned source face). When the
    target shows a half of the face `limit` times more than the source does, and the
    source shows the other half better, that whole half takes the mirrored triangles of
    the other half (its texture flipped, which the per-triangle affine does by itself):
    one seam along the midline instead of a patchwork."""
    pts = np.asarray(landmarks, np.float32)[:, :2]
    size = float(np.ptp(pts[_OVAL], axis=0).max())
    area_t = _areas(pts[identity.triangles]) / max(size * size, 1e-6)
    stretch = area_t / np.maximum(identity.area, 1e-7)
    use = np.zeros(len(stretch), bool)
    if mirror_fill:
        for half in (-1, 1):
            mine, other = identity.side == half, identity.side == -half
            shown_here, shown_there = float(identity.area[mine].sum()), float(identity.area[other].sum())
            if shown_there > 1.3 * shown_here and float(area_t[mine].sum()) > limit * shown_here:
                use |= mine
    stretch = np.where(use, area_t / np.maximum(identity.mirror_area, 1e-7), stretch)
    index = np.where(use[:, None], identity.mirrored, identity.triangles)
    return index, stretch, use


def _painted(
    det: np.ndarray, s1: np.ndarray, s2: np.ndarray, flipped: np.ndarray, stretch: np.ndarray, max_stretch: float
) -> np.ndarray:
    """Triangles that get source texture: facing the camera in the target as in the source
    (a mirrored source triangle has the opposite winding), and not stretched more than
    `max_stretch` (texture the source saw nearly edge-on would smear across the target:
    the target keeps its own skin there, blended by the mask's soft edge)."""
    facing = det * (s1[:, 0] * s2[:, 1] - s1[:, 1] * s2[:, 0]) * np.where(flipped, -1.0, 1.0) > 0
    painted: np.ndarray = facing & (stretch <= max_stretch)
    return painted


def painted_stretch(
    identity: MeshIdentity, landmarks: np.ndarray, settings: MeshSettings | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(stretch, target area) of the triangles the swap paints with source texture on a
    face with these landmarks (the texture-stretch measure of `texture_sources`)."""
    st = settings or MeshSettings()
    pts = np.asarray(landmarks, np.float32)[:, :2]
    index, stretch, flipped = texture_sources(identity, pts, st.mirror_fill, st.mirror_stretch)
    dst, src = pts[identity.triangles], identity.levels[0].points[index]
    e1, e2 = dst[:, 1] - dst[:, 0], dst[:, 2] - dst[:, 0]
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    keep = _painted(det, src[:, 1] - src[:, 0], src[:, 2] - src[:, 0], flipped, stretch, st.max_stretch)
    return stretch[keep], np.abs(det[keep]) * 0.5


def frontality(landmarks: np.ndarray) -> float:
    """1.0 for a face looking straight at the camera, towards 0 as it turns sideways: how
    evenly the nose tip splits the face between its two cheek edges."""
    pts = np.asarray(landmarks, dtype=np.float32)[:, :2]
    a, b = pts[RIGHT_CHEEK_EDGE], pts[LEFT_CHEEK_EDGE]
    axis = b - a
    t = float((pts[NOSE_TIP] - a) @ axis) / max(float(axis @ axis), 1e-6)
    return float(np.clip(1.0 - 2.0 * abs(t - 0.5), 0.0, 1.0))


def source_quality(landmarks: np.ndarray) -> float:
    """How good a texture source a face is: frontal matters most (a turned face has no
    texture for its far side), size up to the texture resolution matters less."""
    oval = np.asarray(landmarks, dtype=np.float32)[_OVAL, :2]
    size = float(np.ptp(oval, axis=0).max())
    return frontality(landmarks) * float(min(1.0, size / _MAX_TEXTURE_FACE) ** 0.5)


def capped_oval(pts: np.ndarray, forehead: float) -> np.ndarray:
    """The face oval with its top pulled down to `forehead` of the way from the brows to
    the oval's top (along the face's own up direction, so tilted faces work)."""
    oval = pts[_OVAL]
    up = pts[FOREHEAD] - pts[CHIN]
    up = up / max(float(np.linalg.norm(up)), 1e-6)
    height = oval @ up
    brow_top = float((pts[_BROWS] @ up).max())
    limit = brow_top + forehead * max(float(height.max()) - brow_top, 0.0)
    excess = np.maximum(height - limit, 0.0)
    capped: np.ndarray = (oval - excess[:, None] * up[None, :]).astype(np.float32)
    return capped


_B = TypeVar("_B")  # a per-size buffer set


class _Buffers:
    """Work arrays for one region size (h, w); reused while faces keep that size."""

    def __init__(self, h: int, w: int) -> None:
        self.tri_id = np.empty((h, w), np.int32)
        self.tri_f = np.empty((h, w), np.float32)  # ids as float for the hole-closing dilate
        self.hole = np.empty((h, w), bool)
        self.oval = np.empty((h, w), np.uint8)
        self.coef = np.empty((h, w, 6), np.float32)
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.gx, self.gy = gx, gy
        self.map_x = np.empty((h, w), np.float32)
        self.map_y = np.empty((h, w), np.float32)
        self.tmp = np.empty((h, w), np.float32)
        self.warped_lab = np.empty((h, w, 3), np.uint8)
        self.warped_alpha = np.empty((h, w), np.uint8)
        self.matched_lab = np.empty((h, w, 3), np.uint8)
        self.warped_bgr = np.empty((h, w, 3), np.uint8)
        self.target_lab = np.empty((h, w, 3), np.uint8)
        self.mask = np.empty((h, w), np.uint8)
        self.skin = np.empty((h, w), np.uint8)
        self.alpha = np.empty((h, w), np.float32)
        self.beta = np.empty((h, w), np.float32)
        self.roi_small = np.empty((h, w, 3), np.uint8)
        self.delta = np.empty((h, w, 3), np.float32)


class _BlendBuffers:
    """Full-size arrays for blending a face rendered at a working scale."""

    def __init__(self, h: int, w: int) -> None:
        self.bgr = np.empty((h, w, 3), np.uint8)
        self.alpha = np.empty((h, w), np.float32)
        self.beta = np.empty((h, w), np.float32)


class MeshSwapper:
    """Swapper adapter for `faces.swapper.model: mesh`: `set_identity` then `swap` per frame."""

    def __init__(
        self,
        settings: MeshSettings | None = None,
        max_cached_sizes: int = 12,
        paste: PasteSettings | None = None,
        name: str = "mesh",
    ) -> None:
        self.name = name  # its catalogue entry's name
        self.settings = settings or MeshSettings()
        # faces.paste applies to this swapper too: color_correction takes all of the
        # target's skin tint (not a share of it), mouth_mask keeps the target's lips as well
        # as its mouth interior.
        self.paste = paste or PasteSettings()
        self._identity: MeshIdentity | None = None
        self._buffers: OrderedDict[tuple[int, int], _Buffers] = OrderedDict()
        self._blend_buffers: OrderedDict[tuple[int, int], _BlendBuffers] = OrderedDict()
        self._max_cached = max_cached_sizes
        self.masks: FaceMasks | None = None  # region / occlusion masks (faces.mask)
        self._lut = np.empty((256, 1, 3), np.uint8)
        self._ramp = np.arange(256, dtype=np.float32)
        # Seconds per phase ("warp", "color", "blend") accumulated when set to a dict (bench).
        self.profile: dict[str, float] | None = None

    # --- identity ---------------------------------------------------------------------------
    def prepare_identity(self, sources: SourceFaces) -> MeshIdentity:
        """Identity from the source faces (with landmarks). A texture cannot be averaged the
        way neural swappers average embeddings, so of several source photos the best texture
        is used: the most frontal face, larger breaking near-ties (`source_quality`); the
        choice is logged."""
        photos = sources.faces
        if not photos:
            raise InputError("no source face given; pass at least one source image with a face")
        meshes = [_check_landmarks(p.face.landmarks, p.name) for p in photos]
        scores = [source_quality(m) for m in meshes]
        best = int(np.argmax(scores))
        if len(photos) > 1:
            log.info(
                "mesh swapper uses one source photo: the most frontal, large face",
                extra=kv(chosen=photos[best].name, quality=round(scores[best], 2), of=len(photos)),
            )
        return prepare_identity(photos[best].image, meshes[best], photos[best].name, self.settings)

    def set_identity(self, identity: MeshIdentity | None) -> None:
        """Swap to `identity` from the next `swap` call on (None: leave faces unchanged)."""
        self._identity = identity

    @property
    def identity(self) -> MeshIdentity | None:
        return self._identity

    # --- per frame ---------------------------------------------------------------------------
    def swap(
        self, frame: np.ndarray, faces: Sequence[Face], identities: Sequence[MeshIdentity | None] | None = None
    ) -> None:
        """Replace every face of `frame` (BGR uint8, in place) that has landmarks, with the
        current identity or, given `identities`, each face with its own (None: skipped)."""
        if identities is None:
            identities = [self._identity] * len(faces)
        todo = [
            (f, f.landmarks, ident)
            for f, ident in zip(faces, identities)
            if f.landmarks is not None and ident is not None
        ]
        if not todo:
            return
        masks: list[np.ndarray | None] = [None] * len(todo)
        if self.masks is not None and self.masks.active:  # all read before any face changes
            regions = [self._region(lms[:, :2], frame.shape[1], frame.shape[0]) for _, lms, _ in todo]
            live = [(i, r) for i, r in enumerate(regions) if r is not None]
            got = self.masks.masks(
                frame,
                [todo[i][0] for i, _ in live],
                [np.array([[1, 0, -r[0]], [0, 1, -r[1]]], np.float64) for _, r in live],
                [(r[2], r[3]) for _, r in live],
            )
            for (i, _), m in zip(live, got):
                masks[i] = m
        for (_, landmarks, identity), mask in zip(todo, masks):
            self.swap_one(frame, landmarks, identity, mask)

    def _get_buffers(self, h: int, w: int) -> _Buffers:
        return self._cached(self._buffers, _Buffers, h, w)

    def _cached(self, cache: OrderedDict[tuple[int, int], _B], kind: Callable[[int, int], _B], h: int, w: int) -> _B:
        key = (h, w)
        buf = cache.get(key)
        if buf is None:
            buf = cache[key] = kind(h, w)
            if len(cache) > self._max_cached:
                cache.popitem(last=False)
        else:
            cache.move_to_end(key)
        return buf

    @staticmethod
    def _region(pts: np.ndarray, frame_w: int, frame_h: int) -> tuple[int, int, int, int] | None:
        """Quantised bounding region (x, y, w, h) of the face oval, inside the frame."""
        oval = pts[_OVAL]
        x0, y0 = np.floor(oval.min(axis=0)) - 1
        x1, y1 = np.ceil(oval.max(axis=0)) + 1
        if x1 <= 0 or y1 <= 0 or x0 >= frame_w or y0 >= frame_h:
            return None
        w = int(x1 - x0)
        h = int(y1 - y0)
        wq = min(-(-w // _QUANT) * _QUANT, frame_w)
        hq = min(-(-h // _QUANT) * _QUANT, frame_h)
        x = int(x0) - (wq - w) // 2
        y = int(y0) - (hq - h) // 2
        x = min(max(x, 0), frame_w - wq)
        y = min(max(y, 0), frame_h - hq)
        if wq < 4 or hq < 4:
            return None
        return x, y, wq, hq

    def swap_one(
        self, frame: np.ndarray, landmarks: np.ndarray, identity: MeshIdentity, extra_mask: np.ndarray | None = None
    ) -> None:
        """Swap one face given its (468, 3) landmarks in frame pixels; `extra_mask` (the face
        region's size, 0 = keep the target) restricts the blend (faces.mask)."""
        st = self.settings
        prof = self.profile
        t0 = time.perf_counter() if prof is not None else 0.0
        lm = np.asarray(landmarks, dtype=np.float32)
        pts_frame = lm[:, :2]
        region = self._region(pts_frame, frame.shape[1], frame.shape[0])
        if region is None:
            return
        rx, ry, rw, rh = region
        roi = frame[ry : ry + rh, rx : rx + rw]
        pts = pts_frame - np.array([rx, ry], np.float32)
        oval = pts[_OVAL]
        size = float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
        if size < 8:
            return
        # Large faces are rendered at a working scale (the source texture is no sharper than
        # _MAX_TEXTURE_FACE anyway); only the final blend runs at full resolution.
        scaled = size > st.max_work_face
        if scaled:
            wq = min(-(-int(rw * st.max_work_face / size) // _QUANT) * _QUANT, rw)
            hq = min(-(-int(rh * st.max_work_face / size) // _QUANT) * _QUANT, rh)
            kx, ky = wq / rw, hq / rh
            buf = self._get_buffers(hq, wq)
            work = cv2.resize(roi, (wq, hq), dst=buf.roi_small, interpolation=cv2.INTER_AREA)
            pts = pts * np.array([kx, ky], np.float32)
            size *= (kx + ky) / 2
        else:
            buf = self._get_buffers(rh, rw)
            work = roi

        # Texture level: the coarsest that is still at least as large as the target face.
        level = identity.levels[0]
        for candidate in identity.levels[1:]:
            if candidate.face_size >= size:
                level = candidate
        tri = identity.triangles
        dst = pts[tri]  # (T, 3, 2) target triangles
        src_index, stretch, flipped = texture_sources(identity, pts, st.mirror_fill, st.mirror_stretch)
        src = level.points[src_index]  # (T, 3, 2) source triangles (some mirrored)

        # Per-triangle affine target -> source: [x y 1] @ X = [u v].
        e1 = dst[:, 1] - dst[:, 0]
        e2 = dst[:, 2] - dst[:, 0]
        det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
        ok = np.abs(det) > 1e-4
        inv_det = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0).astype(np.float32)
        # Inverse of the 2x2 [e1 e2] (columns) applied to source edges.
        s1 = src[:, 1] - src[:, 0]
        s2 = src[:, 2] - src[:, 0]
        # For p = dst0 + a*e1 + b*e2: a = (e2y*dx - e2x*dy)/det, b = (-e1y*dx + e1x*dy)/det.
        a_x, a_y = e2[:, 1] * inv_det, -e2[:, 0] * inv_det
        b_x, b_y = -e1[:, 1] * inv_det, e1[:, 0] * inv_det
        coef = np.empty((len(tri) + 2, 6), np.float32)
        # u = src0x + a*s1x + b*s2x, expanded to u = cx*x + cy*y + c0.
        ux = a_x * s1[:, 0] + b_x * s2[:, 0]
        uy = a_y * s1[:, 0] + b_y * s2[:, 0]
        vx = a_x * s1[:, 1] + b_x * s2[:, 1]
        vy = a_y * s1[:, 1] + b_y * s2[:, 1]
        n = len(tri)
        coef[:n, 0] = ux
        coef[:n, 1] = uy
        coef[:n, 2] = src[:, 0, 0] - ux * dst[:, 0, 0] - uy * dst[:, 0, 1]
        coef[:n, 3] = vx
        coef[:n, 4] = vy
        coef[:n, 5] = src[:, 0, 1] - vx * dst[:, 0, 0] - vy * dst[:, 0, 1]
        coef[n:] = (0.0, 0.0, -16.0, 0.0, 0.0, -16.0)  # outside the mesh / turned away: off the texture

        # Triangle-id raster, far triangles first so near ones win where the mesh folds.
        sentinel = len(tri)
        buf.tri_id.fill(sentinel)
        order = np.argsort(-lm[tri, 2].mean(axis=1)) if lm.shape[1] > 2 else np.arange(len(tri))
        fixed = np.round(dst * _ONE).astype(np.int32)
        fill = cv2.fillConvexPoly
        tri_id = buf.tri_id
        # A triangle whose winding flipped against the source's has turned away from the
        # camera: on a turned face it lies beyond the visible silhouette (over the
        # background next to the nose or the far cheek). Those are drawn first as "turned
        # away" (no texture: the target stays), facing ones over them, far to near.
        facing = _painted(det, s1, s2, flipped, stretch, st.max_stretch)
        order = order[ok[order]]
        away = sentinel + 1
        for i in order[~facing[order]].tolist():
            fill(tri_id, fixed[i], away, cv2.LINE_8, _SHIFT)
        for i in order[facing[order]].tolist():
            fill(tri_id, fixed[i], i, cv2.LINE_8, _SHIFT)
        self._close_holes(buf, pts, sentinel)

        # Dense target -> source map from the per-triangle coefficients.
        np.take(coef, tri_id, axis=0, out=buf.coef, mode="clip")
        c = buf.coef
        np.multiply(c[..., 0], buf.gx, out=buf.map_x)
        np.multiply(c[..., 1], buf.gy, out=buf.tmp)
        buf.map_x += buf.tmp
        buf.map_x += c[..., 2]
        np.multiply(c[..., 3], buf.gx, out=buf.map_y)
        np.multiply(c[..., 4], buf.gy, out=buf.tmp)
        buf.map_y += buf.tmp
        buf.map_y += c[..., 5]
        cv2.remap(
            level.lab, buf.map_x, buf.map_y, cv2.INTER_LINEAR, dst=buf.warped_lab, borderMode=cv2.BORDER_REPLICATE
        )
        cv2.remap(
            level.alpha,
            buf.map_x,
            buf.map_y,
            cv2.INTER_LINEAR,
            dst=buf.warped_alpha,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )

        if prof is not None:
            t1 = time.perf_counter()
            prof["warp"] = prof.get("warp", 0.0) + (t1 - t0)
            t0 = t1
        # Colour: map source skin statistics onto the target's, one LUT per channel.
        if st.color_match or self.paste.color_correction:
            cv2.cvtColor(work, cv2.COLOR_BGR2LAB, dst=buf.target_lab)
            oval_poly, holes = _skin_polygons(pts)
            buf.skin.fill(0)
            _polygon_mask(buf.skin.shape, [oval_poly], 255, out=buf.skin)
            _polygon_mask(buf.skin.shape, holes, 0, out=buf.skin)
            t_mean, t_std = cv2.meanStdDev(buf.target_lab, mask=buf.skin)
            ratio = np.clip(t_std.ravel() / identity.lab_std, 1.0 / st.max_std_ratio, st.max_std_ratio)
            for ch in range(3):
                values = (self._ramp - identity.lab_mean[ch]) * ratio[ch] + float(t_mean[ch, 0])
                self._lut[:, 0, ch] = np.clip(values + 0.5, 0, 255).astype(np.uint8)
            cv2.LUT(buf.warped_lab, self._lut, dst=buf.matched_lab)
            if st.relight > 0:
                self._relight(buf, size, identity)
            if st.surround > 0:
                ring = surrounding_skin(frame, pts_frame, t_mean.ravel(), t_std.ravel())
                if ring is not None:  # toward the skin around the face: neck, ears, forehead edge
                    shift = (ring - t_mean.ravel()) * st.surround
                    cv2.add(
                        buf.matched_lab,
                        (float(shift[0]), float(shift[1]), float(shift[2]), 0.0),
                        dst=buf.matched_lab,
                        dtype=cv2.CV_8U,
                    )
            cv2.cvtColor(buf.matched_lab, cv2.COLOR_LAB2BGR, dst=buf.warped_bgr)
        else:
            cv2.cvtColor(buf.warped_lab, cv2.COLOR_LAB2BGR, dst=buf.warped_bgr)

        if prof is not None:
            t1 = time.perf_counter()
            prof["color"] = prof.get("color", 0.0) + (t1 - t0)
            t0 = t1
        # Mask: face oval pulled in by the feather width, minus the target's eyes and mouth
        # interior, then blurred so every edge is soft.
        feather = max(1.5, st.feather * size)
        inner = _shrink_polygon(capped_oval(pts, st.forehead), feather * 0.5)
        buf.mask.fill(0)
        _polygon_mask(buf.mask.shape, [inner], 255, out=buf.mask)
        holes = []
        for eye in _EYES:
            e = pts[eye]
            height = float(np.ptp(e[:, 1])) + 1.0
            width = float(np.ptp(e[:, 0])) + 1.0
            holes.append(_grow_polygon(e, st.eye_margin * height, width, height))
        mouth = pts[_MOUTH_OUT if self.paste.mouth_mask else _MOUTH_IN]
        holes.append(
            _grow_polygon(mouth, st.mouth_margin * size, float(np.ptp(mouth[:, 0])) + 1, float(np.ptp(mouth[:, 1])) + 1)
        )
        _polygon_mask(buf.mask.shape, holes, 0, out=buf.mask)
        k = int(feather) | 1
        cv2.GaussianBlur(buf.mask, (k, k), 0, dst=buf.mask)
        cv2.multiply(buf.mask, buf.warped_alpha, dst=buf.alpha, scale=1.0 / (255.0 * 255.0), dtype=cv2.CV_32F)
        if scaled:
            full = self._cached(self._blend_buffers, _BlendBuffers, rh, rw)
            cv2.resize(buf.warped_bgr, (rw, rh), dst=full.bgr, interpolation=cv2.INTER_LINEAR)
            cv2.resize(buf.alpha, (rw, rh), dst=full.alpha, interpolation=cv2.INTER_LINEAR)
            if extra_mask is not None:
                np.multiply(full.alpha, extra_mask, out=full.alpha)
            np.subtract(np.float32(1.0), full.alpha, out=full.beta)
            cv2.blendLinear(full.bgr, roi, full.alpha, full.beta, dst=roi)  # in place: per-pixel
        else:
            if extra_mask is not None:
                np.multiply(buf.alpha, extra_mask, out=buf.alpha)
            np.subtract(np.float32(1.0), buf.alpha, out=buf.beta)
            cv2.blendLinear(buf.warped_bgr, roi, buf.alpha, buf.beta, dst=roi)
        if prof is not None:
            prof["blend"] = prof.get("blend", 0.0) + (time.perf_counter() - t0)

    @staticmethod
    def _close_holes(buf: _Buffers, pts: np.ndarray, sentinel: int) -> None:
        """Give pixels inside the face oval that no triangle covered the id of a neighbour.

        On a turned face the mesh folds (triangles flip over the nose and the far cheek) and
        slivers between triangles stay empty; left alone they show the target's own face as
        thin lines and specks through the swap."""
        empty = buf.hole
        np.equal(buf.tri_id, sentinel, out=empty)
        buf.oval.fill(0)
        _polygon_mask(buf.oval.shape, [pts[_OVAL]], 1, out=buf.oval)
        if not np.logical_and(empty, buf.oval, out=buf.oval.view(bool)).any():
            return
        np.copyto(buf.tri_f, buf.tri_id, casting="unsafe")
        buf.tri_f[empty] = -1.0  # "no triangle" loses every max below
        cv2.dilate(buf.tri_f, _HOLE_KERNEL, dst=buf.tri_f, iterations=_HOLE_STEPS)
        np.greater_equal(buf.tri_f, 0.0, out=empty)
        np.logical_and(empty, buf.oval.view(bool), out=empty)
        np.copyto(buf.tri_id, buf.tri_f, casting="unsafe", where=empty)

    def _relight(self, buf: _Buffers, size: float, identity: MeshIdentity) -> None:
        """Move the warped face's low-frequency LAB (shading, local tint) to the target's.

        Works on a copy about 32 px across (it is low frequency by definition), with
        mask-normalised blurs so the background and the eyes/mouth do not leak in."""
        st = self.settings
        h, w = buf.skin.shape
        f = min(1.0, 32.0 / size)
        sw, sh = max(int(round(w * f)), 4), max(int(round(h * f)), 4)
        small_t = cv2.resize(buf.target_lab, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
        small_w = cv2.resize(buf.matched_lab, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
        skin = cv2.resize(buf.skin, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32) * (1 / 255)
        m = cv2.multiply(
            skin,
            cv2.resize(buf.warped_alpha, (sw, sh), interpolation=cv2.INTER_AREA),
            scale=1 / 255,
            dtype=cv2.CV_32F,
        )
        sigma = max(st.relight_scale * size * f, 0.8)
        norm = cv2.GaussianBlur(m, (0, 0), sigma)
        valid = norm > 0.02
        norm = np.where(valid, norm, 1.0)[..., None]
        low_t = cv2.GaussianBlur(small_t * m[..., None], (0, 0), sigma) / norm
        low_w = cv2.GaussianBlur(small_w * m[..., None], (0, 0), sigma) / norm
        # A black-and-white source photo has no skin colour to keep: take all of the target's.
        tint = 1.0 if identity.colourless or self.paste.color_correction else st.relight_color
        # float32 already; asarray only tells numpy's stub the element type the arithmetic lost
        gain = np.array([st.relight, st.relight * tint, st.relight * tint], np.float32)
        delta = np.asarray((low_t - low_w) * gain, np.float32)
        delta[~valid] = 0.0
        cv2.resize(delta, (w, h), dst=buf.delta, interpolation=cv2.INTER_LINEAR)
        cv2.add(buf.matched_lab, buf.delta, dst=buf.matched_lab, dtype=cv2.CV_8U)


def surrounding_skin(
    frame: np.ndarray, pts: np.ndarray, inner_mean: np.ndarray, inner_std: np.ndarray
) -> np.ndarray | None:
    """Mean LAB of the target's skin just around its face oval (neck, ears, forehead edge,
    temples): a ring of a quarter face size outside the oval, on a ~64 px subsample, keeping
    only pixels whose colour is close to the face's own skin (not hair, collar, background).
    None when too little of the ring is skin."""
    oval = pts[_OVAL]
    lo, hi = oval.min(axis=0), oval.max(axis=0)
    size = float(max(hi - lo))
    pad = 0.25 * size
    h, w = frame.shape[:2]
    x0, y0 = max(int(lo[0] - pad), 0), max(int(lo[1] - pad), 0)
    x1, y1 = min(int(hi[0] + pad) + 1, w), min(int(hi[1] + pad) + 1, h)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    step = max(1, int(size / 64))
    sub = np.ascontiguousarray(frame[y0:y1:step, x0:x1:step])
    lab = cv2.cvtColor(sub, cv2.COLOR_BGR2LAB)
    local = (oval - np.array([x0, y0], np.float32)) / step
    ring = _polygon_mask(lab.shape[:2], [_scaled_about_centre(local, 1.0 + 2 * pad / size)])
    _polygon_mask(lab.shape[:2], [local], 0, out=ring)
    values = lab[ring > 0].astype(np.float32)
    if len(values) < 30:
        return None
    near = (np.abs(values[:, 1:] - inner_mean[1:]) <= np.maximum(1.5 * inner_std[1:], 5.0)).all(axis=1) & (
        np.abs(values[:, 0] - inner_mean[0]) <= max(float(inner_std[0]), 8.0)
    )
    if near.sum() < max(30, 0.1 * len(values)):
        return None
    mean: np.ndarray = values[near].mean(axis=0)
    return mean


def _shrink_polygon(poly: np.ndarray, by: float) -> np.ndarray:
    """Move every vertex `by` pixels towards the polygon's centroid."""
    c = poly.mean(axis=0)
    d = poly - c
    n = np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-3)
    shrunk: np.ndarray = c + d * np.maximum(n - by, 0.0) / n
    return shrunk


def _grow_polygon(poly: np.ndarray, by: float, width: float, height: float) -> np.ndarray:
    """Scale a small contour (eye, mouth) about its centre so it grows by about `by` px."""
    c = poly.mean(axis=0)
    sx = 1.0 + 2.0 * by / max(width, 1.0)
    sy = 1.0 + 2.0 * by / max(height, 1.0)
    grown: np.ndarray = c + (poly - c) * np.array([sx, sy], np.float32)
    return grown


@adapter("swapper", "mesh")
def _mesh(parts: AdapterParts) -> MeshSwapper:
    if not parts.settings.landmarker.model:
        raise ConfigError(
            "faces.swapper.model: the mesh swapper needs dense landmarks; set faces.landmarker.model: facemesh"
        )
    return MeshSwapper(parts.settings.mesh, paste=parts.settings.paste, name=parts.name)
