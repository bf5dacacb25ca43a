"""Face swapper adapters. Each registers itself by (role "swapper", contract) with
`faces.adapters`; `make_neural_swapper` builds one from an opened session (tools, tests)."""

from __future__ import annotations

from pathlib import Path

from streamswap.faces.adapters import AdapterParts, build_adapter
from streamswap.faces.identity import ArcFace, LatentCache
from streamswap.faces.settings import FacesSettings, PasteSettings
from streamswap.faces.swappers.base import NeuralSwapper, Swapper
from streamswap.inference.base import Session


def make_neural_swapper(
    contract: str,
    session: Session,
    *,
    name: str,
    model_path: str | Path | None = None,
    sha256: str = "",
    paste: PasteSettings | None = None,
    converter_session: Session | None = None,
    converter_name: str = "",
    converter_sha256: str = "",
    recognizer: ArcFace | None = None,
    cache: LatentCache | None = None,
) -> NeuralSwapper:
    """The registered adapter for an ONNX swapper following `contract`. inswapper needs
    `model_path` (its emap is read from the file); simswap and ghost need their crossface
    converter."""
    settings = FacesSettings(paste=paste or PasteSettings())
    companion = None
    if converter_session is not None:
        companion = AdapterParts(
            converter_name or f"crossface_{contract}", settings, converter_session, sha256=converter_sha256
        )
    parts = AdapterParts(
        name,
        settings,
        session,
        Path(model_path) if model_path is not None else None,
        sha256,
        companion,
        recognizer,
        cache,
    )
    swapper: NeuralSwapper = build_adapter("swapper", contract, parts)
    return swapper


__all__ = ["NeuralSwapper", "Swapper", "make_neural_swapper"]
