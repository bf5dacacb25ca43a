"""Who is swapped, and into whom: face selection (all / one / people like a reference) and
the person → source mapping.

A face recogniser is expensive next to a 33 ms frame budget, so people are recognised once
per track, not per frame: when a track starts, every `recognize_every` frames after that,
and never again while the tracker follows it. A track the tracker loses and finds again
within `hold_frames` (a hand passing in front of the face, a head turn the detector
misses) inherits the identity of the lost track it overlaps, before it is recognised anew.

Rules (`SelectionRules`) are immutable: the control API builds a new set from its thread
and hands it over by one reference assignment (`Selector.rules = ...`); the stage reads
the current rules once per frame, so it needs no lock.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np

from streamswap.errors import ConfigError
from streamswap.faces.settings import SELECT_MODES, SELECT_ORDERS, UNMATCHED
from streamswap.faces.tracking import iou
from streamswap.faces.types import Face
from streamswap.logs import kv

log = logging.getLogger(__name__)

MODES, ORDERS = SELECT_MODES, SELECT_ORDERS
DEFAULT_SOURCE = ""  # source key of the main `source` identity

# (frame, faces) -> (N, 512) raw embeddings of the faces (ArcFace.embed)
Embed = Callable[[np.ndarray, Sequence[Face]], np.ndarray]


def order_faces(faces: Sequence[Face], order: str) -> list[Face]:
    """`faces` sorted by `order` (one of ORDERS); ties keep the given order."""
    keys: dict[str, Callable[[Face], float]] = {
        "left-right": lambda f: f.center[0],
        "right-left": lambda f: -f.center[0],
        "top-bottom": lambda f: f.center[1],
        "bottom-top": lambda f: -f.center[1],
        "large-small": lambda f: -f.area,
        "small-large": lambda f: f.area,
        "best-score": lambda f: -f.score,
    }
    if order not in keys:
        raise ConfigError(f"faces.select.order: must be one of {', '.join(ORDERS)}; got {order!r}")
    return sorted(faces, key=keys[order])


def normalise(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    unit: np.ndarray = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
    return unit


@dataclass(frozen=True)
class Mapping:
    """One person → source rule: faces like `reference` (embeddings, L2-normalised, one
    row per reference photo) become the identity known as `source`."""

    reference: str  # label (path) of the reference photo(s), how the API names the rule
    embeddings: np.ndarray  # (K, 512)
    source: str  # the source identity's key (its photo path)


@dataclass(frozen=True)
class SelectionRules:
    mode: str = "all"
    order: str = "left-right"
    index: int = 0
    threshold: float = 0.4  # cosine similarity for "the same person"
    references: np.ndarray | None = None  # (K, 512) L2-normalised, mode "reference"
    mappings: tuple[Mapping, ...] = ()
    unmatched: str = "keep"  # with mappings: faces nobody maps keep their face or get the default source

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"faces.select.mode: must be one of {', '.join(MODES)}; got {self.mode!r}")
        if self.order not in ORDERS:
            raise ConfigError(f"faces.select.order: must be one of {', '.join(ORDERS)}; got {self.order!r}")
        if self.unmatched not in UNMATCHED:
            raise ConfigError(f"faces.unmatched: must be one of {', '.join(UNMATCHED)}; got {self.unmatched!r}")
        if self.index < 0:
            raise ConfigError(f"faces.select.index: must be ≥ 0, got {self.index}")
        if not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"faces.select.threshold: a cosine similarity, between -1 and 1; got {self.threshold}")
        if self.mode == "reference" and (self.references is None or len(self.references) == 0):
            raise ConfigError(
                "faces.select.reference: mode 'reference' needs at least one reference photo of the person to swap"
            )

    @property
    def needs_recognizer(self) -> bool:
        return self.mode == "reference" or bool(self.mappings)

    def with_mapping(self, mapping: Mapping) -> "SelectionRules":
        """These rules plus `mapping` (replacing one with the same reference label)."""
        kept = tuple(m for m in self.mappings if m.reference != mapping.reference)
        return replace(self, mappings=kept + (mapping,))

    def without_mapping(self, reference: str) -> "SelectionRules":
        return replace(self, mappings=tuple(m for m in self.mappings if m.reference != reference))

    def describe(self) -> dict[str, object]:
        """Plain data for the control API / status."""
        return {
            "mode": self.mode,
            "order": self.order,
            "index": self.index,
            "threshold": self.threshold,
            "references": 0 if self.references is None else int(len(self.references)),
            "map": [{"reference": m.reference, "source": m.source} for m in self.mappings],
            "unmatched": self.unmatched,
        }


@dataclass
class _Known:
    """What the selector knows about one track."""

    embedding: np.ndarray | None = None  # L2-normalised, from the last recognition
    recognized_at: int = -1  # frame index of that recognition
    last_seen: int = -1
    box: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))


class Selector:
    """Per frame: which of the tracked faces to swap, and with which source identity.

    `plan(frame, faces, index)` returns (face, source key) pairs of the faces to swap;
    source key DEFAULT_SOURCE ("") is the main identity. Recognition runs only on faces
    whose track has none yet or whose last one is `recognize_every` frames old, in one
    batched `embed` call per frame."""

    def __init__(
        self,
        rules: SelectionRules | None = None,
        embed: Embed | None = None,
        *,
        recognize_every: int = 30,
        hold_frames: int = 15,
    ) -> None:
        self.rules = rules or SelectionRules()
        self.embed = embed
        self.recognize_every = recognize_every
        self.hold_frames = hold_frames
        self.recognitions = 0  # faces recognised so far (bench / tests)
        self._known: dict[int, _Known] = {}

    def reset(self) -> None:
        self._known.clear()

    def plan(self, frame: np.ndarray, faces: Sequence[Face], index: int) -> list[tuple[Face, str]]:
        rules = self.rules  # one read: a concurrent API update applies from the next frame
        chosen = order_faces(faces, rules.order)
        if rules.mode == "one":
            chosen = chosen[rules.index : rules.index + 1]
        if not rules.needs_recognizer:
            return [(f, DEFAULT_SOURCE) for f in chosen]
        if self.embed is None:
            raise ConfigError(
                "face selection by reference and faces.map need a face recognizer; "
                "set faces.recognizer.model (e.g. arcface_w600k_r50)"
            )
        embeddings = self._embeddings(frame, chosen, index)
        out: list[tuple[Face, str]] = []
        for face, emb in zip(chosen, embeddings):
            if emb is None:
                continue  # not recognised yet: left as it is rather than swapped wrongly
            if rules.mode == "reference":
                assert rules.references is not None
                if float((rules.references @ emb).max()) < rules.threshold:
                    continue
            source = self._source_for(rules, emb)
            if source is not None:
                out.append((face, source))
        return out

    @staticmethod
    def _source_for(rules: SelectionRules, emb: np.ndarray) -> str | None:
        if not rules.mappings:
            return DEFAULT_SOURCE
        best, best_sim = None, rules.threshold
        for mapping in rules.mappings:
            sim = float((mapping.embeddings @ emb).max())
            if sim >= best_sim:
                best, best_sim = mapping.source, sim
        if best is not None:
            return best
        return DEFAULT_SOURCE if rules.unmatched == "default-source" else None

    def _embeddings(self, frame: np.ndarray, faces: Sequence[Face], index: int) -> list[np.ndarray | None]:
        """Each face's track embedding, recognising only the faces that are due."""
        due: list[int] = []
        infos: list[_Known] = []
        for i, face in enumerate(faces):
            tid = face.track_id if face.track_id is not None else -1 - i
            info = self._known.get(tid)
            if info is None:
                info = self._known[tid] = self._inherit(face, index)
            if (
                info.embedding is None
                or index - info.recognized_at >= self.recognize_every
                or index < info.recognized_at
            ):
                due.append(i)
            info.last_seen = index
            info.box = np.asarray(face.box, np.float32).copy()
            infos.append(info)
        if due:
            assert self.embed is not None
            raw = self.embed(frame, [faces[i] for i in due])
            self.recognitions += len(due)
            for i, emb in zip(due, normalise(raw)):
                infos[i].embedding = emb
                infos[i].recognized_at = index
            log.debug("faces recognised", extra=kv(count=len(due), frame=index))
        self._forget(index)
        return [info.embedding for info in infos]

    def _inherit(self, face: Face, index: int) -> _Known:
        """A new track overlapping a recently lost one takes over its identity (the same
        person after a short occlusion) until its own recognition is due."""
        best, best_iou = None, 0.3
        for tid, info in self._known.items():
            if info.last_seen >= index or info.embedding is None:
                continue  # seen this frame: a different, live face
            overlap = float(iou(face.box[None], info.box[None])[0, 0])
            if overlap > best_iou:
                best, best_iou = tid, overlap
        if best is None:
            return _Known()
        old = self._known.pop(best)
        return _Known(embedding=old.embedding, recognized_at=old.recognized_at)

    def _forget(self, index: int) -> None:
        for tid in [t for t, info in self._known.items() if index - info.last_seen > self.hold_frames]:
            del self._known[tid]
