"""ONNX → TensorRT engine, run in a child process so a builder crash or hang cannot take
the daemon down.

The parent (`run_build`) writes a `BuildRequest` as JSON and starts
`python -m streamswap.inference.trt_build REQUEST.json`; the child builds and reports
progress as JSON lines on stdout; the parent relays them to a callback (which the service
turns into systemd EXTEND_TIMEOUT_USEC), enforces a timeout and reports crashes.

TensorRT API differences handled here (see `TrtApi`):
- 8.5/8.6: networks need the EXPLICIT_BATCH creation flag; no progress monitor.
- 10.x: EXPLICIT_BATCH is deprecated and not passed; `IProgressMonitor` reports progress;
  fp16/int8 through builder flags.
- 11+: every network is strongly typed and BuilderFlag.FP16/INT8 and INT8 calibrators are
  gone: fp16 means building an fp16 ONNX (converted by `inference.fp16`); int8 needs an
  explicitly quantised (Q/DQ) model and is refused here.
Sources: NVIDIA's "Migrating Python Code from TensorRT 8.x to 10.x" and "Removed Python APIs
and Replacements" (10.x → 11.x) pages, the 8.5.1 API changes, the IProgressMonitor reference
(10.0). Never used here because 10.0 removed them: the binding API, execute_async_v2,
BuilderFlag.STRICT_TYPES, IBuilderConfig.max_workspace_size (we use set_memory_pool_limit).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from streamswap.errors import BackendUnavailable, StreamswapError
from streamswap.logs import kv

log = logging.getLogger(__name__)

MIN_VERSION = (8, 5)


class EngineBuildError(BackendUnavailable):
    """Building a TensorRT engine failed (parser error, builder failure, crash, timeout)."""


@dataclass(frozen=True)
class BuildProgress:
    """One progress report: which model, what phase, how far (None when unknown)."""

    model: str
    phase: str
    message: str
    fraction: float | None
    elapsed_s: float


ProgressFn = Callable[[BuildProgress], None]


@dataclass
class BuildRequest:
    """Everything the child needs; JSON-serialisable so it crosses the process boundary."""

    model: str
    onnx_path: str
    engine_out: str
    precision: str  # fp32 | fp16 | int8
    profile: list[dict[str, Any]]  # InputProfile.to_json() items
    work_dir: str
    timing_cache: str | None = None
    workspace_mb: int = 2048
    calib_data: str | None = None  # .npz with one array per input, batch-major
    calib_cache: str | None = None
    calib_batch_size: int = 8

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "BuildRequest":
        return cls(**json.loads(text))


def parse_version(text: str) -> tuple[int, int, int]:
    parts = []
    for piece in text.split(".")[:3]:
        match = re.match(r"\d*", piece)  # "0b1" -> 0 (pre-release suffixes)
        digits = match.group() if match else ""
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class TrtApi:
    """What the installed TensorRT's Python API offers, derived from its version."""

    version: tuple[int, int, int]

    @classmethod
    def of(cls, trt: Any) -> "TrtApi":
        version = parse_version(str(getattr(trt, "__version__", "0")))
        if version[:2] < MIN_VERSION:
            raise BackendUnavailable(
                f"TensorRT {trt.__version__} is too old: streamswap needs 8.5 or newer "
                "(JetPack 5.1+); upgrade TensorRT or set inference.backend: ort"
            )
        return cls(version)

    @property
    def major(self) -> int:
        return self.version[0]

    @property
    def needs_explicit_batch_flag(self) -> bool:
        return self.major < 10

    @property
    def has_precision_flags(self) -> bool:
        return self.major < 11

    @property
    def always_strongly_typed(self) -> bool:
        return self.major >= 11

    @property
    def has_int8_calibration(self) -> bool:
        return self.major < 11

    @property
    def has_progress_monitor(self) -> bool:
        return self.major >= 10


def import_tensorrt() -> Any:
    """The tensorrt module, or BackendUnavailable saying how to get it."""
    try:
        import tensorrt
    except ImportError as exc:
        from streamswap.install import install_extra

        raise BackendUnavailable(
            f"TensorRT is not installed ({exc}); install it with {install_extra('tensorrt')} "
            "(on Jetson: apt install python3-libnvinfer), or set inference.backend: ort"
        ) from None
    except OSError as exc:  # the Python package is there but libnvinfer cannot be loaded
        raise BackendUnavailable(
            f"TensorRT's libraries cannot be loaded ({exc}); check the TensorRT/CUDA installation "
            "or set inference.backend: ort"
        ) from None
    return tensorrt


