"""SimSwap 256: `arcface_112_v1` crop at 256, RGB, ImageNet mean/std in, [0, 1] out; the
source is the embedding through crossface_simswap, L2-normalised."""

from __future__ import annotations

from streamswap.faces.swappers.base import CropFormat
from streamswap.faces.swappers.converted import ConvertedSwapper


class SimswapSwapper(ConvertedSwapper):
    contract = "simswap"
    crop = CropFormat(template="arcface_112_v1", size=256, rgb=True,
                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    use_raw_embedding = False
    normalise_latent = True
