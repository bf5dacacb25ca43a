"""Face detectors and their decoders. Each takes an `inference.base.Session` plus
`DetectorSettings` and returns `Face` objects in frame coordinates, best first.

A detector owns a preallocated input buffer (the letterboxed frame): use one instance per
stage thread. Boxes are clipped to the frame; key points are not (alignment needs them)."""

from __future__ import annotations

from streamswap.errors import ModelError
from streamswap.faces.detectors.common import Detector
from streamswap.faces.settings import DetectorSettings
from streamswap.inference.base import Session

CONTRACTS = ("blazeface", "scrfd", "yoloface", "yunet")


def detector_class(contract: str) -> type:
    """The adapter class of a detector contract (ModelError when unknown)."""
    if contract == "blazeface":
        from streamswap.faces.detectors.blazeface import BlazeFaceDetector
        return BlazeFaceDetector
    if contract == "scrfd":
        from streamswap.faces.detectors.scrfd import ScrfdDetector
        return ScrfdDetector
    if contract == "yoloface":
        from streamswap.faces.detectors.yoloface import YoloFaceDetector
        return YoloFaceDetector
    if contract == "yunet":
        from streamswap.faces.detectors.yunet import YuNetDetector
        return YuNetDetector
    raise ModelError(f"{contract!r} is not a detector contract; faces.detector.contract "
                     f"must be one of {', '.join(CONTRACTS)}")


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


__all__ = ["CONTRACTS", "Detector", "detector_class", "make_detector"]
