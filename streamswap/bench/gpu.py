"""`streamswap bench gpu`: the GPU frame path measured on the device, through the product's
own pipeline.

What runs is what `streamswap run` builds on a GPU: `wiring.build_face_stages` makes the
device detect and swap stages (the "detect" and "swap" streams, the frame slots in
`DeviceFrames`), and a `Pipeline` drives them with its capture and output threads, frame
queues, tracking and selection. The frame is a still 1080p picture with one or more faces,
written into the pinned slot each frame as a decoder would. Only the networks are
stand-ins (`StandInNetwork`), so the bench runs on any CUDA machine — TensorRT engines
themselves are measured by `bench engines`: a kernel of calibrated device time reads the
network's real input buffer, then the outputs are filled on the device: the detector's
outputs for this frame (recorded once by running the model on the CPU) and the
generator's input passed through as its output. All models are generated (no download).

Printed: per-stage device time from CUDA events recorded around each stage on its stream,
host CPU ms per frame (the process's CPU time ÷ frames), bytes copied host→device and
device→host per frame, and whether the two streams overlap (the share of swap time during
which a detect was also running, from event timestamps).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from streamswap.config import Config
from streamswap.errors import ConfigError, ModelError
from streamswap.inference.base import Session, TensorInfo
from streamswap.inference.cuda import Cuda, DeviceArray, Event, GpuContext, PendingRun, Stream
from streamswap.inference.ort import SessionPool
from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.models.store import ModelStore
from streamswap.pipeline.frame_queue import FrameItem

HELP = "the GPU frame path: device time per stage, host CPU per frame, bytes copied, stream overlap"

DEVICE_STAGES = ("detect", "swap")  # the stages whose networks the stand-ins replace


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=200, help="frames to run (default 200)")
    parser.add_argument("--size", default="1920x1080", help="frame size WxH (default 1920x1080)")
    parser.add_argument("--faces", type=int, default=1, help="faces swapped per frame, 1 to 8 (default 1)")
    parser.add_argument(
        "--network-ms", type=float, default=3.0, help="device time of each stand-in network (default 3 ms)"
    )
    parser.add_argument(
        "--mouth-mask", action="store_true", help="also keep the target's mouth (faces.paste.mouth_mask, on the device)"
    )
    parser.add_argument(
        "--color-correction",
        action="store_true",
        help="also transfer the target's colours in LAB (faces.paste.color_correction, on the device)",
    )
    parser.add_argument(
        "--landmarker",
        action="store_true",
        help="add a FaceMesh landmarker (its crops and network on the detect stream, in detect's time) "
        "and track faces by their mesh between detections (tracking.detect_every 2)",
    )


# --- the stand-in networks ------------------------------------------------------------------
class StandInNetwork:
    """A network's device I/O (`inference.base.DeviceSession`) with a stand-in computation:
    `enqueue` runs a kernel of fixed device time over the real input buffer, then fills each
    output on the device: with the outputs recorded from the real model (the first host
    `run`, which runs `host` on the CPU), or with the input of the same per-row shape passed
    through (a generator). Buffers are allocated once, at the largest shapes."""

    backend = "stand-in"
    device_io = True

    def __init__(
        self, host: Session, cuda: Cuda, stream: Stream, *, max_batch: int, size: int | None, iterations: int
    ) -> None:
        self.host = host
        self.cuda = cuda
        self.stream = stream
        self.iterations = iterations
        self._max = {info.name: _largest(info, max_batch, size) for info in [*host.inputs, *host.outputs]}
        self._dtypes = {info.name: np.dtype(info.dtype) for info in [*host.inputs, *host.outputs]}
        self._buffers = {
            name: cuda.device_buffer(_nbytes(shape, self._dtypes[name])).array(shape, self._dtypes[name])
            for name, shape in self._max.items()
        }
        first = host.inputs[0].name
        self._scratch = cuda.device_buffer(self._buffers[first].nbytes).array(
            (self._buffers[first].nbytes // 4,), np.float32
        )
        self._staging = {
            o.name: cuda.pinned_buffer(self._buffers[o.name].nbytes).array(self._max[o.name], self._dtypes[o.name])
            for o in host.outputs
        }
        self._recorded: dict[str, DeviceArray] = {}
        self._passed = {o.name: _same_rows(o.name, host.inputs, self._max) for o in host.outputs}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._fetched = cuda.event()

    # -- Session ------------------------------------------------------------------------------
    @property
    def inputs(self) -> Sequence[TensorInfo]:
        return self.host.inputs

    @property
    def outputs(self) -> Sequence[TensorInfo]:
        return self.host.outputs

    def run(self, feeds: Mapping[str, np.ndarray], stream: int | None = None) -> dict[str, np.ndarray]:
        """The real model on the CPU (tools call stages with plain images); the first run's
        outputs become what the device run produces."""
        outputs = self.host.run(feeds)
        # A network whose outputs are not its input passed through (a detector) replays these.
        if not self._recorded and any(self._passed.get(name) is None for name in outputs):
            for name, value in outputs.items():
                value = np.ascontiguousarray(value, dtype=self._dtypes[name])
                buffer = self.cuda.device_buffer(max(value.nbytes, 1)).array(value.shape, value.dtype)
                self.cuda.copy_htod_async(buffer.ptr, value, self.stream)
                self._recorded[name] = buffer
            self.stream.synchronize()
        return outputs

    # -- DeviceSession ------------------------------------------------------------------------
    def max_shape(self, name: str) -> tuple[int, ...]:
        return self._max[name]

    def device_input(self, name: str) -> DeviceArray:
        return self._buffers[name]

    def device_output(self, name: str, shape: Sequence[int] | None = None) -> DeviceArray:
        return self._buffers[name].view(tuple(shape) if shape is not None else self._shapes[name])

    def enqueue(self, shapes: Mapping[str, Sequence[int]], stream: Stream | int | None = None) -> None:
        from streamswap.bench.gpu_kernels import spin
        from streamswap.ops import cuda as ops

        run_on = stream if stream is not None else self.stream
        first = self.host.inputs[0].name
        shape = tuple(shapes[first])
        count = int(np.prod(shape))  # float32: the frame path feeds float32 tensors
        src = ops.as_device(self._buffers[first].view((self._buffers[first].nbytes // 4,)))
        dst = ops.as_device(self._scratch)
        with ops._host.launch:  # turns are taken only under the simulator
            spin[max(1, math.ceil(count / 256)), 256, ops.as_stream(run_on)](src, dst, count, self.iterations)
        rows = shape[0] if shape else 1
        for out in self.host.outputs:
            name = out.name
            passed = self._passed[name]
            if name in self._recorded:
                source = self._recorded[name]
                self._shapes[name] = source.shape
                self.cuda.copy_dtod_async(self._buffers[name].ptr, source.ptr, source.nbytes, run_on)
            elif passed is not None:
                out_shape = (rows, *self._max[name][1:])
                self._shapes[name] = out_shape
                nbytes = _nbytes(out_shape, self._dtypes[name])
                self.cuda.copy_dtod_async(self._buffers[name].ptr, self._buffers[passed].ptr, nbytes, run_on)
            else:
                raise ModelError(f"stand-in for {name!r}: run the model once on the host first (nothing recorded)")

    def fetch(self, stream: Stream | int | None = None) -> PendingRun:
        run_on = stream if stream is not None else self.stream
        views = {}
        for name, staging in self._staging.items():
            shape = self._shapes[name]
            view = staging.reshape(-1)[: int(np.prod(shape))].reshape(shape)
            self.cuda.copy_dtoh_async(view, self._buffers[name].ptr, run_on)
            views[name] = view
        self._fetched.record(run_on)
        return PendingRun(self._fetched, views, lambda: None)


def _largest(info: TensorInfo, max_batch: int, size: int | None) -> tuple[int, ...]:
    dims = []
    for axis, dim in enumerate(info.shape):
        if isinstance(dim, int) and dim > 0:
            dims.append(dim)
        elif axis == 0:
            dims.append(max_batch)
        elif size is not None:
            dims.append(size)
        else:
            raise ModelError(f"{info.name}: dynamic dimension {axis} has no size for the stand-in")
    return tuple(dims)


def _nbytes(shape: Sequence[int], dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize


def _same_rows(output: str, inputs: Sequence[TensorInfo], shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """The input whose rows look like `output`'s (a generator: crops in, crops out)."""
    for info in inputs:
        if shapes[info.name][1:] == shapes[output][1:] and len(shapes[info.name]) > 1:
            return info.name
    return None


