"""ONNX Runtime backend: provider choice, EP options, one session per model file."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.base import Dim, PendingOutputs, Session, TensorInfo
from streamswap.inference.settings import InferenceSettings
from streamswap.logs import kv

if TYPE_CHECKING:
    from streamswap.inference.base import DeviceSession
    from streamswap.inference.cuda import Cuda, DeviceArray, Stream
    from streamswap.inference.ort_device import OrtDeviceIO

log = logging.getLogger(__name__)

# Our names for ORT execution providers, in `auto` preference order.
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "cpu": "CPUExecutionProvider",
}

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

# onnxruntime and onnxruntime-gpu install into the same `onnxruntime` folder: the GPU build
# must replace the CPU one (a dependency of streamswap), not sit next to it.
GPU_BUILD_INSTALL = "pip uninstall -y onnxruntime && pip install --force-reinstall onnxruntime-gpu"

_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _import_ort() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - a hard dependency
        raise BackendUnavailable(
            f"onnxruntime cannot be imported ({exc}); reinstall it: pip install onnxruntime"
        ) from None
    return onnxruntime


def available_providers() -> list[str]:
    """Our names of the providers this onnxruntime build offers, best first."""
    offered = set(_import_ort().get_available_providers())
    return [name for name, ep in PROVIDERS.items() if ep in offered]


def probe_provider(name: str) -> str | None:
    """None when ONNX Runtime starts provider `name` (our name) here, else why not.

    Offered is not usable: an onnxruntime-gpu build lists CUDA and TensorRT on a machine
    without a GPU, so this opens a one-node graph with the provider and sees if it stayed.
    """
    ort = _import_ort()
    if PROVIDERS[name] not in ort.get_available_providers():
        return "not in this onnxruntime build"
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            model.SerializeToString(),
            sess_options=options,
            providers=list(dict.fromkeys([PROVIDERS[name], PROVIDERS["cpu"]])),
            enable_fallback=0,
        )
    except Exception as exc:  # a provider library that does not load, no device, ...
        return _first_line(exc)
    if PROVIDERS[name] not in session.get_providers():
        return "offered but did not start (no GPU/driver, or its libraries do not load)"
    return None


def resolve_providers(
    settings: InferenceSettings, cache_dir: Path | None, stream: int | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """The ORT provider list (with options) for `settings.provider`; `stream` (a CUDA
    stream handle, the owning stage's) is where the CUDA and TensorRT providers compute.

    `auto` takes every accelerator this onnxruntime offers, best first, and the CPU last so
    unsupported operators still run (`open_ort_session` keeps what actually starts). An
    explicit provider must be offered, else BackendUnavailable.
    """
    have = available_providers()
    if settings.provider == "auto":
        chosen = [p for p in PROVIDERS if p in have]
    else:
        if settings.provider not in have:
            raise BackendUnavailable(
                f"inference.provider is {settings.provider!r} but this onnxruntime offers only "
                f"{', '.join(have) or 'none'}; for CUDA/TensorRT replace it with the GPU build "
                f"({GPU_BUILD_INSTALL}), or set inference.provider: auto"
            )
        # TensorRT takes the graph's supported parts; CUDA (when there) runs the rest on the GPU.
        chosen = [settings.provider]
        if settings.provider == "tensorrt" and "cuda" in have:
            chosen.append("cuda")
        if settings.provider != "cpu":
            chosen.append("cpu")
    return [(PROVIDERS[p], _provider_options(p, settings, cache_dir, stream)) for p in chosen]


def _provider_options(
    name: str, settings: InferenceSettings, cache_dir: Path | None, stream: int | None = None
) -> dict[str, Any]:
    # ORT's CUDA and TensorRT providers take the stream to compute on as its address in a
    # string; has_user_compute_stream is what versions before 1.17 read.
    on_stream: dict[str, object] = (
        {}
        if stream is None
        else {
            "has_user_compute_stream": "1",
            "user_compute_stream": str(int(stream)),
        }
    )
    if name == "tensorrt":
        opts: dict[str, object] = {"trt_fp16_enable": settings.fp16, "device_id": settings.device, **on_stream}
        if cache_dir is not None:
            opts.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=str(cache_dir / "ort-trt"),
                trt_timing_cache_enable=True,
                trt_timing_cache_path=str(cache_dir / "ort-trt"),
            )
        return opts
    if name == "cuda":
        return {"cudnn_conv_algo_search": "HEURISTIC", "device_id": settings.device, **on_stream}
    return {}


def _trt_profile_options(path: Path, max_batch: int, size: int | None) -> dict[str, str]:
    """Explicit optimisation profiles for ORT's TensorRT provider (ORT >= 1.16): one engine
    for every dynamic input's whole range (batch 1..max_batch, other dynamic dims `size`), as
    our own engines have, instead of an engine rebuilt whenever a run brings a larger batch
    (seconds to minutes, mid-stream). {} when the model cannot be read here or a dynamic dim
    has no size: the provider then profiles from the shapes it sees."""
    from streamswap.inference.engine_cache import profile_from_inputs
    from streamswap.inference.tensorrt import onnx_inputs

    try:
        inputs = onnx_inputs(path)
        dynamic = [(name, dims) for name, dims in inputs if not all(isinstance(d, int) for d in dims)]
        profile = profile_from_inputs(dynamic, max_batch, size)
    except (ModelError, BackendUnavailable):
        return {}
    if not profile:
        return {}

    def shapes(pick: Callable[[Any], Sequence[int]]) -> str:
        return ",".join(f"{p.name}:{'x'.join(str(d) for d in pick(p))}" for p in profile)

    return {
        "trt_profile_min_shapes": shapes(lambda p: p.min),
        "trt_profile_opt_shapes": shapes(lambda p: p.opt),
        "trt_profile_max_shapes": shapes(lambda p: p.max),
    }


def _dims(shape: Sequence[object]) -> tuple[Dim, ...]:
    return tuple(d if isinstance(d, int) else (str(d) if d is not None else None) for d in shape)


def _tensor_infos(args: Sequence[Any]) -> list[TensorInfo]:
    """ORT's NodeArg list as TensorInfo (unknown element types read as float32)."""
    return [TensorInfo(a.name, _dims(a.shape), np.dtype(_ORT_TYPES.get(a.type, np.float32))) for a in args]


@dataclass
class OrtSession:
    """One ONNX Runtime InferenceSession behind the `Session` interface.

    `stream` is the owning stage's CUDA stream when the session runs on ONNX Runtime's CUDA
    or TensorRT provider (its computations go on that stream, `user_compute_stream`). With
    the process's GPU context (`cuda`) it is also a `DeviceSession`: the GPU frame path's
    stages run it on device buffers of its own through I/O binding (`ort_device`), so
    frames prepared by the stage's kernels never leave the device. Those buffers are made
    the first time a device stage asks, at `max_batch` (a dynamic leading input dim) and
    `size` (other dynamic dims); sessions that only take host arrays never make them."""

    path: Path
    _session: Any
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    stream: Any = None
    device_id: int = 0
    cuda: Cuda | None = None
    max_batch: int = 8
    size: int | None = None

    def __post_init__(self) -> None:
        self._output_names = [o.name for o in self.outputs]  # once, not per run
        self._device: OrtDeviceIO | None = None

    @property
    def backend(self) -> str:
        return "ort:" + str(self._session.get_providers()[0])

    def run(self, feeds: Mapping[str, np.ndarray], stream: int | None = None) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, dict(feeds))
        return dict(zip(self._output_names, values))

    # -- DeviceSession: the GPU frame path ------------------------------------------------------
    @property
    def device_io(self) -> bool:
        """On the CUDA/TensorRT provider with the process's GPU context."""
        return self.stream is not None and self.cuda is not None

    def _io(self) -> OrtDeviceIO:
        if self._device is None:
            if self.stream is None or self.cuda is None:
                raise BackendUnavailable(
                    f"{self.path.name} runs on {self.backend} without the GPU context: it has no device "
                    "buffers (the GPU frame path needs inference.provider cuda or tensorrt with onnxruntime-gpu)"
                )
            from streamswap.inference.ort_device import OrtDeviceIO

            self._device = OrtDeviceIO(
                _import_ort(),
                self._session,
                self.path,
                self.inputs,
                self.outputs,
                cuda=self.cuda,
                stream=self.stream,
                device_id=self.device_id,
                max_batch=self.max_batch,
                size=self.size,
            )
        return self._device

    def max_shape(self, name: str) -> tuple[int, ...]:
        return self._io().max_shape(name)

    def device_input(self, name: str) -> DeviceArray:
        return self._io().device_input(name)

    def device_output(self, name: str, shape: Sequence[int] | None = None) -> DeviceArray:
        return self._io().device_output(name, shape)

    def enqueue(self, shapes: Mapping[str, Sequence[int]], stream: Stream | int | None = None) -> None:
        """Queue a run on the device buffers (stream: the session's own; ORT's compute stream
        is fixed when the session is created)."""
        self._io().enqueue(shapes, stream)

    def fetch(self, stream: Stream | int | None = None) -> PendingOutputs:
        return self._io().fetch(stream)

    def close(self) -> None:
        """Free the device buffers (when a device stage made them)."""
        if self._device is not None:
            self._device.close()
            self._device = None


