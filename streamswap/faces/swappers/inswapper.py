"""inswapper_128 (+ fp16): 128 crop in the insightface 128-style ArcFace template, RGB in
[0, 1]; the source is the normalised embedding projected through `emap` (the graph's
last initializer) and normalised again."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.identity import ArcFace, LatentCache, SourceIdentity, l2_normalise
from streamswap.faces.settings import PasteSettings
from streamswap.faces.swappers.base import CropFormat, NeuralSwapper
from streamswap.inference.base import Session


def read_emap(model_path: str | Path) -> np.ndarray:
    """The 512×512 `emap` of an inswapper file: its LAST initializer, as float32 (the fp16
    file stores it in half precision)."""
    import onnx
    from onnx import numpy_helper

    path = Path(model_path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf errors for truncated/non-ONNX files
        raise ModelError(
            f"{path}: cannot read the ONNX graph ({exc}); re-fetch the model (`streamswap models fetch inswapper_128`)"
        ) from None
    initializers = model.graph.initializer
    if not initializers:
        raise ModelError(f"{path}: has no initializers, so no emap; this is not an inswapper model")
    emap = numpy_helper.to_array(initializers[-1]).astype(np.float32)
    if emap.shape != (512, 512):
        raise ModelError(
            f"{path}: the last initializer is {emap.shape}, not the 512×512 emap; this is not an inswapper model"
        )
    return emap


class InswapperSwapper(NeuralSwapper):
    contract = "inswapper"
    crop = CropFormat(template="arcface", size=128, rgb=True)  # 128 → the 128-style rule

    def __init__(
        self,
        session: Session,
        *,
        model_path: str | Path,
        name: str = "inswapper_128",
        sha256: str = "",
        paste: PasteSettings | None = None,
        recognizer: ArcFace | None = None,
        cache: LatentCache | None = None,
    ) -> None:
        super().__init__(session, name=name, sha256=sha256, paste=paste, recognizer=recognizer, cache=cache)
        self.emap = read_emap(model_path)

    def latent(self, identity: SourceIdentity | np.ndarray) -> np.ndarray:
        embedding = identity.embedding if isinstance(identity, SourceIdentity) else identity
        projected = l2_normalise(np.asarray(embedding, dtype=np.float32).reshape(1, -1)) @ self.emap
        return l2_normalise(projected)


@adapter("swapper", "inswapper")
def _inswapper(parts: AdapterParts) -> InswapperSwapper:
    if parts.path is None:
        raise ModelError(f"{parts.name}: inswapper needs its model file to read its emap")
    return InswapperSwapper(
        require_session(parts),
        model_path=parts.path,
        name=parts.name,
        sha256=parts.sha256,
        paste=parts.settings.paste,
        recognizer=parts.recognizer,
        cache=parts.cache,
    )
