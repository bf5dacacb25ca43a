"""TensorRT backend: cached engines behind the same `Session` interface as ONNX Runtime.

`ensure_engine` returns a valid engine for (model, TensorRT version, GPU, precision,
profile) from the cache, building it in a child process under a file lock when it is
missing or stale (or refusing with a message when building is disabled). `TrtSession`
runs it with name-based tensor I/O (`set_input_shape` / `set_tensor_address` /
`execute_async_v3`), buffers allocated once at the profile maximum, and an event per run,
on the stream of the pipeline stage that owns it (the engines of one stage share the
stage's named stream from the process's `GpuContext`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.base import DeviceSession, TensorInfo
from streamswap.inference.cuda import (
    Cuda,
    CudaError,
    DeviceArray,
    DeviceBuffer,
    DeviceInfo,
    GpuContext,
    PendingRun,
    PinnedBuffer,
    Stream,
    _handle,
)
from streamswap.inference.engine_cache import EngineCache, EngineKey, InputProfile, file_sha256
from streamswap.inference.trt_build import (
    BuildProgress,
    BuildRequest,
    ProgressFn,
    TrtApi,
    import_tensorrt,
    run_build,
)
from streamswap.logs import kv

log = logging.getLogger(__name__)

# TensorRT DataType member name -> numpy dtype.
_TRT_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "BF16": None,
    "FP8": None,
}


def trt_dtype(dtype: Any) -> np.dtype:
    name = getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
    np_type = _TRT_DTYPES.get(str(name).upper())
    if np_type is None:
        raise ModelError(f"engine tensor type {name} has no numpy equivalent; rebuild with fp16/fp32")
    return np.dtype(np_type)


def onnx_inputs(path: Path) -> list[tuple[str, list[Any]]]:
    """(name, dims) of a model's real inputs (initializers excluded); dims are int or str/None."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read this ONNX model ({exc})") from None
    inits = {i.name for i in model.graph.initializer}
    out = []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims: list[Any] = []
        for d in inp.type.tensor_type.shape.dim:
            if d.HasField("dim_value") and d.dim_value > 0:
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
        out.append((inp.name, dims))
    return out


@dataclass(frozen=True)
class EngineRequest:
    """What engine is wanted: a model file and how to build it."""

    model_path: Path
    precision: str
    profile: tuple[InputProfile, ...]
    model_sha256: str | None = None  # computed when None
    name: str | None = None  # readable name; the file stem when None

    def key(self, trt_version: str, device: DeviceInfo) -> EngineKey:
        sha = self.model_sha256 or file_sha256(self.model_path)
        return EngineKey(
            model=self.name or self.model_path.stem,
            model_sha256=sha,
            trt_version=trt_version,
            gpu_name=device.name,
            compute_capability=device.compute_capability,
            precision=self.precision,
            profile=self.profile,
        )