if TYPE_CHECKING:  # mypy checks that ONNX Runtime sessions implement the device I/O too
    _device_session: type[DeviceSession] = OrtSession


def open_ort_session(
    path: Path,
    settings: InferenceSettings,
    cache_dir: Path | None = None,
    stream: Stream | int | None = None,
    *,
    cuda: Cuda | None = None,
    max_batch: int | None = None,
    size: int | None = None,
) -> OrtSession:
    """Load `path` with the providers `settings` asks for; errors say which file and why.
    On the CUDA/TensorRT provider the session computes on `stream` (the owning stage's) and,
    given the process's `cuda` (GpuContext.cuda), can run on device buffers sized by
    `max_batch` (default inference.max_batch) and `size` (see `OrtSession`).

    An explicit provider that ONNX Runtime offers but cannot start here (no driver, CUDA or
    TensorRT libraries that do not match) is BackendUnavailable; with `auto` the session
    runs on what did start, and the accelerators left out are logged as a warning.
    """
    ort = _import_ort()
    from streamswap.inference.cuda import _handle

    handle = None if stream is None else int(_handle(stream))
    providers = resolve_providers(settings, cache_dir, handle)
    for ep, ep_options in providers:
        if ep == PROVIDERS["tensorrt"]:
            ep_options.update(_trt_profile_options(path, max_batch or settings.max_batch, size))
    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[settings.graph_optimization])
    if settings.threads:
        options.intra_op_num_threads = settings.threads
    # Nodes run one after another (ORT's default sequential mode): no inter-op pool to start.
    options.inter_op_num_threads = 1
    spin = "1" if settings.allow_spinning else "0"
    options.add_session_config_entry("session.intra_op.allow_spinning", spin)
    options.add_session_config_entry("session.inter_op.allow_spinning", spin)
    options.log_severity_level = 3  # ORT's own warnings are noise for users
    if cache_dir is not None and any(p[0] == PROVIDERS["tensorrt"] for p in providers):
        (cache_dir / "ort-trt").mkdir(parents=True, exist_ok=True)
    session, reason = _start_session(ort, path, options, providers)
    started = session.get_providers()
    left_out = [ep for ep, _ in providers if ep not in started]
    if left_out:
        _provider_did_not_start(path, settings, left_out, started, reason)
    log.info("model loaded", extra=kv(model=path.name, providers=",".join(started)))
    on_gpu = started[0] in (PROVIDERS["cuda"], PROVIDERS["tensorrt"])
    return OrtSession(
        path,
        session,
        _tensor_infos(session.get_inputs()),
        _tensor_infos(session.get_outputs()),
        stream=stream if on_gpu else None,
        device_id=settings.device,
        cuda=cuda if on_gpu and stream is not None else None,
        max_batch=max_batch or settings.max_batch,
        size=size,
    )


