"""GFPGAN 1.4 face enhancer: `ffhq_512` crop, RGB, (x/255 − 0.5)/0.5 in, output clipped to
[−1, 1] → pixels; 80 % enhanced over 20 % original, pasted back like a swap."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from streamswap.errors import ModelError
from streamswap.faces.adapters import AdapterParts, adapter, require_session
from streamswap.faces.align import align_matrix, warp_crop
from streamswap.faces.paste import PasteBack
from streamswap.faces.settings import PasteSettings
from streamswap.faces.swappers.base import check_image_tensor, contract_error, is_dynamic_batch
from streamswap.faces.types import Face
from streamswap.inference.base import Session
from streamswap.ops import cpu as ops

SIZE = 512
TEMPLATE = "ffhq_512"
BLEND = 0.8  # share of the enhanced face
# RGB in as (x/255 − 0.5)/0.5 per channel; output [-1, 1] → [0, 1] (× 255).
IN_SCALE = np.full(3, 1 / 127.5, np.float32)
IN_BIAS = np.full(3, -1.0, np.float32)
OUT_SCALE = OUT_OFFSET = 0.5


class GfpganEnhancer:
    contract = "gfpgan"
    size = SIZE  # crop side (the ffhq template scaled to it)
    template = TEMPLATE

    def __init__(
        self, session: Session, *, name: str = "gfpgan_1.4", paste: PasteSettings | None = None, blend: float = BLEND
    ) -> None:
        ins = session.inputs
        if len(ins) != 1 or ins[0].name != "input" or not session.outputs:
            raise contract_error(name, "expected one input named 'input' and one output", session)
        check_image_tensor(ins[0], self.size, name, session, "input")
        check_image_tensor(session.outputs[0], self.size, name, session, "output")
        if not 0.0 <= blend <= 1.0:
            raise ModelError(f"{name}: blend must be between 0 and 1, got {blend}")
        self.session = session
        self.name = name
        self.blend = blend
        self.batched = is_dynamic_batch(ins[0])
        self._dtype = ins[0].dtype
        self._output = session.outputs[0].name
        self.paste_back = PasteBack(paste or PasteSettings())

    def _run(self, blob: np.ndarray) -> np.ndarray:
        if self.batched:
            return self.session.run({"input": blob})[self._output]
        return np.concatenate([self.session.run({"input": blob[i : i + 1]})[self._output] for i in range(len(blob))])

    def enhance(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        """Enhance every face of `frame` in place (one call when the batch is dynamic)."""
        if not faces:
            return
        size = self.size
        crops = np.empty((len(faces), size, size, 3), dtype=np.uint8)
        matrices = []
        for i, face in enumerate(faces):
            matrices.append(align_matrix(face.kps, self.template, size))
            warp_crop(frame, matrices[-1], size, out=crops[i])
        blob = np.empty((len(faces), 3, size, size), dtype=np.float32)
        ops.crops_to_tensor(crops, blob, IN_SCALE, IN_BIAS, True)
        out = np.asarray(self._run(blob.astype(self._dtype, copy=False)), dtype=np.float32)
        mixed = np.empty_like(crops)  # [-1, 1] → pixels, the enhanced share over the original
        ops.tensor_blend_crops(out, crops, mixed, OUT_SCALE, OUT_OFFSET, self.blend, True)
        for face, crop, original, matrix in zip(faces, mixed, crops, matrices):
            self.paste_back.paste(frame, crop, matrix, target_crop=original, kps=face.kps, landmarks=face.landmarks)


@adapter("enhancer", "gfpgan")
def _gfpgan(parts: AdapterParts) -> GfpganEnhancer:
    return GfpganEnhancer(require_session(parts), name=parts.name, paste=parts.settings.paste)
