"""What the pipeline asks of the face side. The pipeline knows stages, not models.

`streamswap.faces` provides an object satisfying `FaceStages`; tests and benchmarks use
pass-through or fixed-cost implementations.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

import numpy as np


class FaceStages(Protocol):
    def detect(self, frame: np.ndarray, index: int) -> Sequence[Any]:
        """Find (or track) faces in a BGR frame; `index` is the frame's sequence number
        so detect-every-N and tracking can decide whether to run the detector."""
        ...

    def swap(self, frame: np.ndarray, faces: Sequence[Any]) -> None:
        """Replace the faces in `frame` in place (one batched generator call)."""
        ...

    def set_source_images(self, images: Sequence[Any]) -> None:
        """Switch the identity (computed in the caller's thread) at the next swap; raises
        a StreamswapError (e.g. NoFaceError) and keeps the current identity otherwise."""
        ...

    @property
    def source_names(self) -> Sequence[str]:
        """Names of the source images in use (empty before any)."""
        ...