def _start_session(
    ort: Any, path: Path, options: Any, providers: list[tuple[str, dict[str, Any]]]
) -> tuple[Any, str | None]:
    """The InferenceSession, and why the accelerators failed when it runs without them.

    ONNX Runtime's own fallback is off: it would print to stdout and silently move an
    explicit provider's work to the CPU. A failure with accelerators is retried on the CPU
    alone to tell a bad model file from a provider that cannot start."""

    def create(chosen: list[tuple[str, dict[str, Any]]]) -> Any:
        session = ort.InferenceSession(
            os.fspath(path),
            sess_options=options,
            providers=[p for p, _ in chosen],
            provider_options=[o for _, o in chosen],
            enable_fallback=0,
        )
        session.disable_fallback()  # onnxruntime versions that ignore the keyword
        return session

    def load_error(exc: Exception) -> ModelError:
        return ModelError(
            f"{path}: ONNX Runtime cannot load this file ({_first_line(exc)}): it is damaged or "
            "not an ONNX model; a catalogue model: `streamswap models verify`, then delete it and "
            "`streamswap models fetch NAME`; your own file: export it again or check the path"
        )

    try:
        return create(providers), None
    except Exception as exc:  # ORT raises its own exception types for bad graphs
        first_error = exc
    cpu = [(ep, opts) for ep, opts in providers if ep == PROVIDERS["cpu"]]
    if len(cpu) == len(providers):
        raise load_error(first_error) from None
    try:
        session = create(cpu)
    except Exception as exc:
        raise load_error(exc) from None
    return session, _first_line(first_error)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _provider_did_not_start(
    path: Path, settings: InferenceSettings, left_out: list[str], started: list[str], reason: str | None
) -> None:
    """Raise for an explicit provider that did not start; log it under `auto`."""
    why = f" ({reason})" if reason else ""
    if settings.provider != "auto" and PROVIDERS[settings.provider] in left_out:
        raise BackendUnavailable(
            f"inference.provider is {settings.provider!r} but ONNX Runtime could not start "
            f"{PROVIDERS[settings.provider]} for {path}{why} (for CUDA/TensorRT usually no NVIDIA "
            "GPU/driver, or CUDA, cuDNN or TensorRT libraries that do not match onnxruntime-gpu); "
            "run `streamswap doctor`, or set inference.provider: auto"
        )
    log.warning(
        "accelerator could not start, running without it",
        extra=kv(
            model=path.name, left_out=",".join(left_out), running=",".join(started), reason=reason or "not registered"
        ),
    )


