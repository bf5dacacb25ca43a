"""`streamswap bench pipeline`: what the threaded pipeline costs and gains.

1. Throughput: stages of known cost (each measured alone first) run pipelined on a
   lossless source; frames/s vs the slowest stage's stand-alone rate (target ≥ 0.95).
2. Latency: a live source paced at 90 % of the pipelined rate; glass-to-glass p50/p95
   vs the sum of the stage times (target ≤ sum + one frame interval). Then sustained
   overload (1.5× that rate): drops at the capture ring, latency stays bounded.
3. Overhead at 1080p without any model: file → decode → BGR → slot → encode → file
   through the Runtime vs PyAV's own decode+encode loop (target ≤ 8 ms/frame beyond it).

Stage cost is either a fixed wait (`--cost wait`: a stage that does not use the CPU,
like a GPU or network wait, so it isolates the pipeline's own overhead) or a generated
ONNX convolution run by ONNX Runtime (`--cost onnx`, sized like CPU face models). Two
CPU-bound stages compete for the cores: on a 2-core machine each runs slower while the
other one works, whatever the pipeline does. So the throughput ratio is split into its
two factors: how much of the run the bottleneck stage spent working (the pipeline's own
efficiency: it never kept that stage waiting) and how much slower that stage ran inside
the pipeline than alone (CPU contention). The ≥ 0.95 target holds for stages that do not
compete for the CPU (GPU or I/O waits), and for two single-threaded CPU stages on two
otherwise idle cores; other processes on the machine show up as the slowdown factor.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from streamswap.io.base import AudioFormat, FrameMeta, VideoFormat
from streamswap.pipeline.frame_queue import FrameItem
from streamswap.pipeline.pipeline import Pipeline
from streamswap.pipeline.settings import PipelineSettings
from streamswap.pipeline.stage import ErrorPolicy, Stage

HELP = "pipeline throughput vs slowest stage, glass-to-glass latency, 1080p overhead vs PyAV"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cost", choices=("wait", "onnx"), default="wait", help="how stages spend their time (default: wait)"
    )
    parser.add_argument("--detect-ms", type=float, default=20.0, help="detect stage cost (wait mode)")
    parser.add_argument("--swap-ms", type=float, default=30.0, help="swap stage cost (wait mode)")
    parser.add_argument("--frames", type=int, default=300, help="frames per throughput/latency run")
    parser.add_argument("--hd-frames", type=int, default=150, help="frames of the 1080p overhead run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="throughput rounds; the best of each measurement counts (default: 3)"
    )
    parser.add_argument("--skip-hd", action="store_true", help="skip the 1080p overhead part")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")


# --- stages of known cost -------------------------------------------------------------
class _Waiting:
    """A stage that blocks for a fixed time without using the CPU (like a GPU wait)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._event = threading.Event()  # never set: wait() is an exact, CPU-free delay

    def __call__(self, frame: np.ndarray) -> None:
        end = time.perf_counter() + self.seconds
        while (left := end - time.perf_counter()) > 0:
            self._event.wait(left)


class _OnnxConv:
    """A small generated conv net on a 256×256 crop, run by ONNX Runtime on one thread."""

    def __init__(self, channels: int, layers: int) -> None:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        rng = np.random.default_rng(0)
        nodes, inits = [], []
        prev, c_in = "x", 3
        for i in range(layers):
            w = numpy_helper.from_array((rng.standard_normal((channels, c_in, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
            inits.append(w)
            nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
            prev, c_in = f"r{i}", channels
        graph = helper.make_graph(
            nodes,
            "bench",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 256, 256])],
            [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, channels, 256, 256])],
            inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self._input = np.zeros((1, 3, 256, 256), np.float32)

    def __call__(self, frame: np.ndarray) -> None:
        crop = frame[:256, :256]
        self._input[0, :, : crop.shape[0], : crop.shape[1]] = crop.transpose(2, 0, 1)
        self.session.run(None, {"x": self._input})


