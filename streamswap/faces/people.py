"""The people side of the face stages: which faces are swapped (faces.select) and which
source each person gets (faces.map), live-changeable from the control API.

Everything slow (reading and embedding reference photos, preparing a mapping's source
identity) runs in the caller's thread; the stage threads only see finished, immutable
objects, handed over by one reference assignment each (the identities first, then the
rules that name them), so they need no lock.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from streamswap.errors import ConfigError, InputError
from streamswap.faces.identity import ArcFace, ImageLike, pick_face, source_label
from streamswap.faces.selection import DEFAULT_SOURCE, Mapping, SelectionRules, Selector, normalise
from streamswap.faces.settings import MapEntry, SelectSettings
from streamswap.faces.types import Face
from streamswap.io.images import read_image
from streamswap.logs import kv

log = logging.getLogger(__name__)

RECOGNIZER_HINT = (
    "fetch a recognizer with `streamswap models fetch arcface_w600k_r50` and set "
    "faces.recognizer.model: arcface_w600k_r50 (or a path to your own ArcFace-contract "
    "file with faces.recognizer.contract: arcface)"
)


class People:
    """Selection rules, mapping identities and the per-track recogniser bookkeeping.

    `detect_faces(bgr)` finds faces in a photo (with the padded retry for tight crops);
    `prepare(images, names)` turns source photos into the swapper's identity object."""

    def __init__(
        self,
        detect_faces: Callable[[np.ndarray], list[Face]],
        prepare: Callable[[list[ImageLike], list[str]], Any],
        recognizer: ArcFace | None = None,
        *,
        recognize_every: int = 30,
        hold_frames: int = 15,
        load_recognizer: Callable[[], ArcFace] | None = None,
    ) -> None:
        self.detect_faces = detect_faces
        self.prepare = prepare
        self.recognizer = recognizer
        # Loads the recognizer on first need (a live mapping) when the profile did not.
        self.load_recognizer = load_recognizer
        self.selector = Selector(
            SelectionRules(),
            recognizer.embed if recognizer is not None else None,
            recognize_every=recognize_every,
            hold_frames=hold_frames,
        )
        self.identities: dict[str, Any] = {}  # mapping source key -> prepared identity

    @property
    def rules(self) -> SelectionRules:
        return self.selector.rules

    @property
    def active(self) -> bool:
        rules = self.selector.rules
        return rules.mode != "all" or bool(rules.mappings)

    # --- configuration (any thread) ---------------------------------------------------------
    def configure(self, select: SelectSettings, mapping: Sequence[MapEntry], unmatched: str) -> None:
        """Rules from the config; reference photos are embedded and mapping sources prepared now."""
        references = (
            self.embed_photos(select.reference, "faces.select.reference") if select.mode == "reference" else None
        )
        mappings = []
        identities = dict(self.identities)
        for i, entry in enumerate(mapping):
            mappings.append(self._mapping(entry.reference, entry.source, f"faces.map[{i}]", identities))
        rules = SelectionRules(
            mode=select.mode,
            order=select.order,
            index=select.index,
            threshold=select.threshold,
            references=references,
            mappings=tuple(mappings),
            unmatched=unmatched,
        )
        self._install(identities, rules)

    def set_selection(
        self,
        *,
        mode: str | None = None,
        order: str | None = None,
        index: int | None = None,
        threshold: float | None = None,
        reference: Sequence[ImageLike] | None = None,
        unmatched: str | None = None,
    ) -> dict[str, Any]:
        """Change the selection live; what is not given stays. Returns the new rules."""
        rules = self.selector.rules
        references = rules.references
        if reference is not None:
            references = self.embed_photos(reference, "reference")
        new = replace(
            rules,
            mode=mode or rules.mode,
            order=order or rules.order,
            index=rules.index if index is None else index,
            threshold=rules.threshold if threshold is None else threshold,
            references=references,
            unmatched=unmatched or rules.unmatched,
        )  # validates
        if new.needs_recognizer:
            self._ensure_recognizer()
        if new.needs_recognizer and self.recognizer is None:
            raise ConfigError(f"selecting faces by reference needs a face recognizer; {RECOGNIZER_HINT}")
        self.selector.rules = new
        log.info("face selection changed", extra=kv(**{k: v for k, v in new.describe().items() if k != "map"}))
        return new.describe()

    def add_mapping(
        self, reference: ImageLike, source: ImageLike, names: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """Map the person in `reference` to the identity in `source` (replacing a rule with
        the same reference). `names`: how the rule names them (default: their paths)."""
        identities = dict(self.identities)
        mapping = self._mapping(reference, source, "map", identities, names)
        self._install(identities, self.selector.rules.with_mapping(mapping))
        log.info("mapping added", extra=kv(reference=mapping.reference, source=mapping.source))
        return self.selector.rules.describe()

    def remove_mapping(self, reference: str) -> dict[str, Any]:
        rules = self.selector.rules
        if all(m.reference != reference for m in rules.mappings):
            known = ", ".join(m.reference for m in rules.mappings) or "none"
            raise InputError(f"no mapping for reference {reference!r}; mapped references: {known}")
        new = rules.without_mapping(reference)
        self.selector.rules = new
        self.identities = {k: v for k, v in self.identities.items() if any(m.source == k for m in new.mappings)}
        log.info("mapping removed", extra=kv(reference=reference))
        return new.describe()

    def _ensure_recognizer(self) -> None:
        if self.recognizer is None and self.load_recognizer is not None:
            self.recognizer = self.load_recognizer()  # raises ConfigError naming the model to fetch
            self.selector.embed = self.recognizer.embed

    def _install(self, identities: dict[str, Any], rules: SelectionRules) -> None:
        if rules.needs_recognizer:
            self._ensure_recognizer()
        if rules.needs_recognizer and self.recognizer is None:
            what = "faces.select.mode: reference" if rules.mode == "reference" else "faces.map"
            raise ConfigError(f"{what} needs a face recognizer, which this profile does not load; {RECOGNIZER_HINT}")
        self.identities = identities  # first: the rules may name them
        self.selector.rules = rules

    def _mapping(
        self,
        reference: ImageLike,
        source: ImageLike,
        where: str,
        identities: dict[str, Any],
        names: tuple[str, str] | None = None,
    ) -> Mapping:
        self._ensure_recognizer()
        if self.recognizer is None:
            raise ConfigError(f"{where}: mapping people to sources needs a face recognizer; {RECOGNIZER_HINT}")
        embeddings = self.embed_photos([reference], f"{where}.reference")
        if names is not None:
            label, key = names
        else:
            label = _label(reference, "reference")
            key = _label(source, "source")
        if key not in identities:
            item = source if isinstance(source, np.ndarray) else Path(source).expanduser()
            identities[key] = self.prepare([item], [key])
        return Mapping(reference=label, embeddings=embeddings, source=key)

    def embed_photos(self, photos: Sequence[ImageLike], where: str) -> np.ndarray:
        """(K, 512) L2-normalised embeddings of the largest face of each photo."""
        self._ensure_recognizer()
        if self.recognizer is None:
            raise ConfigError(f"{where}: needs a face recognizer; {RECOGNIZER_HINT}")
        if not photos:
            raise ConfigError(f"{where}: give at least one photo of the person")
        out = []
        for i, item in enumerate(photos):
            label = source_label(item, i)
            bgr = item if isinstance(item, np.ndarray) else read_image(Path(item).expanduser())
            face = pick_face(self.detect_faces(bgr), None, label)
            out.append(self.recognizer.embed(bgr, [face])[0])
        return normalise(np.stack(out))

    # --- stage side ---------------------------------------------------------------------------
    def choose(self, frame: np.ndarray, faces: Sequence[Face], index: int) -> list[Face]:
        """The faces to swap this frame, each with `source` set ("" = the main identity)."""
        chosen = []
        for face, source in self.selector.plan(frame, faces, index):
            face.source = source
            chosen.append(face)
        return chosen

    def reset(self) -> None:
        self.selector.reset()


def _label(item: ImageLike, kind: str) -> str:
    return source_label(item, 0) if not isinstance(item, np.ndarray) else f"{kind}-{id(item)}"


__all__ = ["DEFAULT_SOURCE", "People", "RECOGNIZER_HINT"]
