"""GHOST 1/2/3 256: `arcface_112_v1` crop at 256, RGB, (x/255 − 0.5)/0.5 in, ×0.5 + 0.5 out;
the source is the RAW (un-normalised) embedding through crossface_ghost, not normalised."""

from __future__ import annotations

from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.swappers.base import CropFormat
from streamswap.faces.swappers.converted import ConvertedSwapper, converter_of


class GhostSwapper(ConvertedSwapper):
    contract = "ghost"
    crop = CropFormat(
        template="arcface_112_v1",
        size=256,
        rgb=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        out_scale=0.5,
        out_offset=0.5,
    )
    use_raw_embedding = True
    normalise_latent = False


@adapter("swapper", "ghost")
def _ghost(parts: AdapterParts) -> GhostSwapper:
    return GhostSwapper(
        require_session(parts),
        converter=converter_of(parts, "ghost"),
        name=parts.name,
        sha256=parts.sha256,
        paste=parts.settings.paste,
        recognizer=parts.recognizer,
        cache=parts.cache,
    )