def ensure_engine(
    request: EngineRequest,
    cache: EngineCache,
    *,
    trt_version: str,
    device: DeviceInfo,
    build: bool = True,
    timeout_s: float = 3600.0,
    workspace_mb: int = 2048,
    calib_data: Path | None = None,
    progress: ProgressFn | None = None,
    force: bool = False,
    build_command: list[str] | None = None,
    build_env: Mapping[str, str] | None = None,
) -> Path:
    """The path of a valid engine for `request` on this machine, built if needed.

    A stale or foreign engine is never returned: it is rebuilt (under a build lock, in a
    child process), or BackendUnavailable says how to build it when `build` is False.
    """
    key = request.key(trt_version, device)
    found = cache.lookup(key)
    if found.fresh and not force:
        log.info("engine cached", extra=kv(engine=found.path.name))
        return found.path
    if not build:
        why = "no engine is cached" if found.reason == "missing" else f"the cached engine is unusable ({found.reason})"
        raise BackendUnavailable(
            f"{key.model}: {why} for TensorRT {trt_version} on {device.name} ({key.precision}); "
            "run `streamswap engines build` with the same config, or set inference.build_engines: true"
        )
    if found.reason != "missing":
        log.warning("engine stale, rebuilding", extra=kv(engine=found.path.name, reason=found.reason))

    def waiting() -> None:
        if progress is not None:
            progress(BuildProgress(key.model, "wait", "waiting for another build of this engine", None, 0.0))

    with cache.build_lock(key, timeout_s, waiting=waiting):
        found = cache.lookup(key)  # another process may have built it while we waited
        if found.fresh and not force:
            return found.path
        cache.dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache.dir))
        try:
            build_request = BuildRequest(
                model=key.model,
                onnx_path=str(request.model_path),
                engine_out=str(work / "engine.plan"),
                precision=key.precision,
                profile=[p.to_json() for p in key.profile],
                work_dir=str(work),
                timing_cache=str(cache.timing_cache_path(device.name, device.compute_capability, trt_version)),
                workspace_mb=workspace_mb,
                calib_data=str(calib_data) if calib_data else None,
                calib_cache=str(cache.calibration_cache_path(key.model, key.model_sha256)),
                calib_batch_size=key.profile[0].opt[0] if key.profile and key.profile[0].opt else 1,
            )
            log.info(
                "building engine", extra=kv(model=key.model, precision=key.precision, trt=trt_version, gpu=device.name)
            )
            seconds = run_build(
                build_request, timeout_s=timeout_s, progress=progress, command=build_command, env=build_env
            )
            return cache.store(key, Path(build_request.engine_out), build_seconds=seconds)
        finally:
            shutil.rmtree(work, ignore_errors=True)


@dataclass
class _Tensor:
    """One engine input or output with its buffers, allocated once at the profile maximum:
    device memory bound to the context for good, and pinned host staging for copies."""

    info: TensorInfo
    max_shape: tuple[int, ...]
    device: DeviceBuffer
    host: PinnedBuffer

    @property
    def name(self) -> str:
        return self.info.name


