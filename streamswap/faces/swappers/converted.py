"""Swappers whose source is an ArcFace embedding passed through a small converter model
(crossface_simswap, crossface_ghost): SimSwap 256 and GHOST 256."""

from __future__ import annotations

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.adapters import AdapterParts
from streamswap.faces.identity import ArcFace, LatentCache, SourceIdentity, l2_normalise
from streamswap.faces.settings import PasteSettings
from streamswap.faces.swappers.base import NeuralSwapper
from streamswap.inference.base import Session


class EmbeddingConverter:
    """crossface_* converter: input `input` N×512 embedding → one N×512 output."""

    def __init__(self, session: Session, name: str, sha256: str = "") -> None:
        ins, outs = session.inputs, session.outputs
        ok = (
            len(ins) == 1
            and ins[0].name == "input"
            and len(ins[0].shape) == 2
            and len(outs) >= 1
            and all(not isinstance(d, int) or d <= 0 or d == 512 for d in (ins[0].shape[1], outs[0].shape[-1]))
        )
        if not ok:
            found = ", ".join(f"{i.name}{list(i.shape)}" for i in ins)
            raise ModelError(
                f"{name}: not an embedding converter (expected one input 'input' N×512 and an N×512 "
                f"output, found inputs [{found}]); check the swapper's converter model"
            )
        self.session = session
        self.name = name
        self.sha256 = sha256
        self._dtype = ins[0].dtype
        self._output = outs[0].name

    def convert(self, embedding: np.ndarray) -> np.ndarray:
        feed = np.asarray(embedding, dtype=np.float32).reshape(1, -1).astype(self._dtype)
        return np.asarray(self.session.run({"input": feed})[self._output], dtype=np.float32).reshape(1, -1)


class ConvertedSwapper(NeuralSwapper):
    """Base for swappers fed through an EmbeddingConverter."""

    use_raw_embedding: bool = False  # feed the un-normalised embedding to the converter
    normalise_latent: bool = True

    def __init__(
        self,
        session: Session,
        *,
        converter: EmbeddingConverter,
        name: str,
        sha256: str = "",
        paste: PasteSettings | None = None,
        recognizer: ArcFace | None = None,
        cache: LatentCache | None = None,
    ) -> None:
        super().__init__(session, name=name, sha256=sha256, paste=paste, recognizer=recognizer, cache=cache)
        self.converter = converter

    @property
    def cache_key(self) -> str:
        return f"{self.contract}:{self.sha256}:{self.converter.sha256}"

    def latent(self, identity: SourceIdentity | np.ndarray) -> np.ndarray:
        if isinstance(identity, SourceIdentity):
            embedding = identity.raw if self.use_raw_embedding else identity.embedding
        else:
            embedding = identity
        latent = self.converter.convert(embedding)
        return l2_normalise(latent) if self.normalise_latent else latent


def converter_of(parts: AdapterParts, contract: str) -> EmbeddingConverter:
    """The embedding converter a simswap/ghost swapper names as its companion model."""
    companion = parts.companion
    if companion is None or companion.session is None:
        raise ModelError(
            f"{parts.name}: the {contract} swapper needs its embedding converter "
            f"(crossface_{contract}); fetch it with `streamswap models fetch crossface_{contract}`"
        )
    return EmbeddingConverter(companion.session, companion.name, companion.sha256)
