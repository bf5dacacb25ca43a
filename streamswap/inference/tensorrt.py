"""TensorRT backend: cached engines behind the same `Session` interface as ONNX Runtime.

`ensure_engine` returns a valid engine for (model, TensorRT version, GPU, precision,
profile) from the cache, building it in a child process under a file lock when it is
missing or stale (or refusing with a message when building is disabled). `TrtSession`
runs it with name-based tensor I/O (`set_input_shape` / `set_tensor_address` /
`execute_async_v3`), device buffers that only grow, and an event per run. Without a
caller-given stream a run goes on the calling thread's stage stream (`cuda.StageStreams`,
shared by every session of one `TrtEnvironment`), so engines of one pipeline stage share
a stream and the detect and swap stages each have their own.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from streamswap.errors import BackendUnavailable, ModelError
from streamswap.inference.base import TensorInfo
from streamswap.inference.cuda import (
    Cuda, CudaError, DeviceBuffer, DeviceInfo, Event, PinnedBuffer, StageStreams, Stream, _handle,
)
from streamswap.inference.engine_cache import EngineCache, EngineKey, InputProfile, file_sha256
from streamswap.inference.trt_build import (
    BuildProgress, BuildRequest, ProgressFn, TrtApi, import_tensorrt, run_build,
)
from streamswap.logs import kv

log = logging.getLogger(__name__)

# TensorRT DataType member name -> numpy dtype.
_TRT_DTYPES = {
    "FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
    "INT64": np.int64, "BOOL": np.bool_, "UINT8": np.uint8, "BF16": None, "FP8": None,
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
            model=self.name or self.model_path.stem, model_sha256=sha, trt_version=trt_version,
            gpu_name=device.name, compute_capability=device.compute_capability,
            precision=self.precision, profile=self.profile,
        )


def ensure_engine(request: EngineRequest, cache: EngineCache, *, trt_version: str, device: DeviceInfo,
                  build: bool = True, timeout_s: float = 3600.0, workspace_mb: int = 2048,
                  calib_data: Path | None = None, progress: ProgressFn | None = None,
                  force: bool = False, build_command: list[str] | None = None,
                  build_env: Mapping[str, str] | None = None) -> Path:
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
                model=key.model, onnx_path=str(request.model_path), engine_out=str(work / "engine.plan"),
                precision=key.precision, profile=[p.to_json() for p in key.profile], work_dir=str(work),
                timing_cache=str(cache.timing_cache_path(device.name, device.compute_capability, trt_version)),
                workspace_mb=workspace_mb,
                calib_data=str(calib_data) if calib_data else None,
                calib_cache=str(cache.calibration_cache_path(key.model, key.model_sha256)),
                calib_batch_size=key.profile[0].opt[0] if key.profile and key.profile[0].opt else 1,
            )
            log.info("building engine", extra=kv(model=key.model, precision=key.precision,
                                                 trt=trt_version, gpu=device.name))
            seconds = run_build(build_request, timeout_s=timeout_s, progress=progress,
                                command=build_command, env=build_env)
            return cache.store(key, Path(build_request.engine_out), build_seconds=seconds)
        finally:
            shutil.rmtree(work, ignore_errors=True)


class PendingRun:
    """An enqueued run: `event` fires when its outputs are on the host."""

    def __init__(self, event: Event, outputs: dict[str, np.ndarray], release: Callable[[], None]) -> None:
        self.event = event
        self._outputs = outputs
        self._release = release

    def done(self) -> bool:
        return self.event.done()

    def result(self) -> dict[str, np.ndarray]:
        """Wait for this run only (not the whole device) and return copies of its outputs."""
        try:
            self.event.synchronize()
            return {name: array.copy() for name, array in self._outputs.items()}
        finally:
            self._release()


class TrtSession:
    """One deserialised engine with its execution context and grow-only buffers."""

    def __init__(self, engine_path: Path, trt: Any, cuda: Cuda, streams: StageStreams | None = None) -> None:
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
        self._inputs: list[TensorInfo] = []
        self._outputs: list[TensorInfo] = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            info = TensorInfo(name, tuple(int(d) if int(d) >= 0 else None for d in engine.get_tensor_shape(name)),
                              trt_dtype(engine.get_tensor_dtype(name)))
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(info)
            else:
                self._outputs.append(info)
        self._device: dict[str, DeviceBuffer] = {}
        self._host: dict[str, PinnedBuffer] = {}
        # Runs without a caller-given stream use the calling thread's (stage's) stream.
        self._own_streams = streams is None
        self._streams = streams if streams is not None else StageStreams(cuda)
        self._event = cuda.event()
        self._lock = threading.Lock()  # one execution context: one run at a time

    @property
    def inputs(self) -> list[TensorInfo]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorInfo]:
        return self._outputs

    @property
    def backend(self) -> str:
        return "tensorrt"

    def _device_buffer(self, name: str, nbytes: int) -> DeviceBuffer:
        buf = self._device.get(name)
        if buf is None or buf.nbytes < nbytes:  # grow only: a smaller batch reuses the buffer
            if buf is not None:
                buf.free()
            buf = self._device[name] = self._cuda.device_buffer(nbytes)
        return buf

    def _host_buffer(self, name: str, nbytes: int) -> PinnedBuffer:
        buf = self._host.get(name)
        if buf is None or buf.nbytes < nbytes:
            if buf is not None:
                buf.free()
            buf = self._host[name] = self._cuda.pinned_buffer(nbytes)
        return buf

    def run_async(self, feeds: Mapping[str, np.ndarray], stream: "Stream | int | None" = None) -> PendingRun:
        """Enqueue copies in, the engine, copies out on `stream`; return without waiting.
        Only one run per session is in flight: the next waits until `result()` was taken."""
        self._lock.acquire()
        try:
            if stream is None:
                stream = self._streams.current()
            handle = _handle(stream)
            for info in self._inputs:
                if info.name not in feeds:
                    raise ModelError(f"{self.path.name}: input {info.name!r} was not given")
                array = np.ascontiguousarray(feeds[info.name], dtype=info.dtype)
                if not self._context.set_input_shape(info.name, tuple(array.shape)):
                    raise ModelError(
                        f"{self.path.name}: input {info.name!r} shape {array.shape} is outside the "
                        "engine's optimisation profile; rebuild with a larger --max-faces"
                    )
                buf = self._device_buffer(info.name, array.nbytes)
                self._cuda.copy_htod_async(buf, array, handle)
                self._context.set_tensor_address(info.name, buf.ptr)
            outputs: dict[str, np.ndarray] = {}
            for info in self._outputs:
                shape = tuple(int(d) for d in self._context.get_tensor_shape(info.name))
                if any(d < 0 for d in shape):
                    raise ModelError(f"{self.path.name}: output {info.name!r} has a data-dependent shape")
                nbytes = int(np.prod(shape, dtype=np.int64)) * info.dtype.itemsize
                dev = self._device_buffer(info.name, nbytes)
                self._context.set_tensor_address(info.name, dev.ptr)
                outputs[info.name] = self._host_buffer(info.name, nbytes).array(shape, info.dtype)
            if not self._context.execute_async_v3(handle):
                raise CudaError(f"{self.path.name}: TensorRT execute_async_v3 failed (see the TensorRT log)")
            for info in self._outputs:
                self._cuda.copy_dtoh_async(outputs[info.name], self._device[info.name], handle)
            self._event.record(handle)
            return PendingRun(self._event, outputs, self._lock.release)
        except BaseException:
            self._lock.release()
            raise

    def run(self, feeds: Mapping[str, np.ndarray], stream: "Stream | int | None" = None) -> dict[str, np.ndarray]:
        """Run once and wait for this run's outputs (the host waits on its event only)."""
        return self.run_async(feeds, stream).result()

    def close(self) -> None:
        with self._lock:
            for buf in [*self._device.values(), *self._host.values()]:
                buf.free()
            self._device.clear()
            self._host.clear()
            self._event.close()
            if self._own_streams:
                self._streams.close()