# ----------------------------------------------------------------------------------------
# The build itself (runs in the child; importable so tests can drive it with a fake module)


def build_serialized(trt: Any, request: BuildRequest, report: Callable[[str, str, float | None], None]) -> bytes:
    """Build the engine described by `request` with module `trt`; return the serialized plan."""
    api = TrtApi.of(trt)
    precision = request.precision
    if precision == "int8" and not api.has_int8_calibration:
        raise EngineBuildError(
            f"TensorRT {trt.__version__} has no INT8 calibration (removed in 11): INT8 needs an "
            "explicitly quantised (Q/DQ) ONNX model; build with --precision fp16 instead"
        )
    onnx_path = request.onnx_path
    if api.always_strongly_typed and precision == "fp16":
        from streamswap.inference import fp16

        report("convert", "converting the model to fp16 ONNX (TensorRT 11 builds strongly typed)", None)
        onnx_path = str(fp16.convert_file(Path(onnx_path), Path(request.work_dir) / "model-fp16.onnx"))

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if api.needs_explicit_batch_flag:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    report("parse", f"parsing {Path(onnx_path).name}", None)
    if not parser.parse_from_file(onnx_path):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(
            f"{request.model}: TensorRT cannot parse {onnx_path} ({errors or 'no details'}); "
            "this model needs inference.backend: ort"
        )

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request.workspace_mb) << 20)
    if precision in ("fp16", "int8") and api.has_precision_flags:
        config.set_flag(trt.BuilderFlag.FP16)

    profile = builder.create_optimization_profile()
    network_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    for item in request.profile:
        if item["name"] not in network_inputs:
            raise EngineBuildError(
                f"{request.model}: profile names input {item['name']!r} but the network has "
                f"{', '.join(sorted(network_inputs))}"
            )
        profile.set_shape(item["name"], tuple(item["min"]), tuple(item["opt"]), tuple(item["max"]))
    config.add_optimization_profile(profile)

    calibrator = None
    if precision == "int8":
        from streamswap.inference.int8_calib import make_calibrator

        calib_cache = Path(request.calib_cache) if request.calib_cache else None
        if not request.calib_data and not (calib_cache and calib_cache.exists()):
            raise EngineBuildError(f"{request.model}: INT8 needs calibration images; pass --calib-dir with face photos")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = make_calibrator(
            trt, Path(request.calib_data) if request.calib_data else None, request.calib_batch_size, calib_cache
        )
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)

    timing_path = Path(request.timing_cache) if request.timing_cache else None
    if timing_path is not None:
        data = timing_path.read_bytes() if timing_path.exists() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, False)

    monitor = None
    if api.has_progress_monitor:
        monitor = _make_monitor(trt, report)
        config.progress_monitor = monitor

    report("build", f"building {precision} engine (this takes minutes on Jetson)", 0.0)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(
            f"{request.model}: TensorRT could not build an engine (see the TensorRT log above); "
            "try --precision fp32 or inference.backend: ort"
        )
    if timing_path is not None:
        from streamswap.inference.engine_cache import write_atomic

        write_atomic(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    del calibrator, monitor
    report("done", "engine built", 1.0)
    return bytes(memoryview(serialized))


def _make_monitor(trt: Any, report: Callable[[str, str, float | None], None]) -> Any:
    """An IProgressMonitor (TensorRT 10+) forwarding top-level phase progress."""

    # tensorrt ships no type information, so its interface classes are Any to mypy.
    class Monitor(trt.IProgressMonitor):  # type: ignore[misc]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._steps: dict[str, int] = {}
            self._lock = threading.Lock()  # TensorRT calls from several threads

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._steps[phase_name] = max(int(num_steps), 1)
            if not parent_phase:
                report("build", phase_name, 0.0)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                total = self._steps.get(phase_name, 1)
            report("build", phase_name, min((step + 1) / total, 1.0))
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                self._steps.pop(phase_name, None)

    return Monitor()


def _child_main(argv: list[str]) -> int:
    """Child entry point: build the request in argv[0], JSON lines on stdout."""
    out = sys.stdout
    started = time.monotonic()

    def emit(**event: Any) -> None:
        out.write(json.dumps(event) + "\n")
        out.flush()

    def report(phase: str, message: str, fraction: float | None) -> None:
        emit(
            event="progress",
            phase=phase,
            message=message,
            fraction=fraction,
            elapsed_s=round(time.monotonic() - started, 2),
        )

    try:
        request = BuildRequest.from_json(Path(argv[0]).read_text(encoding="utf-8"))
        trt = import_tensorrt()
        plan = build_serialized(trt, request, report)
        Path(request.engine_out).write_bytes(plan)
    except StreamswapError as exc:
        emit(event="error", message=str(exc))
        return 2
    except Exception as exc:  # a builder bug: report it instead of a bare traceback
        emit(event="error", message=f"{type(exc).__name__}: {exc}")
        return 3
    emit(event="done", seconds=round(time.monotonic() - started, 2))
    return 0


# ----------------------------------------------------------------------------------------
# The parent side


@dataclass
class _ChildState:
    error: str | None = None
    done: bool = False
    last: BuildProgress | None = None


def run_build(
    request: BuildRequest,
    *,
    timeout_s: float,
    progress: ProgressFn | None = None,
    heartbeat_s: float = 5.0,
    command: list[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> float:
    """Build in a child process; return the build's wall time. Raises EngineBuildError when
    the child fails, crashes (signal) or runs past `timeout_s` (it is killed then).

    `progress` gets every report the child sends, and a heartbeat every `heartbeat_s`
    while the builder is silent, so a watchdog (systemd) can be kept informed.
    `command` replaces `[python, -m, streamswap.inference.trt_build]` (tests).
    """
    work = Path(request.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    request_path = work / "request.json"
    request_path.write_text(request.to_json(), encoding="utf-8")
    stderr_path = work / "builder.log"
    argv = (command or [sys.executable, "-m", "streamswap.inference.trt_build"]) + [str(request_path)]
    started = time.monotonic()
    state = _ChildState()
    lock = threading.Lock()

    def deliver(item: BuildProgress) -> None:
        if progress is not None:
            try:
                progress(item)
            except Exception:  # a broken callback must not break the build
                log.exception("progress callback failed")

    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )

        def read() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").strip()
                try:
                    event = json.loads(line)
                except ValueError:  # not ours (a library printing to stdout): kept for --debug only
                    if line:
                        log.debug("builder output", extra=kv(model=request.model, line=line))
                    continue
                if event.get("event") == "progress":
                    item = BuildProgress(
                        request.model,
                        str(event.get("phase", "")),
                        str(event.get("message", "")),
                        event.get("fraction"),
                        time.monotonic() - started,
                    )
                    with lock:
                        state.last = item
                    deliver(item)
                elif event.get("event") == "error":
                    with lock:
                        state.error = str(event.get("message"))
                elif event.get("event") == "done":
                    with lock:
                        state.done = True

        reader = threading.Thread(target=read, name="trt-build-reader", daemon=True)
        reader.start()
        deadline = started + timeout_s
        while True:
            try:
                proc.wait(timeout=max(min(heartbeat_s, deadline - time.monotonic()), 0.01))
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    _kill(proc)
                    reader.join(timeout=5)
                    raise EngineBuildError(
                        f"{request.model}: building the engine took longer than {timeout_s:.0f} s "
                        "and was stopped; raise inference.build_timeout_s (Jetson builds take "
                        "minutes) or check the GPU"
                    ) from None
                with lock:
                    last = state.last
                deliver(
                    BuildProgress(
                        request.model,
                        last.phase if last else "build",
                        "still building",
                        last.fraction if last else None,
                        time.monotonic() - started,
                    )
                )
        reader.join(timeout=5)
    seconds = time.monotonic() - started
    if proc.returncode == 0 and state.done and Path(request.engine_out).exists():
        log.info("engine built", extra=kv(model=request.model, seconds=seconds))
        return seconds
    if state.error:
        raise EngineBuildError(state.error)
    tail = _tail(stderr_path)
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name
        raise EngineBuildError(
            f"{request.model}: the TensorRT builder crashed ({name}); the daemon is unaffected. "
            f"Try --precision fp32 or inference.backend: ort. Builder log: {tail}"
        )
    raise EngineBuildError(
        f"{request.model}: the TensorRT builder exited with status {proc.returncode} without "
        f"an engine. Builder log: {tail}"
    )


def _kill(proc: "subprocess.Popen[bytes]") -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _tail(path: Path, limit: int = 400) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return "(none)"
    text = " ⏎ ".join(text.splitlines()[-5:])
    return (text[-limit:] if len(text) > limit else text) or "(empty)"


if __name__ == "__main__":  # pragma: no cover - exercised through run_build
    sys.exit(_child_main(sys.argv[1:]))