class _TimedStage:
    """A stage of known cost; adds the seconds spent inside it to `busy[name]`."""

    error_policy = ErrorPolicy()
    pausable = True

    def __init__(self, name: str, fn: Callable[[np.ndarray], None], owner: "_Stages") -> None:
        self.name, self._fn, self._owner = name, fn, owner

    def start(self, video: Any, live: bool) -> None:
        pass

    def process(self, frame: np.ndarray, item: FrameItem) -> None:
        t0 = time.perf_counter()
        self._fn(frame)
        self._owner.busy[self.name] += time.perf_counter() - t0
        self._owner.calls[self.name] += 1
        item.faces = ("face",)

    def describe(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


class _Stages:
    """Detect/swap of known cost; counts the seconds spent inside each (busy time)."""

    def __init__(self, detect: Callable[[np.ndarray], None], swap: Callable[[np.ndarray], None]) -> None:
        self.busy = {"detect": 0.0, "swap": 0.0}
        self.calls = {"detect": 0, "swap": 0}
        self.stages: list[Stage] = [_TimedStage("detect", detect, self), _TimedStage("swap", swap, self)]


def _alone(fn: Callable[[np.ndarray], None], frame: np.ndarray, n: int = 30) -> float:
    """Median seconds of one call, measured alone (after two warm-up calls)."""
    fn(frame)
    fn(frame)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(frame)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- sources / sinks for parts 1 and 2 ---------------------------------------------------
class _MemorySource:
    """Frames from memory: as fast as asked (lossless) or paced at `interval` (live)."""

    name = "bench://"
    counters: dict[str, int] = {}

    def __init__(self, frames: int, interval: float | None, size: tuple[int, int] = (640, 480)) -> None:
        self.frames, self.interval, self.size = frames, interval, size
        self.live = interval is not None
        self._i = 0
        self._t0 = 0.0
        self._wait = threading.Event()

    def open(self) -> VideoFormat:
        self._t0 = time.monotonic()
        fps = Fraction(1 / self.interval).limit_denominator(1000) if self.interval else Fraction(30)
        return VideoFormat(self.size[0], self.size[1], fps, 1 / fps)

    @property
    def audio(self) -> AudioFormat | None:
        return None

    def read_into(self, out: np.ndarray) -> FrameMeta | None:
        if self._i >= self.frames:
            return None
        if self.interval is not None:
            due = self._t0 + self._i * self.interval
            while (left := due - time.monotonic()) > 0:
                self._wait.wait(left)
        out[0, 0, 0] = self._i % 256
        meta = FrameMeta(index=self._i, pts=self._i, capture_time=time.monotonic())
        self._i += 1
        return meta

    def take_audio(self) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class _TimingSink:
    name = "bench-null://"
    counters: dict[str, int] = {}

    def __init__(self) -> None:
        self.times: list[float] = []

    def open(self, video: VideoFormat, audio: AudioFormat | None) -> None:
        pass

    def write(self, frame: np.ndarray, meta: FrameMeta) -> None:
        self.times.append(time.monotonic())

    def write_audio(self, packets: list[Any]) -> None:
        pass

    def close(self) -> None:
        pass


def _run(stages: Sequence[Stage], source: Any, sink: Any, settings: PipelineSettings) -> Pipeline:
    rt = Pipeline(source, stages, [sink], settings=settings)
    rt.start()
    rt.wait()
    return rt


# --- part 3: 1080p file → file overhead ---------------------------------------------------
def _make_hd_clip(path: Path, frames: int) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 1920, 1080, "yuv420p"
        s.options = {"preset": "ultrafast", "g": "30"}
        base = np.zeros((1080, 1920, 3), np.uint8)
        base[:] = np.linspace(0, 255, 1920, dtype=np.uint8)[None, :, None]
        for i in range(frames):
            img = np.roll(base, i * 8, axis=1)
            frame = av.VideoFrame.from_ndarray(img, format="bgr24")
            frame.pts = i
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)


def _pyav_transcode(src: Path, dst: Path, io_settings: Any) -> int:
    """PyAV's own decode → encode loop (no BGR, no pipeline), same encoder settings."""
    import av

    from streamswap.io.avsink import encoder_settings

    n = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = vin.width, vin.height, "yuv420p"
        fps = Fraction(30)
        settings = encoder_settings(
            io_settings, "libx264", VideoFormat(vin.width, vin.height, fps, 1 / fps), network=False
        )
        if settings.bit_rate:
            s.bit_rate = settings.bit_rate
        if settings.threads:
            s.codec_context.thread_count = settings.threads
        s.options = settings.options
        for frame in inp.decode(vin):
            frame.pict_type = av.video.frame.PictureType.NONE
            for p in s.encode(frame):
                out.mux(p)
            n += 1
        for p in s.encode(None):
            out.mux(p)
    return n


