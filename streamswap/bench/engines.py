"""`streamswap bench engines`: TensorRT engine latency per model and precision, and
end-to-end face-swap fps at 720p/1080p through the TensorRT backend. Needs an NVIDIA GPU
with TensorRT; elsewhere it says so in one line and exits non-zero."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamswap.errors import BackendUnavailable, StreamswapError

HELP = "TensorRT engines: per-model latency fp32/fp16/int8 and end-to-end fps at 720p/1080p (GPU)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precisions",
        default="fp32,fp16,int8",
        help="comma-separated (int8 only with --calib-dir); default fp32,fp16,int8",
    )
    parser.add_argument("--calib-dir", metavar="DIR", help="face photos for INT8 calibration")
    parser.add_argument("--runs", type=int, default=50, help="timed runs per model and batch (default 50)")
    parser.add_argument("--frames", type=int, default=120, help="frames per end-to-end run (default 120)")
    parser.add_argument("--batch", type=int, default=4, help="second batch size timed for per-face models")
    parser.add_argument("--skip-e2e", action="store_true", help="only per-model latency")


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.inference.tensorrt import TrtEnvironment

    try:
        env = TrtEnvironment.detect()
    except BackendUnavailable as exc:
        raise BackendUnavailable(f"bench engines needs an NVIDIA GPU with TensorRT, none usable here: {exc}") from None
    config = ctx.config(**({"inference.calib_dir": args.calib_dir} if args.calib_dir else {}))
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if "int8" in precisions and not config.inference.calib_dir:
        print("int8 skipped: no --calib-dir", file=sys.stderr)
        precisions.remove("int8")
    print(f"device: {env.device.name} sm{env.device.compute_capability}, TensorRT {env.version}")
    _per_model(args, config, env, precisions)
    if not args.skip_e2e:
        for precision in [p for p in precisions if p != "int8"]:
            _end_to_end(args, config, precision)
    return 0


def _per_model(args: argparse.Namespace, config: Any, env: Any, precisions: list[str]) -> None:
    from streamswap.commands.engines import _calibration, _targets
    from streamswap.inference.base import input_named
    from streamswap.inference.engine_cache import EngineCache, profile_from_inputs, resolve_cache_dir
    from streamswap.inference.tensorrt import EngineRequest, TrtSession, ensure_engine, onnx_inputs

    cache = EngineCache(resolve_cache_dir(config.inference.engine_cache_dir))
    targets = _targets(argparse.Namespace(models=[], contract=None), config)
    print(f"{'model':24} {'prec':5} {'batch':>5} {'median ms':>10} {'p95 ms':>8}")
    for target in targets:
        detector = target.role == "detector"
        inputs = onnx_inputs(target.path)
        max_batch = config.inference.max_batch
        profile = profile_from_inputs(inputs, max_batch, config.faces.detector.size if detector else None)
        for precision in precisions:
            try:
                with tempfile.TemporaryDirectory() as tmp:
                    calib = None
                    if precision == "int8":
                        calib = _calibration(target, config, Path(tmp))
                    path = ensure_engine(
                        EngineRequest(target.path, precision, profile, target.sha256),
                        cache,
                        trt_version=env.version,
                        device=env.device,
                        timeout_s=config.inference.build_timeout_s,
                        workspace_mb=config.inference.workspace_mb,
                        calib_data=calib,
                    )
            except StreamswapError as exc:
                print(f"{target.name:24} {precision:5} skipped: {exc}")
                continue
            session = TrtSession(path, env.trt, env.cuda, env.gpu.stream("bench"))
            for batch in sorted({1, 1 if detector else min(args.batch, max_batch)}):
                feeds = {
                    p.name: np.random.default_rng(0)
                    .standard_normal((batch, *p.opt[1:]))
                    .astype(input_named(session, p.name).dtype)
                    for p in profile
                }
                for _ in range(5):
                    session.run(feeds)
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    session.run(feeds)
                    times.append((time.perf_counter() - t0) * 1000)
                p95 = sorted(times)[int(0.95 * (len(times) - 1))]
                print(f"{target.name:24} {precision:5} {batch:5d} {statistics.median(times):10.2f} {p95:8.2f}")
            session.close()


def _end_to_end(args: argparse.Namespace, config: Any, precision: str) -> None:
    """detect + swap per frame (the two stages, no I/O) at 720p and 1080p."""
    import cv2

    from streamswap.wiring import build_face_stages

    cfg = replace(config, inference=replace(config.inference, backend="tensorrt", precision=precision))
    processor = build_face_stages(cfg)
    face = _sample_face()
    processor.set_source_images([face])
    for width, height in ((1280, 720), (1920, 1080)):
        frame = np.zeros((height, width, 3), np.uint8)
        side = height // 2
        frame[height // 4 : height // 4 + side, width // 3 : width // 3 + side] = cv2.resize(face, (side, side))
        work = frame.copy()
        for i in range(10):  # warm-up (tracking state, buffers)
            work[...] = frame
            processor.swap.swap(work, processor.detect.detect(work, i))
        t0 = time.perf_counter()
        for i in range(args.frames):
            work[...] = frame
            processor.swap.swap(work, processor.detect.detect(work, i))
        fps = args.frames / (time.perf_counter() - t0)
        print(
            f"end-to-end {precision} {width}x{height}: {fps:.1f} fps (detect+swap, "
            f"detect_every={cfg.faces.tracking.detect_every}, swapper={cfg.faces.swapper.model})"
        )


def _sample_face() -> np.ndarray:
    try:
        import cv2
        import skimage.data

        return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    except ImportError:
        from streamswap.install import install_extra

        raise BackendUnavailable(
            f"bench engines needs scikit-image for its sample face: {install_extra('demo')}"
        ) from None