class SessionPool:
    """One session per (model file, settings) for the life of the process, shared by stages."""

    def __init__(
        self,
        settings: InferenceSettings,
        cache_dir: Path | None = None,
        progress: Callable[[Any], None] | None = None,
        gpu: Any = None,
    ) -> None:
        self.settings = settings
        self.cache_dir = cache_dir
        # Engine-build progress (inference.backend: tensorrt), e.g. to extend systemd's timeout.
        self.progress = progress
        self.gpu = gpu  # the process's cuda.GpuContext, when the build place opened one
        self._trt_env: Any = None  # backends.SharedTrtEnvironment, shared by every session
        self._triton_conn: Any = None  # triton.TritonConnection: one channel to the server
        self._sessions: dict[tuple[Path, str | None], Session] = {}
        self._lock = threading.Lock()

    def runs_on_gpu(self) -> bool:
        """Whether any session opened so far computes on the GPU context (a TensorRT engine,
        or ONNX Runtime's CUDA/TensorRT provider), i.e. frames are worth pinning."""
        if self.gpu is None:
            return False
        with self._lock:
            backends = [s.backend for s in self._sessions.values()]
        return any(b == "tensorrt" or b.startswith(("ort:CUDA", "ort:Tensorrt")) for b in backends)

    def get(
        self,
        path: Path,
        *,
        max_batch: int | None = None,
        size: int | None = None,
        stage: str | None = None,
        role: str | None = None,
    ) -> Session:
        """The session for `path` owned by pipeline stage `stage` (a GPU session runs on that
        stage's stream; the same file used by two stages is two sessions). With
        inference.backend: tensorrt, `max_batch` bounds a dynamic batch dim (default
        inference.max_batch) and `size` fills other dynamic dims (a detector's input side).
        With triton, `role` (detector, swapper, ...) picks the server's model name from
        inference.triton.models."""
        key = (Path(path).resolve(), stage)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                # backends imports this module; open_session picks ORT or TensorRT (+ fallback).
                from streamswap.inference.backends import SharedTrtEnvironment, open_session

                if self._trt_env is None:  # one CUDA context, opened once
                    self._trt_env = SharedTrtEnvironment(gpu=self.gpu)  # detects on first TensorRT use
                if self._triton_conn is None and self.settings.backend == "triton":
                    from streamswap.inference.triton import TritonConnection

                    self._triton_conn = TritonConnection(self.settings.triton)
                session = open_session(
                    key[0],
                    self.settings,
                    self.cache_dir,
                    max_batch=max_batch,
                    size=size,
                    progress=self.progress,
                    trt_env=self._trt_env,
                    stage=stage,
                    gpu=self.gpu,
                    role=role,
                    triton_conn=self._triton_conn,
                )
                self._sessions[key] = session
            return session
