"""Source identity: the source photos with their chosen face (`SourceFaces`, what every
swapper's `prepare_identity` takes), ArcFace embeddings of those faces averaged over one
or several photos, and a disk cache of a neural swapper's latent so a daemon restart does
not recompute it.

The detector is any object with `detect(bgr) -> list[Face]`; this module does not care
which one."""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from streamswap.errors import InputError, ModelError, NoFaceError
from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.align import align_matrix, warp_crop
from streamswap.faces.detectors.common import Detector
from streamswap.faces.types import Face
from streamswap.inference.base import Session
from streamswap.io.images import read_image, read_image_bytes
from streamswap.logs import kv

log = logging.getLogger(__name__)

ImageLike = Union[np.ndarray, str, "os.PathLike[str]"]

ARCFACE_SIZE = 112
EMBEDDING_SIZE = 512


@dataclass(frozen=True)
class SourceIdentity:
    """Who the faces become. `embedding` is L2-normalised (averaged over the sources and
    renormalised); `raw` is the mean of the un-normalised embeddings (GHOST's converter
    takes it); `content_hash` identifies the source images and face choice."""

    embedding: np.ndarray  # (512,) float32
    raw: np.ndarray  # (512,) float32
    content_hash: str = ""


@dataclass(frozen=True)
class SourceFace:
    """One source photo (BGR) and its chosen face (with dense landmarks when there is a
    landmarker); `name` is how messages call the photo."""

    image: np.ndarray
    face: Face
    name: str


@dataclass(frozen=True)
class SourceFaces:
    """What a swapper makes an identity from: the photos' faces, and a hash of the photos'
    contents and the face choice (the latent cache key)."""

    faces: tuple[SourceFace, ...]
    content_hash: str = ""


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norm = np.linalg.norm(v, axis=-1, keepdims=True)
    unit: np.ndarray = v / np.maximum(norm, 1e-12)
    return unit


def arcface_inputs(crops: np.ndarray) -> np.ndarray:
    """(N, 3, 112, 112) float32 recognizer inputs from BGR 112 crops: RGB, (x − 127.5) / 127.5
    (what ArcFace feeds, and what INT8 calibration must feed too)."""
    blob = np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2), dtype=np.float32)
    blob -= 127.5
    blob /= 127.5
    return blob


class ArcFace:
    """ArcFace recognizer (w600k_r50 contract): 112 crop, RGB, (x − 127.5)/127.5 → 512-d."""

    template = "arcface"  # 112: the ArcFace template itself

    def __init__(self, session: Session, name: str = "arcface") -> None:
        self.session = session
        self.name = name
        ins, outs = session.inputs, session.outputs
        ok = len(ins) == 1 and len(ins[0].shape) == 4 and len(outs) >= 1 and len(outs[0].shape) == 2
        if ok:
            c, h, w = ins[0].shape[1:]
            ok = all(
                not isinstance(d, int) or d <= 0 or d == want
                for d, want in ((c, 3), (h, ARCFACE_SIZE), (w, ARCFACE_SIZE), (outs[0].shape[1], EMBEDDING_SIZE))
            )
        if not ok:
            found = ", ".join(f"{i.name}{list(i.shape)}" for i in ins)
            raise ModelError(
                f"{name}: not an ArcFace recognizer (expected one input N×3×112×112 and an "
                f"N×512 output, found inputs [{found}]); check recognizer.model / recognizer.contract"
            )
        self._input = ins[0]
        self._output = outs[0].name
        first = ins[0].shape[0]
        self.batched = not (isinstance(first, int) and first > 0)

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Raw (un-normalised) embeddings (N, 512) of aligned 112 BGR uint8 crops (N, 112, 112, 3)."""
        blob = arcface_inputs(crops).astype(self._input.dtype, copy=False)
        name = self._input.name
        if self.batched:
            out = self.session.run({name: blob})[self._output]
        else:
            out = np.concatenate([self.session.run({name: blob[i : i + 1]})[self._output] for i in range(len(blob))])
        return np.asarray(out, dtype=np.float32).reshape(len(crops), -1)

    def embed(self, bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
        """Raw embeddings (N, 512) of `faces` in a BGR frame."""
        crops = np.empty((len(faces), ARCFACE_SIZE, ARCFACE_SIZE, 3), dtype=np.uint8)
        for i, face in enumerate(faces):
            warp_crop(bgr, align_matrix(face.kps, self.template, ARCFACE_SIZE), ARCFACE_SIZE, out=crops[i])
        return self.embed_crops(crops)


def _content_hash(item: ImageLike) -> str:
    h = hashlib.sha256()
    if isinstance(item, np.ndarray):
        h.update(f"array{item.shape}{item.dtype}".encode())
        h.update(np.ascontiguousarray(item).data)
    else:
        try:
            h.update(read_image_bytes(item))  # regular files only, size-capped
        except InputError:
            return ""  # read_image reports it properly
    return h.hexdigest()


def identity_hash(images: Sequence[ImageLike], face_index: int | None) -> str:
    """Hash of the source images' contents (not their names) and the face choice."""
    h = hashlib.sha256(f"face_index={face_index}".encode())
    for item in images:
        h.update(_content_hash(item).encode())
    return h.hexdigest()