def run(args: argparse.Namespace, ctx: Any) -> int:
    config = ctx.config()
    results: dict[str, Any] = {"cost": args.cost, "queue_size": config.pipeline.queue_size}
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    if args.cost == "wait":
        detect_fn: Callable[[np.ndarray], None] = _Waiting(args.detect_ms / 1000)
        swap_fn: Callable[[np.ndarray], None] = _Waiting(args.swap_ms / 1000)
    else:
        # sized like CPU face models: a ~10 ms detector, a ~20 ms generator
        detect_fn, swap_fn = _OnnxConv(16, 4), _OnnxConv(32, 3)
    stages = _Stages(detect_fn, swap_fn)
    base = config.pipeline

    # 0. the pipeline's own cost: pass-through stages, frames from memory, no sink work
    n0 = 2000
    t0 = time.perf_counter()
    _run(
        _Stages(lambda f: None, lambda f: None).stages,
        _MemorySource(n0, None),
        _TimingSink(),
        dataclasses.replace(base, policy="block"),
    )
    results["pipeline_us_per_frame"] = round((time.perf_counter() - t0) / n0 * 1e6, 1)

    # 1. throughput on a lossless source (steady state: skip the first frames). Other
    # processes on the machine only ever slow a measurement down, so each number is the
    # best of `rounds`, measured back to back (stages alone, then pipelined).
    alone_d, alone_s, rounds = [], [], []
    for _ in range(args.rounds):
        alone_d.append(_alone(detect_fn, frame))
        alone_s.append(_alone(swap_fn, frame))
        sink = _TimingSink()
        stages.busy = {"detect": 0.0, "swap": 0.0}
        stages.calls = {"detect": 0, "swap": 0}
        t0 = time.perf_counter()
        _run(stages.stages, _MemorySource(args.frames, None), sink, dataclasses.replace(base, policy="block"))
        wall = time.perf_counter() - t0
        skip = min(20, len(sink.times) // 4)
        fps = (len(sink.times) - 1 - skip) / (sink.times[-1] - sink.times[skip])
        neck = max(stages.busy, key=lambda k: stages.busy[k])
        rounds.append((fps, stages.busy[neck] / wall, neck, stages.busy[neck] / max(stages.calls[neck], 1)))
    t_detect, t_swap = min(alone_d), min(alone_s)
    slowest = max(t_detect, t_swap)
    stage_sum = t_detect + t_swap
    steady, busy, neck, neck_in_run = max(rounds)
    neck_alone = {"detect": t_detect, "swap": t_swap}[neck]
    results["cpus"] = os.cpu_count()
    results["load_average_1min"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    results["rounds"] = args.rounds
    results["stage_alone_ms"] = {"detect": round(t_detect * 1000, 2), "swap": round(t_swap * 1000, 2)}
    results["throughput_fps"] = round(steady, 2)
    results["throughput_fps_rounds"] = [round(r[0], 2) for r in rounds]
    results["slowest_stage_fps"] = round(1 / slowest, 2)
    results["throughput_ratio"] = round(steady * slowest, 3)
    # throughput_ratio ≈ bottleneck_busy × bottleneck_alone_ms / bottleneck_in_run_ms
    results["bottleneck"] = neck
    results["bottleneck_busy"] = round(busy, 3)  # pipeline efficiency (1.0 = never kept waiting)
    results["bottleneck_in_run_ms"] = round(neck_in_run * 1000, 2)
    results["bottleneck_slowdown"] = round(neck_in_run / neck_alone, 3)  # CPU contention

    # 2. latency with a live source paced at 90 % of the pipelined throughput
    interval = 1 / (0.9 * steady)
    rt = _run(
        stages.stages,
        _MemorySource(args.frames, interval),
        _TimingSink(),
        dataclasses.replace(base, policy="drop-oldest"),
    )
    snap = rt.status()
    results["latency_ms_p50"] = snap["latency_ms_p50"]
    results["latency_ms_p95"] = snap["latency_ms_p95"]
    results["latency_bound_ms"] = round((stage_sum + interval) * 1000, 2)
    results["stage_sum_ms"] = round(stage_sum * 1000, 2)
    # The same bound with the stage times measured inside this run (under contention).
    in_run = sum(snap["stage_ms"].get(k, 0.0) for k in ("detect", "swap"))
    results["stage_sum_in_run_ms"] = round(in_run, 2)
    results["latency_bound_in_run_ms"] = round(in_run + interval * 1000, 2)
    results["frame_interval_ms"] = round(interval * 1000, 2)
    results["live_dropped"] = snap["dropped"]

    # 2b. sustained overload: a live source at 1.5× the pipelined throughput. Frames are
    # dropped at the capture ring; latency stays about one frame + detect + two
    # slowest-stage times (the frame being swapped finishes first) instead of growing.
    fast = 1 / (1.5 * steady)
    rt = _run(
        stages.stages, _MemorySource(args.frames, fast), _TimingSink(), dataclasses.replace(base, policy="drop-oldest")
    )
    snap = rt.status()
    ms = snap["stage_ms"]
    results["overload_fps"] = round(1 / fast, 2)
    results["overload_latency_ms_p50"] = snap["latency_ms_p50"]
    results["overload_latency_ms_p95"] = snap["latency_ms_p95"]
    results["overload_dropped"] = snap["dropped"]
    results["overload_bound_in_run_ms"] = round(
        fast * 1000 + ms.get("detect", 0.0) + 2 * max(ms.get("detect", 0.0), ms.get("swap", 0.0)), 2
    )

    # 3. 1080p overhead without a model
    if not args.skip_hd:
        from streamswap.io.uri import open_sink, open_source

        with tempfile.TemporaryDirectory(prefix="streamswap-bench-") as tmp:
            clip = Path(tmp) / "hd.mp4"
            _make_hd_clip(clip, args.hd_frames)
            t0 = time.perf_counter()
            n = _pyav_transcode(clip, Path(tmp) / "pyav.mp4", config.io)
            pyav_s = time.perf_counter() - t0
            source = open_source(str(clip), config.io, live=False)
            file_sink = open_sink(str(Path(tmp) / "pipe.mp4"), config.io)
            t0 = time.perf_counter()
            rt = _run([], source, file_sink, dataclasses.replace(base, policy="block"))
            pipe_s = time.perf_counter() - t0
            results["hd_frames"] = n
            results["hd_pyav_ms_per_frame"] = round(pyav_s / n * 1000, 2)
            results["hd_pipeline_ms_per_frame"] = round(pipe_s / rt.frames_out() * 1000, 2)
            results["hd_overhead_ms_per_frame"] = round((pipe_s / rt.frames_out() - pyav_s / n) * 1000, 2)
            results["hd_pipeline_stage_ms"] = rt.status()["stage_ms"]

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(
        f"machine: {results['cpus']} CPUs, load average {results['load_average_1min']} "
        f"(other processes slow every number down; best of {results['rounds']} rounds)"
    )
    print(f"pipeline alone (pass-through stages, 640x480 from memory): {results['pipeline_us_per_frame']} µs/frame")
    alone = results["stage_alone_ms"]
    print(f"stages alone: detect {alone['detect']} ms, swap {alone['swap']} ms ({args.cost})")
    print(
        f"throughput: {results['throughput_fps']} fps pipelined vs {results['slowest_stage_fps']} fps "
        f"slowest stage alone → ratio {results['throughput_ratio']} (target ≥ 0.95)"
    )
    print(
        f"  = the bottleneck ({results['bottleneck']}) worked {100 * results['bottleneck_busy']:.1f} % of the run "
        f"(pipeline efficiency) × it took {results['bottleneck_in_run_ms']} ms per frame in the pipeline vs "
        f"{alone[results['bottleneck']]} ms alone (slowdown ×{results['bottleneck_slowdown']})"
    )
    if results["bottleneck_slowdown"] > 1.05:
        print(
            "  note: the stages slowed each other down (they compete for the CPU cores), which no "
            "pipeline avoids; the ratio target is for stages that do not compete (GPU or I/O "
            "waits: --cost wait). The pipeline's own share is the first factor."
        )
    print(
        f"latency (live at {1000 / results['frame_interval_ms']:.1f} fps): p50 {results['latency_ms_p50']} ms, "
        f"p95 {results['latency_ms_p95']} ms vs bound {results['latency_bound_ms']} ms "
        f"(sum of stages alone {results['stage_sum_ms']} + one frame {results['frame_interval_ms']}); "
        f"with the stage times of this run: bound {results['latency_bound_in_run_ms']} ms; "
        f"dropped {results['live_dropped']}"
    )
    print(
        f"overload (live at {results['overload_fps']} fps): "
        f"p50 {results['overload_latency_ms_p50']} ms, p95 {results['overload_latency_ms_p95']} ms vs "
        f"one frame + detect + 2 × slowest stage (this run) {results['overload_bound_in_run_ms']} ms; "
        f"dropped {results['overload_dropped']} of {args.frames}"
    )
    if "hd_frames" in results:
        print(
            f"1080p, no model ({results['hd_frames']} frames): pipeline {results['hd_pipeline_ms_per_frame']} ms/frame "
            f"vs PyAV decode+encode {results['hd_pyav_ms_per_frame']} ms/frame → overhead "
            f"{results['hd_overhead_ms_per_frame']} ms/frame (target ≤ 8); "
            f"per-stage ms {results['hd_pipeline_stage_ms']}"
        )
    return 0
