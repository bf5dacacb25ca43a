"""Model inputs for INT8 calibration, made from a folder of face photos.

TensorRT's INT8 calibrator must see what the model sees in use: a recognizer gets aligned
face crops cut by our own detector, a detector gets whole letterboxed photos. This module
produces those preprocessed tensors; `inference.int8_calib` feeds them to TensorRT.
Supported contracts: detectors (scrfd, blazeface, yoloface, yunet) and arcface. Generators
(swappers, enhancers) are not calibrated: INT8 visibly degrades their output — use fp16.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from streamswap.errors import InputError, ModelError
from streamswap.faces.align import estimate_similarity, template, warp_crop
from streamswap.faces.detectors import CONTRACTS as DETECTOR_CONTRACTS
from streamswap.faces.identity import arcface_inputs
from streamswap.faces.types import Face
from streamswap.io.images import read_image
from streamswap.logs import kv

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CALIBRATED_CONTRACTS = (*DETECTOR_CONTRACTS, "arcface")


def load_images(folder: Path, limit: int = 500) -> list[np.ndarray]:
    """BGR images from `folder` (sorted by name, at most `limit`); InputError when none."""
    if not folder.is_dir():
        raise InputError(f"{folder}: calibration folder not found; pass --calib-dir with face photos")
    images = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:  # the same limits as every image: regular files, size and pixel caps
            image = read_image(path)
        except InputError as exc:
            log.warning("calibration image unreadable, skipped", extra=kv(file=path.name, why=str(exc)))
            continue
        images.append(image)
        if len(images) >= limit:
            break
    if not images:
        raise InputError(f"{folder}: no readable images ({', '.join(IMAGE_SUFFIXES)}); add face photos")
    return images


def face_crops(
    images: Iterable[np.ndarray],
    detect: Callable[[np.ndarray], Sequence[Face]],
    size: int,
    template_name: str = "arcface",
    max_per_image: int = 8,
) -> np.ndarray:
    """(N, size, size, 3) uint8 BGR aligned crops of the faces `detect` finds."""
    dst = template(template_name, size)
    crops = []
    for image in images:
        for face in list(detect(image))[:max_per_image]:
            matrix = estimate_similarity(face.kps, dst)
            crops.append(warp_crop(image, matrix, size))
    if not crops:
        raise InputError("no faces found in the calibration images; use photos with visible faces")
    return np.stack(crops)


def detector_inputs(images: Iterable[np.ndarray], contract: str, size: int) -> np.ndarray:
    """(N, 3, size, size) float32 letterboxed detector inputs, as the adapter builds them."""
    from streamswap.faces.detectors import detector_class
    from streamswap.faces.detectors.common import LetterboxInput

    if contract not in DETECTOR_CONTRACTS:
        raise ModelError(f"no calibration preprocessing for detector contract {contract!r}")
    box = LetterboxInput(size, *detector_class(contract).input_norm)  # exactly as the adapter
    out = []
    for image in images:
        box.fill(image)
        out.append(box.buffer[0].copy())
    return np.stack(out)


def calibration_inputs(
    contract: str,
    input_name: str,
    images: Sequence[np.ndarray],
    detect: Callable[[np.ndarray], Sequence[Face]] | None,
    size: int,
) -> dict[str, np.ndarray]:
    """{input name: batch-major array} for calibrating a model of `contract`.

    `size` is the detector's input side, or the recognizer's crop side (112).
    """
    if contract in DETECTOR_CONTRACTS:
        return {input_name: detector_inputs(images, contract, size)}
    if contract == "arcface":
        if detect is None:
            raise ModelError("calibrating a recognizer needs a detector to cut face crops")
        return {input_name: arcface_inputs(face_crops(images, detect, size))}
    raise ModelError(
        f"INT8 calibration is not supported for {contract!r} models (generators lose visible "
        f"quality in INT8); use --precision fp16. Calibrated contracts: {', '.join(CALIBRATED_CONTRACTS)}"
    )