class StandInPool(SessionPool):
    """The session pool of the bench: the detect and swap stages' networks are stand-ins on
    the GPU context; every other stage (identity preparation) gets the real model on the CPU."""

    def __init__(self, config: Config, gpu: GpuContext, iterations: int) -> None:
        super().__init__(config.inference, gpu=gpu)
        self.iterations = iterations
        self._stand_ins: dict[tuple[Path, str], StandInNetwork] = {}

    def runs_on_gpu(self) -> bool:
        return True

    def get(
        self,
        path: Path,
        *,
        max_batch: int | None = None,
        size: int | None = None,
        stage: str | None = None,
        role: str | None = None,
    ) -> Session:
        host = super().get(path, max_batch=max_batch, size=size, stage=stage, role=role)
        if stage not in DEVICE_STAGES:
            return host
        key = (Path(path), stage)
        if key not in self._stand_ins:
            self._stand_ins[key] = StandInNetwork(
                host,
                self.gpu.cuda,
                self.gpu.stream(stage),
                max_batch=max_batch or self.settings.max_batch,
                size=size,
                iterations=self.iterations,
            )
        return self._stand_ins[key]


# --- the run --------------------------------------------------------------------------------
@dataclass
class StageTimes:
    """Start/end timing events of one stage per frame on its stream, read after the run."""

    starts: list[Event] = field(default_factory=list)
    ends: list[Event] = field(default_factory=list)