def source_label(item: ImageLike, i: int) -> str:
    """How messages name source image `i`: its path, or its position when given as an array."""
    return f"source image #{i + 1}" if isinstance(item, np.ndarray) else str(item)


def pick_face(faces: Sequence[Face], face_index: int | None, label: str) -> Face:
    """The largest face, or the face at `face_index` in the detector's order."""
    if not faces:
        raise NoFaceError(
            f"{label}: no face found in the source image; use a clear, "
            "front-facing photo of the face to put on the video"
        )
    if face_index is None:
        return max(faces, key=lambda f: f.area)
    if not 0 <= face_index < len(faces):
        raise InputError(
            f"{label}: faces.swapper.source_face_index is {face_index} but the image "
            f"has {len(faces)} face(s); use 0..{len(faces) - 1} or leave it unset"
        )
    return faces[face_index]


def compute_identity(
    images: Sequence[ImageLike],
    detector: Detector,
    recognizer: ArcFace,
    face_index: int | None = None,
) -> SourceIdentity:
    """Detect the chosen face of each source image, then `embed_sources` them."""
    if not images:
        raise InputError("no source image given; set `source` (one or more face photos)")
    photos = []
    for i, item in enumerate(images):
        label = source_label(item, i)
        bgr = item if isinstance(item, np.ndarray) else read_image(item)
        photos.append(SourceFace(bgr, pick_face(detector.detect(bgr), face_index, label), label))
    return embed_sources(SourceFaces(tuple(photos), identity_hash(images, face_index)), recognizer)


def embed_sources(sources: SourceFaces, recognizer: ArcFace) -> SourceIdentity:
    """Embed each source face and average the normalised embeddings."""
    if not sources.faces:
        raise InputError("no source face given; pass at least one source image with a face")
    raws = [recognizer.embed(photo.image, [photo.face])[0] for photo in sources.faces]
    raw = np.mean(raws, axis=0).astype(np.float32)
    embedding = l2_normalise(l2_normalise(np.stack(raws)).mean(axis=0))
    return SourceIdentity(embedding=embedding, raw=raw, content_hash=sources.content_hash)


class LatentCache:
    """Swapper latents on disk, one .npy per (source content hash, swapper cache key)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    @staticmethod
    def for_models_dir(models_dir: str | os.PathLike[str]) -> "LatentCache":
        return LatentCache(Path(models_dir) / "cache")

    def _path(self, content_hash: str, swapper_key: str) -> Path:
        digest = hashlib.sha256(f"{content_hash}|{swapper_key}".encode()).hexdigest()[:40]
        return self.dir / f"latent-{digest}.npy"

    def get(self, content_hash: str, swapper_key: str) -> np.ndarray | None:
        path = self._path(content_hash, swapper_key)
        try:
            latent: np.ndarray = np.load(path, allow_pickle=False)  # one array (.npy), never an archive
            return latent
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # a truncated file: recompute and overwrite
            log.warning("latent cache entry unreadable", extra=kv(file=path, error=exc))
            return None

    def put(self, content_hash: str, swapper_key: str, latent: np.ndarray) -> None:
        path = self._path(content_hash, swapper_key)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, np.asarray(latent, dtype=np.float32), allow_pickle=False)
            os.replace(tmp, path)
        except OSError as exc:  # a read-only cache only costs time
            log.warning("cannot write latent cache", extra=kv(dir=self.dir, error=exc))


@adapter("recognizer", "arcface")
def _arcface(parts: AdapterParts) -> ArcFace:
    return ArcFace(require_session(parts), name=parts.name)