class TrtSession:
    """One deserialised engine with its execution context, owned by one pipeline stage.

    Every tensor's device buffer and pinned staging are allocated when the engine loads, at
    the maximum shape of its optimisation profile, and bound to the context once: running
    any batch up to the maximum allocates nothing. Every copy and run goes on `stream` (the
    owning stage's, given explicitly; a session made without one creates its own).

    Two ways to run: `run`/`run_async` take host arrays (staged through pinned memory);
    `device_input`/`device_output` + `enqueue` keep tensors on the device, for a stage that
    prepares inputs with its own kernels on the same stream.
    """

    def __init__(self, engine_path: Path, trt: Any, cuda: Cuda, stream: Stream | None = None) -> None:
        self.path = engine_path
        self._trt = trt
        self._cuda = cuda
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            raise ModelError(
                f"{engine_path}: TensorRT cannot load this engine (built by another TensorRT or GPU?); "
                "run `streamswap engines clear` and build again"
            )
        self._engine = engine
        self._context = engine.create_execution_context()
        self._own_stream = stream is None
        self.stream = stream if stream is not None else cuda.stream()
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            info = TensorInfo(
                name,
                tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(name)),
                trt_dtype(engine.get_tensor_dtype(name)),
            )
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(info)
            else:
                self._outputs.append(info)
        self._tensors: dict[str, _Tensor] = {}
        self._allocate()
        self._event = cuda.event()
        self._in_flight = False

    def _max_input_shape(self, info: TensorInfo) -> tuple[int, ...]:
        if info.fixed_shape is not None:
            return info.fixed_shape
        _, _, high = self._engine.get_tensor_profile_shape(info.name, 0)
        return tuple(int(d) for d in high)

    def _allocate(self) -> None:
        """Buffers at the profile maximum, bound once (the module doc says why)."""
        shapes: dict[str, tuple[int, ...]] = {}
        for info in self._inputs:
            shape = shapes[info.name] = self._max_input_shape(info)
            if not self._context.set_input_shape(info.name, shape):
                raise ModelError(f"{self.path.name}: TensorRT refuses the profile maximum {shape} of {info.name!r}")
        for info in self._outputs:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise ModelError(f"{self.path.name}: output {info.name!r} has a data-dependent shape")
            shapes[info.name] = shape
        for info in [*self._inputs, *self._outputs]:
            shape = shapes[info.name]
            nbytes = int(np.prod(shape, dtype=np.int64)) * info.dtype.itemsize
            tensor = _Tensor(info, shape, self._cuda.device_buffer(nbytes), self._cuda.pinned_buffer(nbytes))
            self._tensors[info.name] = tensor
            self._context.set_tensor_address(info.name, tensor.device.ptr)

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    @property
    def backend(self) -> str:
        return "tensorrt"

    @property
    def device_io(self) -> bool:
        """Always: an engine's tensors live in its device buffers (`DeviceSession`)."""
        return True

    def max_shape(self, name: str) -> tuple[int, ...]:
        """The largest shape of tensor `name` this engine takes (its buffers' size)."""
        return self._tensors[name].max_shape

    # -- device-resident I/O ------------------------------------------------------------
    def device_input(self, name: str) -> DeviceArray:
        """Input `name`'s device buffer at its maximum shape (write it with a kernel on
        `self.stream`, then `enqueue`)."""
        tensor = self._tensors[name]
        return tensor.device.array(tensor.max_shape, tensor.info.dtype)

    def device_output(self, name: str, shape: Sequence[int] | None = None) -> DeviceArray:
        """Output `name`'s device buffer, viewed at `shape` (default: the current run's)."""
        tensor = self._tensors[name]
        if shape is None:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
        return tensor.device.array(shape, tensor.info.dtype)

    def enqueue(self, shapes: Mapping[str, Sequence[int]], stream: "Stream | int | None" = None) -> None:
        """Queue the engine on the inputs already in the device buffers, with these input
        shapes; nothing is copied and the host does not wait."""
        for name, shape in shapes.items():
            if not self._context.set_input_shape(name, tuple(shape)):
                raise ModelError(
                    f"{self.path.name}: input {name!r} shape {tuple(shape)} is outside the engine's "
                    "optimisation profile; rebuild with a larger --max-faces"
                )
        if not self._context.execute_async_v3(_handle(stream if stream is not None else self.stream)):
            raise CudaError(f"{self.path.name}: TensorRT execute_async_v3 failed (see the TensorRT log)")

    # -- host I/O -----------------------------------------------------------------------
    def run_async(self, feeds: Mapping[str, np.ndarray], stream: "Stream | int | None" = None) -> PendingRun:
        """Stage the inputs in pinned memory, queue copies in, the engine and copies out on
        `stream` (default: the owning stage's); return without waiting. One run at a time:
        the next run_async needs the previous result() taken first."""
        if self._in_flight:
            raise RuntimeError(f"{self.path.name}: a run is already in flight; take its result() first")
        handle = _handle(stream if stream is not None else self.stream)
        shapes: dict[str, tuple[int, ...]] = {}
        for info in self._inputs:
            if info.name not in feeds:
                raise ModelError(f"{self.path.name}: input {info.name!r} was not given")
            array = np.asarray(feeds[info.name])
            tensor = self._tensors[info.name]
            if array.size * info.dtype.itemsize > tensor.host.nbytes:
                raise ModelError(
                    f"{self.path.name}: input {info.name!r} shape {array.shape} is larger than the "
                    f"engine's maximum {tensor.max_shape}; rebuild with a larger --max-faces"
                )
            staged = tensor.host.array(array.shape, info.dtype)
            np.copyto(staged, array, casting="unsafe")  # e.g. float32 feeds into an fp16 engine
            shapes[info.name] = array.shape
            self._cuda.copy_htod_async(tensor.device, staged, handle)
        self.enqueue(shapes, handle)
        return self.fetch(handle)

    def fetch(self, stream: "Stream | int | None" = None) -> PendingRun:
        """Queue copies of every output (at the last run's shapes) into pinned memory and an
        event; `result()` waits for that event only."""
        if self._in_flight:
            raise RuntimeError(f"{self.path.name}: a run is already in flight; take its result() first")
        handle = _handle(stream if stream is not None else self.stream)
        outputs: dict[str, np.ndarray] = {}
        for info in self._outputs:
            tensor = self._tensors[info.name]
            shape = tuple(int(d) for d in self._context.get_tensor_shape(info.name))
            outputs[info.name] = host = tensor.host.array(shape, info.dtype)
            self._cuda.copy_dtoh_async(host, tensor.device, handle)
        self._event.record(handle)
        self._in_flight = True
        return PendingRun(self._event, outputs, self._finish_run)

    def _finish_run(self) -> None:
        self._in_flight = False

    def run(self, feeds: Mapping[str, np.ndarray], stream: "Stream | int | None" = None) -> dict[str, np.ndarray]:
        """Run once and wait for this run's outputs (the host waits on its event only)."""
        return self.run_async(feeds, stream).result()

    def close(self) -> None:
        for tensor in self._tensors.values():
            tensor.device.free()
            tensor.host.free()
        self._tensors.clear()
        self._event.close()
        if self._own_stream:
            self.stream.close()


