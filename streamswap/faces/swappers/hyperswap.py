"""HyperSwap 1a/1b/1c 256: `arcface_128` crop at 256, RGB, (x/255 − 0.5)/0.5 in,
output ×0.5 + 0.5; the source is the normalised embedding."""

from __future__ import annotations

import numpy as np

from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.identity import SourceIdentity, l2_normalise
from streamswap.faces.swappers.base import CropFormat, NeuralSwapper


class HyperswapSwapper(NeuralSwapper):
    contract = "hyperswap"
    crop = CropFormat(
        template="arcface_128",
        size=256,
        rgb=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        out_scale=0.5,
        out_offset=0.5,
    )

    def latent(self, identity: SourceIdentity | np.ndarray) -> np.ndarray:
        embedding = identity.embedding if isinstance(identity, SourceIdentity) else identity
        return l2_normalise(np.asarray(embedding, dtype=np.float32).reshape(1, -1))


@adapter("swapper", "hyperswap")
def _hyperswap(parts: AdapterParts) -> HyperswapSwapper:
    return HyperswapSwapper(
        require_session(parts),
        name=parts.name,
        sha256=parts.sha256,
        paste=parts.settings.paste,
        recognizer=parts.recognizer,
        cache=parts.cache,
    )
