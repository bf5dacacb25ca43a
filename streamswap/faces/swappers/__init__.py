"""Face swapper adapters, chosen by catalogue contract name."""

from __future__ import annotations

from pathlib import Path

from streamswap.errors import ModelError
from streamswap.faces.settings import PasteSettings
from streamswap.faces.swappers.base import NeuralSwapper, Swapper
from streamswap.inference.base import Session

NEURAL_CONTRACTS = ("inswapper", "hyperswap", "simswap", "ghost")


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
) -> NeuralSwapper:
    """The adapter for an ONNX swapper following `contract`. inswapper needs `model_path`
    (its emap is read from the file); simswap and ghost need their crossface converter."""
    if contract == "inswapper":
        from streamswap.faces.swappers.inswapper import InswapperSwapper

        if model_path is None:
            raise ValueError("inswapper needs model_path to read its emap")
        return InswapperSwapper(session, model_path=model_path, name=name, sha256=sha256, paste=paste)
    if contract == "hyperswap":
        from streamswap.faces.swappers.hyperswap import HyperswapSwapper

        return HyperswapSwapper(session, name=name, sha256=sha256, paste=paste)
    if contract in ("simswap", "ghost"):
        from streamswap.faces.swappers.converted import EmbeddingConverter

        if converter_session is None:
            raise ModelError(f"{name}: the {contract} swapper needs its embedding converter "
                             f"(crossface_{contract}); fetch it with `streamswap models fetch crossface_{contract}`")
        converter = EmbeddingConverter(converter_session, converter_name or f"crossface_{contract}",
                                       converter_sha256)
        if contract == "simswap":
            from streamswap.faces.swappers.simswap import SimswapSwapper as cls
        else:
            from streamswap.faces.swappers.ghost import GhostSwapper as cls
        return cls(session, converter=converter, name=name, sha256=sha256, paste=paste)
    raise ModelError(f"{name}: unknown swapper contract {contract!r}; known: {', '.join(NEURAL_CONTRACTS)}")


__all__ = ["NEURAL_CONTRACTS", "NeuralSwapper", "Swapper", "make_neural_swapper"]
