"""The one identity contract every swapper follows (`Swapper`), and what every neural
swapper adapter shares: I/O contract checks, crop → tensor and tensor → crop conversion,
one batched generator call per frame, paste-back.

An adapter subclass only states its crop template, colour order, normalisation, output
scaling and how the source latent is computed from an identity."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from streamswap.errors import InputError, ModelError
from streamswap.faces.align import align_matrix, warp_crop
from streamswap.faces.identity import ArcFace, LatentCache, SourceFaces, SourceIdentity, embed_sources
from streamswap.faces.masks import FaceMasks
from streamswap.faces.paste import PasteBack
from streamswap.faces.settings import PasteSettings
from streamswap.faces.types import Face
from streamswap.inference.base import Session, TensorInfo, model_file
from streamswap.logs import kv
from streamswap.ops import cpu as ops

log = logging.getLogger(__name__)


@runtime_checkable
class Swapper(Protocol):
    """A face swapper: holds one source identity, replaces faces in frames in place.

    `prepare_identity` may run on any thread (the identity preparer's) and must not touch
    what `swap` uses; `set_identity` and `swap` run on the swap stage's thread only."""

    name: str
    masks: FaceMasks | None  # faces.mask: what of each face may change (None: all of it)

    def prepare_identity(self, sources: SourceFaces) -> Any:
        """The swapper's own identity value for these source faces (embedding → latent,
        texture + landmarks, …). Raises a StreamswapError naming the photo it cannot use."""
        ...

    def set_identity(self, identity: Any) -> None:
        """Use a prepared identity from the next `swap` on."""
        ...

    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None: ...


class Enhancer(Protocol):
    """Restores the swapped faces of a frame in place (e.g. GFPGAN)."""

    def enhance(self, frame: np.ndarray, faces: Sequence[Face]) -> None: ...


@dataclass(frozen=True)
class SwapLatent:
    """A neural swapper's prepared identity: its (1, latent_size) source input."""

    values: np.ndarray


# What a neural swapper's set_identity takes: a prepared latent, or (tools and tests) an
# identity or bare embedding it turns into one.
NeuralIdentity = Union[SwapLatent, SourceIdentity, np.ndarray]


@dataclass(frozen=True)
class CropFormat:
    """How a model wants its aligned crop, and how its output maps back to pixels."""

    template: str  # faces.align template name
    size: int
    rgb: bool = True  # channel order of the model's image tensors
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # input = (x / 255 − mean) / std
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    out_scale: float = 1.0  # pixel / 255 = output · out_scale + out_offset
    out_offset: float = 0.0


def is_fixed(dim: object) -> bool:
    return isinstance(dim, int) and dim > 0


def is_dynamic_batch(info: TensorInfo) -> bool:
    return len(info.shape) > 0 and not is_fixed(info.shape[0])


def contract_error(model: str, what: str, session: Session) -> ModelError:
    ins = ", ".join(f"{i.name}{list(i.shape)}" for i in session.inputs)
    outs = ", ".join(f"{o.name}{list(o.shape)}" for o in session.outputs)
    path = model_file(session)
    label = f"{model} ({path})" if path is not None and str(path) != model else model
    return ModelError(
        f"{label}: does not follow its model contract ({what}); the file has inputs [{ins}] and "
        f"outputs [{outs}] — check that it is the right model file (`streamswap models verify`) "
        "or set the matching `contract`"
    )


def check_image_tensor(info: TensorInfo, size: int | None, model: str, session: Session, role: str) -> None:
    shape = info.shape
    if len(shape) != 4:
        raise contract_error(model, f"{role} {info.name!r} must be N×3×H×W, got rank {len(shape)}", session)
    if is_fixed(shape[1]) and shape[1] != 3:
        raise contract_error(model, f"{role} {info.name!r} must have 3 channels, got {shape[1]}", session)
    if size is not None:
        for dim in shape[2:]:
            if is_fixed(dim) and dim != size:
                raise contract_error(model, f"{role} {info.name!r} must be {size}×{size}", session)


def check_vector_tensor(info: TensorInfo, length: int, model: str, session: Session, role: str) -> None:
    shape = info.shape
    if len(shape) != 2 or (is_fixed(shape[1]) and shape[1] != length):
        raise contract_error(model, f"{role} {info.name!r} must be N×{length}", session)


class NeuralSwapper:
    """Base of the ONNX swapper adapters (inputs `target` and `source`, output by position)."""

    contract: ClassVar[str]
    crop: ClassVar[CropFormat]
    latent_size: ClassVar[int] = 512

    def __init__(
        self,
        session: Session,
        *,
        name: str,
        sha256: str = "",
        paste: PasteSettings | None = None,
        recognizer: ArcFace | None = None,
        cache: LatentCache | None = None,
    ) -> None:
        self.session = session
        self.name = name
        self.sha256 = sha256
        self.recognizer = recognizer  # used by prepare_identity only (the preparer's thread)
        self.cache = cache
        self.paste_back = PasteBack(paste or PasteSettings())
        self.masks: FaceMasks | None = None  # region / occlusion masks (faces.mask)
        self._latent: np.ndarray | None = None
        self._source_feeds: dict[int, np.ndarray] = {}  # the latent as fed, per batch size
        self._check_contract()
        target = self._input("target")
        source = self._input("source")
        self._target_dtype = target.dtype
        self._source_dtype = source.dtype
        self._output_name = self._image_output().name
        self.batched = is_dynamic_batch(target) and is_dynamic_batch(source)
        fmt = self.crop
        std = np.asarray(fmt.std, dtype=np.float32)
        self._in_scale = 1.0 / (255.0 * std)
        self._in_bias = -np.asarray(fmt.mean, dtype=np.float32) / std
        self._blobs: dict[int, np.ndarray] = {}
        self._out_crops: dict[int, np.ndarray] = {}
        log.info("swapper ready", extra=kv(model=name, contract=self.contract, crop=fmt.size, batched=self.batched))

    # --- contract -----------------------------------------------------------------
    def _input(self, name: str) -> TensorInfo:
        for info in self.session.inputs:
            if info.name == name:
                return info
        raise contract_error(self.name, f"no input named {name!r}", self.session)

    def _check_contract(self) -> None:
        session = self.session
        names = sorted(i.name for i in session.inputs)
        if names != ["source", "target"]:
            raise contract_error(self.name, "inputs must be exactly 'source' and 'target'", session)
        if not session.outputs:
            raise contract_error(self.name, "it has no output", session)
        check_image_tensor(self._input("target"), self.crop.size, self.name, session, "input")
        check_vector_tensor(self._input("source"), self.latent_size, self.name, session, "input")
        self._image_output()  # raises when no output is an image

    def _image_output(self) -> TensorInfo:
        # The output is taken by position (its name is not part of the contract); a model
        # that also returns e.g. a 1-channel mask after it still works.
        for info in self.session.outputs:
            if len(info.shape) == 4 and not (is_fixed(info.shape[1]) and info.shape[1] != 3):
                return info
        raise contract_error(self.name, "no N×3×H×W image output", self.session)

    # --- identity -----------------------------------------------------------------
    def latent(self, identity: SourceIdentity | np.ndarray) -> np.ndarray:
        """The (1, latent_size) float32 source input for `identity`."""
        raise NotImplementedError

    def prepare_identity(self, sources: SourceFaces) -> SwapLatent:
        """Embed the source faces with the recognizer and compute the latent, or read it
        from the latent cache when these photos met this model file before."""
        if self.recognizer is None:
            raise InputError(
                f"the {self.name} swapper needs a recognizer; set faces.recognizer.model (e.g. arcface_w600k_r50)"
            )
        key = sources.content_hash
        if self.cache is not None and key:
            cached = self.cache.get(key, self.cache_key)
            if cached is not None and cached.size == self.latent_size:
                log.info("source identity from cache", extra=kv(images=len(sources.faces)))
                return SwapLatent(cached.astype(np.float32).reshape(1, -1))
        latent = self.latent(embed_sources(sources, self.recognizer))
        if self.cache is not None and key:
            self.cache.put(key, self.cache_key, latent)
        log.info("source identity computed", extra=kv(images=len(sources.faces)))
        return SwapLatent(latent)

    def set_identity(self, identity: NeuralIdentity) -> None:
        """Use a prepared latent (or compute one from an identity or embedding) from the
        next `swap` on."""
        self.set_latent(identity.values if isinstance(identity, SwapLatent) else self.latent(identity))

    def set_latent(self, latent: np.ndarray) -> None:
        """Use a precomputed (e.g. cached) latent."""
        latent = np.asarray(latent, dtype=np.float32).reshape(1, -1)
        if latent.shape[1] != self.latent_size:
            raise ValueError(f"{self.name}: latent must have {self.latent_size} values, got {latent.shape[1]}")
        self._latent = latent
        self._source_feeds = {1: latent.astype(self._source_dtype, copy=False)}

    def _source_feed(self, count: int) -> np.ndarray:
        """The `source` input for `count` crops, built once per identity and batch size."""
        feed = self._source_feeds.get(count)
        if feed is None:
            feed = self._source_feeds[count] = np.repeat(self._source_feeds[1], count, axis=0)
        return feed

    @property
    def cache_key(self) -> str:
        """What the latent depends on besides the source images (latent cache key)."""
        return f"{self.contract}:{self.sha256}"

    # --- tensors ------------------------------------------------------------------
    def _blob(self, count: int) -> np.ndarray:
        blob = self._blobs.get(count)
        if blob is None:
            size = self.crop.size
            blob = self._blobs[count] = np.empty((count, 3, size, size), dtype=np.float32)
        return blob

    def to_tensor(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) BGR uint8 crops → the model's (N, 3, S, S) input."""
        blob = self._blob(len(crops))
        ops.crops_to_tensor(crops, blob, self._in_scale, self._in_bias, self.crop.rgb)
        return blob if self._target_dtype == np.float32 else blob.astype(self._target_dtype)

    def to_crops(self, output: np.ndarray) -> np.ndarray:
        """The model's (N, 3, S, S) output → (N, S, S, 3) BGR uint8 crops (a buffer reused
        per batch size: valid until the next call)."""
        n, _, h, w = output.shape
        crops = self._out_crops.get(n)
        if crops is None or crops.shape[1:3] != (h, w):
            crops = self._out_crops[n] = np.empty((n, h, w, 3), np.uint8)
        ops.tensor_to_crops(output, crops, self.crop.out_scale, self.crop.out_offset, self.crop.rgb)
        return crops

    # --- frame --------------------------------------------------------------------
    def generate(self, crops: np.ndarray) -> np.ndarray:
        """Run the generator on aligned crops: one call for all when the batch is dynamic."""
        if self._latent is None:
            raise RuntimeError(f"{self.name}: set_identity() must be called before swap()")
        blob = self.to_tensor(crops)
        if self.batched:
            feeds = {"target": blob, "source": self._source_feed(len(crops))}
            return self.to_crops(self.session.run(feeds)[self._output_name])
        latent = self._source_feed(1)
        outs = [
            self.session.run({"target": blob[i : i + 1], "source": latent})[self._output_name]
            for i in range(len(crops))
        ]
        return self.to_crops(np.concatenate(outs, axis=0))

    def align(self, frame: np.ndarray, faces: Sequence[Face]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Aligned crops (N, S, S, 3) of `faces` and their frame → crop matrices."""
        size = self.crop.size
        crops = np.empty((len(faces), size, size, 3), dtype=np.uint8)
        matrices = []
        for i, face in enumerate(faces):
            matrix = align_matrix(face.kps, self.crop.template, size)
            warp_crop(frame, matrix, size, out=crops[i])
            matrices.append(matrix)
        return crops, matrices

    def paste(
        self,
        frame: np.ndarray,
        faces: Sequence[Face],
        generated: np.ndarray,
        crops: np.ndarray,
        matrices: Sequence[np.ndarray],
        masks: Sequence[np.ndarray | None] | None = None,
    ) -> None:
        for i, (face, out, crop, matrix) in enumerate(zip(faces, generated, crops, matrices)):
            self.paste_back.paste(
                frame,
                out,
                matrix,
                target_crop=crop,
                kps=face.kps,
                landmarks=face.landmarks,
                extra_mask=None if masks is None else masks[i],
            )

    def swap(self, frame: np.ndarray, faces: Sequence[Face]) -> None:
        """Replace every face of `frame` in place with the source identity."""
        if not faces:
            return
        crops, matrices = self.align(frame, faces)  # all crops read before any paste
        masks = None
        if self.masks is not None and self.masks.active:
            size = self.crop.size
            masks = self.masks.masks(frame, faces, matrices, [(size, size)] * len(faces))
        generated = self.generate(crops)
        self.paste(frame, faces, generated, crops, matrices, masks)