@dataclass
class TrtEnvironment:
    """What TensorRT needs on this machine: the module, its version, the CUDA device."""

    trt: Any
    version: str
    cuda: Cuda
    device: DeviceInfo
    streams: StageStreams | None = None  # shared by every session opened with this environment

    def __post_init__(self) -> None:
        if self.streams is None:
            self.streams = StageStreams(self.cuda)

    @classmethod
    def detect(cls, device: int = 0) -> "TrtEnvironment":
        """TensorRT + cuda-python + driver + GPU, or BackendUnavailable naming the missing one."""
        from streamswap.inference.cuda import open_cuda

        trt = import_tensorrt()
        TrtApi.of(trt)  # refuses versions older than 8.5
        cuda = open_cuda(device)
        return cls(trt, str(trt.__version__), cuda, cuda.info())


def open_trt_session(model_path: Path, settings: Any, cache: EngineCache, *,
                     profile: Sequence[InputProfile], model_sha256: str | None = None,
                     progress: ProgressFn | None = None, env: TrtEnvironment | None = None) -> TrtSession:
    """Load (building when needed and allowed) the engine for `model_path` and open it."""
    env = env or TrtEnvironment.detect()
    request = EngineRequest(Path(model_path), settings.engine_precision, tuple(profile), model_sha256)
    started = time.monotonic()
    if request.precision == "int8":
        _require_calibration(cache, request)
    path = ensure_engine(request, cache, trt_version=env.version, device=env.device,
                         build=settings.build_engines, timeout_s=settings.build_timeout_s,
                         workspace_mb=settings.workspace_mb, progress=progress)
    session = TrtSession(path, env.trt, env.cuda, env.streams)
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

