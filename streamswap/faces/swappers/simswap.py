"""SimSwap 256: `arcface_112_v1` crop at 256, RGB, ImageNet mean/std in, [0, 1] out; the
source is the embedding through crossface_simswap, L2-normalised."""

from __future__ import annotations

from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.swappers.base import CropFormat
from streamswap.faces.swappers.converted import ConvertedSwapper, converter_of


class SimswapSwapper(ConvertedSwapper):
    contract = "simswap"
    crop = CropFormat(
        template="arcface_112_v1", size=256, rgb=True, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    use_raw_embedding = False
    normalise_latent = True


@adapter("swapper", "simswap")
def _simswap(parts: AdapterParts) -> SimswapSwapper:
    return SimswapSwapper(
        require_session(parts),
        converter=converter_of(parts, "simswap"),
        name=parts.name,
        sha256=parts.sha256,
        paste=parts.settings.paste,
        recognizer=parts.recognizer,
        cache=parts.cache,
    )