@dataclass
class TrtEnvironment:
    """What TensorRT needs on this machine: the module, its version, the process's GPU context."""

    trt: Any
    version: str
    gpu: GpuContext
    device: DeviceInfo

    @property
    def cuda(self) -> Cuda:
        return self.gpu.cuda

    @classmethod
    def detect(cls, device: int = 0, gpu: GpuContext | None = None) -> "TrtEnvironment":
        """TensorRT + cuda-python + driver + GPU, or BackendUnavailable naming the missing one.
        `gpu` is the process's context when one is open (CUDA is opened once)."""
        trt = import_tensorrt()
        TrtApi.of(trt)  # refuses versions older than 8.5
        gpu = gpu or GpuContext.open(device)
        return cls(trt, str(trt.__version__), gpu, gpu.cuda.info())


def open_trt_session(
    model_path: Path,
    settings: Any,
    cache: EngineCache,
    *,
    profile: Sequence[InputProfile],
    model_sha256: str | None = None,
    progress: ProgressFn | None = None,
    env: TrtEnvironment | None = None,
    stage: str | None = None,
) -> TrtSession:
    """Load (building when needed and allowed) the engine for `model_path` and open it on
    the named stage's stream (`stage`: "detect", "swap"; None: a stream of its own)."""
    env = env or TrtEnvironment.detect()
    request = EngineRequest(Path(model_path), settings.engine_precision, tuple(profile), model_sha256)
    started = time.monotonic()
    if request.precision == "int8":
        _require_calibration(cache, request)
    path = ensure_engine(
        request,
        cache,
        trt_version=env.version,
        device=env.device,
        build=settings.build_engines,
        timeout_s=settings.build_timeout_s,
        workspace_mb=settings.workspace_mb,
        progress=progress,
    )
    stream = env.gpu.stream(stage) if stage else None
    session = TrtSession(path, env.trt, env.cuda, stream)
    log.info("engine loaded", extra=kv(engine=path.name, seconds=time.monotonic() - started))
    return session


def _require_calibration(cache: EngineCache, request: EngineRequest) -> None:
    """At run time INT8 engines are built from a saved calibration cache only (the build
    finds it by model and hash); preparing calibration images is
    `streamswap engines build --precision int8 --calib-dir DIR`. Refuses when there is none."""
    sha = request.model_sha256 or file_sha256(request.model_path)
    calib_cache = cache.calibration_cache_path(request.name or request.model_path.stem, sha)
    if not calib_cache.exists():
        raise BackendUnavailable(
            f"{request.model_path.name}: INT8 needs calibration first; run `streamswap engines build "
            f"{request.model_path.stem} --precision int8 --calib-dir FACES_DIR` or use precision fp16"
        )


if TYPE_CHECKING:  # mypy checks that the engines implement the GPU frame path's device I/O
    _device_session: type[DeviceSession] = TrtSession
