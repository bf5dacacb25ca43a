"""Face detectors and their decoders. Each takes an `inference.base.Session` plus
`DetectorSettings` and returns `Face` objects in frame coordinates, best first.

A detector owns a preallocated input buffer (the letterboxed frame): use one instance per
stage thread. Boxes are clipped to the frame; key points are not (alignment needs them)."""

from __future__ import annotations

import importlib

from streamswap.errors import ModelError
from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.detectors.common import Detector, DetectorClass
from streamswap.faces.settings import DetectorSettings
from streamswap.inference.base import Session

# contract -> the adapter class (module, name), imported when first used.
_CLASSES = {
    "blazeface": ("streamswap.faces.detectors.blazeface", "BlazeFaceDetector"),
    "scrfd": ("streamswap.faces.detectors.scrfd", "ScrfdDetector"),
    "yoloface": ("streamswap.faces.detectors.yoloface", "YoloFaceDetector"),
    "yunet": ("streamswap.faces.detectors.yunet", "YuNetDetector"),
}
CONTRACTS = tuple(_CLASSES)


def detector_class(contract: str) -> DetectorClass:
    """The adapter class of a detector contract (ModelError when unknown)."""
    if contract not in _CLASSES:
        raise ModelError(
            f"{contract!r} is not a detector contract; faces.detector.contract must be one of {', '.join(CONTRACTS)}"
        )
    module, name = _CLASSES[contract]
    cls: DetectorClass = getattr(importlib.import_module(module), name)
    return cls


def make_detector(contract: str, session: Session, settings: DetectorSettings) -> Detector:
    """The detector adapter for `contract` (a catalogue contract name) over `session`.

    Raises ModelError when the contract is unknown or the session's inputs/outputs do not
    match it (the message names the model).
    """
    if contract not in CONTRACTS:
        raise ModelError(
            f"{settings.model}: {contract!r} is not a detector contract; faces.detector.contract "
            f"must be one of {', '.join(CONTRACTS)}"
        )
    return detector_class(contract)(session, settings)


def _register(contract: str) -> None:
    @adapter("detector", contract)
    def build(parts: AdapterParts) -> Detector:
        return make_detector(contract, require_session(parts), parts.settings.detector)


for _contract in CONTRACTS:
    _register(_contract)


__all__ = ["CONTRACTS", "Detector", "detector_class", "make_detector"]