class TimedStage:
    """A pipeline stage with CUDA timing events recorded on its stream around each frame."""

    def __init__(self, inner: Any, cuda: Cuda, frames: int) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.error_policy = inner.error_policy
        self.pausable: bool = inner.pausable
        self.stream: Stream = inner.stream
        self.times = StageTimes()
        self._events = [(cuda.event(timing=True), cuda.event(timing=True)) for _ in range(frames)]

    def start(self, video: VideoFormat, live: bool) -> None:
        self.inner.start(video, live)

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        start, end = self._events[len(self.times.starts) % len(self._events)]
        start.record(self.stream)
        self.inner.process(frame, item)
        end.record(self.stream)
        self.times.starts.append(start)
        self.times.ends.append(end)

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = self.inner.describe()
        return described

    def close(self) -> None:
        self.inner.close()


class StillSource:
    """The same frame `frames` times, written into each slot as a decoder would (lossless)."""

    name = "bench://still"
    live = False  # lossless: every frame is swapped, at the speed the stages allow

    def __init__(self, frame: np.ndarray, frames: int) -> None:
        self.frame = frame
        self.frames = frames
        self.counters: dict[str, int] = {}
        self._index = 0

    def open(self) -> VideoFormat:
        return VideoFormat(self.frame.shape[1], self.frame.shape[0], Fraction(30), Fraction(1, 30))

    @property
    def audio(self) -> AudioFormat | None:
        return None

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        if self._index >= self.frames:
            return None
        np.copyto(out, self.frame)
        meta = FrameMeta(index=self._index, pts=self._index, capture_time=time.monotonic())
        self._index += 1
        return meta

    def take_audio(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class BenchScene:
    """What the bench swaps: the frame, the source face photo, and the config naming the face
    models by path and contract (as a config names a user's own files)."""

    frame: np.ndarray
    source_face: np.ndarray
    config: Config


@dataclass
class GpuFrameReport:
    frames: int
    faces: int
    detect_ms: float
    swap_ms: float
    host_cpu_ms: float
    h2d_bytes: float
    d2h_bytes: float
    overlap: float
    wall_s: float


def run_frame_path(
    scene: BenchScene, cuda: Cuda, *, frames: int, iterations: int, store: ModelStore | None = None
) -> GpuFrameReport:
    """Run `frames` frames of `scene` through the face stages and pipeline `streamswap run`
    builds on a GPU, with stand-in networks of `iterations` kernel iterations (`store`: the
    model store resolving the scene's files, default the configured one)."""
    from streamswap.faces.device import DeviceDetectStage, DeviceSwapStage
    from streamswap.io.display import NullSink
    from streamswap.pipeline.pipeline import Pipeline
    from streamswap.wiring import build_face_stages

    config = scene.config
    gpu = GpuContext(cuda)
    stages = build_face_stages(config, store, pool=StandInPool(config, gpu, iterations))
    try:
        if not isinstance(stages.detect, DeviceDetectStage) or not isinstance(stages.swap, DeviceSwapStage):
            raise ConfigError("the GPU frame path is off for this configuration (the log says why)")
        stages.set_source_images([scene.source_face])  # on the identity worker, real models on the CPU
        faces = len(stages.detect_still(scene.frame))  # also records the detector's outputs for this frame
        if faces == 0:
            raise ModelError("the bench frame has no face for the detector")
        timed = [TimedStage(stage, cuda, frames) for stage in stages.stages]
        sink = NullSink()
        pipeline = Pipeline(
            StillSource(scene.frame, frames),
            timed,
            [sink],
            settings=config.pipeline,
            allocator=stages.detect.frames,
            thread_init=stages.detect.frames.bind_thread,
        )
        frames_path = stages.detect.frames
        cpu0, wall0 = time.process_time(), time.perf_counter()
        pipeline.start()
        if not pipeline.wait(None):
            raise RuntimeError("the bench pipeline did not finish")
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        pipeline.stop()
        done = sink.counters["frames"]
        if done != frames:
            raise RuntimeError(f"the bench pipeline wrote {done} of {frames} frames (see the log)")
        detect, swap = timed
        base = detect.times.starts[0]
        intervals = {
            t.name: [(s.elapsed_ms(base), e.elapsed_ms(base)) for s, e in zip(t.times.starts, t.times.ends)]
            for t in timed
        }
        return GpuFrameReport(
            frames=frames,
            faces=min(faces, config.faces.detector.max_faces),
            detect_ms=float(np.median([e - s for s, e in intervals[detect.name]])),
            swap_ms=float(np.median([e - s for s, e in intervals[swap.name]])),
            host_cpu_ms=1000.0 * cpu / frames,
            h2d_bytes=frames_path.bytes_up / frames,
            d2h_bytes=frames_path.bytes_down / frames,
            overlap=_overlap(intervals[swap.name], intervals[detect.name]),
            wall_s=wall,
        )
    finally:
        stages.close()
        gpu.close()


def _overlap(swaps: list[tuple[float, float]], detects: list[tuple[float, float]]) -> float:
    """Share of the total swap time during which some detect interval was also running."""
    total = sum(e - s for s, e in swaps)
    if total <= 0:
        return 0.0
    shared = 0.0
    for s0, s1 in swaps:
        for d0, d1 in detects:
            shared += max(0.0, min(s1, d1) - max(s0, d0))
    return min(1.0, shared / total)


def _iterations_for(cuda: Any, network_ms: float) -> int:
    """Calibrate the stand-in network to about `network_ms` of device time on a 640² input."""
    from streamswap.bench.gpu_kernels import spin
    from streamswap.ops import cuda as ops

    count = 3 * 640 * 640
    src = ops.as_device(cuda.device_buffer(count * 4).array((count,), np.float32))
    dst = ops.as_device(cuda.device_buffer(count * 4).array((count,), np.float32))
    stream = cuda.stream()
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    iterations = 200
    grid = math.ceil(count / 256)
    spin[grid, 256, ops.as_stream(stream)](src, dst, count, iterations)  # compile
    start.record(stream)
    spin[grid, 256, ops.as_stream(stream)](src, dst, count, iterations)
    end.record(stream)
    end.synchronize()
    per = max(end.elapsed_ms(start), 1e-3) / iterations
    return max(1, int(network_ms / per))


def scene_config(overrides: dict[str, Any]) -> Config:
    """The built-in defaults with `overrides`, without a landmarker unless they name one (as
    configs/desktop-gpu.yaml: a neural swapper needs only the detector's 5 points)."""
    from streamswap.config import load_config

    config = load_config(None, overrides)
    if "faces.landmarker.model" in overrides:
        return config
    faces = config.faces
    return dataclasses.replace(
        config, faces=dataclasses.replace(faces, landmarker=dataclasses.replace(faces.landmarker, model=None))
    )


def default_scene(
    workdir: Path, width: int, height: int, faces: int, paste: Sequence[str] = (), landmarker: bool = False
) -> BenchScene:
    """`faces` cartoon faces in a row across a `width`×`height` frame, an SCRFD-shaped detector
    that finds exactly those (its outputs are constants), an inswapper-shaped generator and
    an ArcFace-shaped recognizer: generated files, no download and no photo needed. `paste`
    names the faces.paste options to turn on (mouth_mask, color_correction). With
    `landmarker`, a FaceMesh-shaped landmarker too, and the detector every 2nd frame (faces
    tracked by their mesh in between)."""
    from streamswap.bench import synthetic
    from streamswap.io.testsrc import draw_face
    from streamswap.ops.cpu import letterbox_geometry

    size = 640
    rng = np.random.default_rng(0)
    frame = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)  # texture, not a flat colour
    radius = int(min(height / 8, width / (faces + 1) * 0.4))
    scale = letterbox_geometry(height, width, size)[1] / width  # frame → detector input pixels
    boxes = []
    for i in range(faces):
        cx, cy = int(width * (i + 1) / (faces + 1)), height // 2
        draw_face(frame, cx, cy, radius)
        boxes.append(((cx - radius) * scale, (cy - radius) * scale, (cx + radius) * scale, (cy + radius) * scale))
    detector = synthetic.make_fixed_scrfd_model(workdir / "scrfd_fixed.onnx", boxes, size)
    swapper = synthetic.make_swapper_model(workdir / "inswapper_like.onnx", batch_dynamic=True)
    recognizer = synthetic.make_arcface_model(workdir / "arcface_like.onnx")
    overrides = {
        "faces.detector.model": str(detector),
        "faces.detector.contract": "scrfd",
        "faces.detector.size": size,
        "faces.detector.max_faces": faces,
        "faces.recognizer.model": str(recognizer),
        "faces.recognizer.contract": "arcface",
        "faces.swapper.model": str(swapper),
        "faces.swapper.contract": "inswapper",
        "inference.max_batch": faces,
        "models.dir": str(workdir),
    }
    overrides.update({f"faces.paste.{name}": True for name in paste})
    if landmarker:
        overrides["faces.landmarker.model"] = str(synthetic.make_facemesh_model(workdir / "facemesh_like.onnx"))
        overrides["faces.landmarker.contract"] = "facemesh"
        overrides["faces.tracking.detect_every"] = 2
    return BenchScene(frame, frame.copy(), scene_config(overrides))


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.inference.cuda import open_cuda

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size: expected WxH (e.g. 1920x1080), got {args.size!r}") from None
    if not 1 <= args.faces <= 8:
        raise ConfigError(f"--faces: 1 to 8, got {args.faces}")
    cuda = open_cuda(0)  # BackendUnavailable: one line saying what is missing
    iterations = _iterations_for(cuda, args.network_ms)
    with tempfile.TemporaryDirectory(prefix="streamswap-bench-gpu-") as tmp:
        paste = [name for name in ("mouth_mask", "color_correction") if getattr(args, name)]
        scene = default_scene(Path(tmp), width, height, args.faces, paste, landmarker=args.landmarker)
        report = run_frame_path(scene, cuda, frames=args.frames, iterations=iterations)
    print(
        f"GPU frame path on {cuda.info().name}, {width}x{height}, {report.faces} face(s), {report.frames} frames "
        f"through the pipeline `streamswap run` builds, stand-in networks of ~{args.network_ms:g} ms each"
        + (f", paste with {' and '.join(paste)}" if paste else "")
    )
    landmarks = " incl. FaceMesh; detector every 2nd frame" if args.landmarker else ""
    print(
        f"  device time per frame: detect {report.detect_ms:.2f} ms{landmarks}, swap {report.swap_ms:.2f} ms (events)"
    )
    print(f"  host CPU per frame: {report.host_cpu_ms:.2f} ms (target ≤ 6 ms at 1080p, one face)")
    frame_bytes = width * height * 3
    print(
        f"  copied per frame: host→device {report.h2d_bytes / 1e6:.2f} MB ({report.h2d_bytes / frame_bytes:.2f} "
        f"frames), device→host {report.d2h_bytes / 1e6:.2f} MB ({report.d2h_bytes / frame_bytes:.2f} frames)"
    )
    print(
        f"  streams overlap: {100 * report.overlap:.0f}% of swap time had a detect running "
        f"({'overlapping' if report.overlap > 0.2 else 'NOT overlapping'})"
    )
    print(f"  throughput: {report.frames / report.wall_s:.1f} fps")
    return 0
