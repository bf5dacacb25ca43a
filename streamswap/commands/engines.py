"""`streamswap engines build|list|clear`: TensorRT engines built ahead of time and cached."""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamswap.commands import examples
from streamswap.errors import BackendUnavailable, InputError, ModelError, StreamswapError

HELP = "build, list or clear the cached TensorRT engines (GPU fast path)"
EXAMPLES = (
    "streamswap engines build -c configs/desktop-gpu.yaml     # before the first live run",
    "streamswap engines list",
    "streamswap engines clear --keep-caches",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="engines_command", metavar="ACTION", required=True)
    build = sub.add_parser(
        "build",
        help="build engines for the configured (or named) models",
        description="Build TensorRT engines ahead of time (minutes on Jetson), "
        "for this GPU and TensorRT version, into the engine cache.",
        epilog=examples(
            "streamswap engines build -c configs/jetson-orin.yaml",
            "streamswap engines build inswapper_128 --precision fp16",
            "streamswap engines build --precision int8 --calib-dir faces/",
        ),
    )
    build.add_argument(
        "models", nargs="*", metavar="MODEL", help="catalogue names or ONNX paths (default: the models the config uses)"
    )
    build.add_argument(
        "--precision",
        choices=("fp16", "fp32", "int8"),
        help="engine precision (default: inference.precision, else fp16 when inference.fp16)",
    )
    build.add_argument(
        "--max-faces",
        type=int,
        metavar="N",
        help="largest face batch per call (default: inference.max_batch; keep it equal "
        "to the config the service runs, or the engine is rebuilt there)",
    )
    build.add_argument(
        "--calib-dir", metavar="DIR", help="face photos for INT8 calibration (default: inference.calib_dir)"
    )
    build.add_argument("--contract", help="I/O contract of a MODEL given as a path (e.g. arcface)")
    build.add_argument("--force", action="store_true", help="rebuild even when a valid engine is cached")
    sub.add_parser(
        "list",
        help="show cached engines and whether each matches this machine",
        description="List the engine cache: each engine's model, precision, TensorRT "
        "version and GPU, and whether it can run on this machine.",
        epilog=examples("streamswap engines list", "streamswap engines list -c configs/desktop-gpu.yaml"),
    )
    clear = sub.add_parser(
        "clear",
        help="remove cached engines (and timing/calibration caches)",
        description="Delete the cached engines (rebuilt on next use or by "
        "`streamswap engines build`), and the timing/calibration caches unless "
        "--keep-caches.",
        epilog=examples("streamswap engines clear", "streamswap engines clear --keep-caches"),
    )
    clear.add_argument("--keep-caches", action="store_true", help="keep timing and calibration caches")


def run(args: argparse.Namespace, ctx: Any) -> int:
    from streamswap.inference.engine_cache import EngineCache, resolve_cache_dir

    overrides: dict[str, Any] = {}
    if getattr(args, "precision", None):
        overrides["inference.precision"] = args.precision
    if getattr(args, "max_faces", None) is not None:
        if args.max_faces < 1:  # not silently "the default": 0 is a typo the user should see
            raise InputError(f"--max-faces {args.max_faces}: give the largest number of faces per frame (1 or more)")
        overrides["inference.max_batch"] = args.max_faces
    if getattr(args, "calib_dir", None):
        overrides["inference.calib_dir"] = args.calib_dir
    config = ctx.config(**overrides)
    cache = EngineCache(resolve_cache_dir(config.inference.engine_cache_dir))
    if args.engines_command == "list":
        return _list(cache)
    if args.engines_command == "clear":
        removed = cache.clear(keep_caches=args.keep_caches)
        print(f"removed {len(removed)} file(s) from {cache.dir}")
        return 0
    return _build(args, config, cache)


def _list(cache: Any) -> int:
    from streamswap.inference.cuda import open_cuda
    from streamswap.inference.engine_cache import machine_match
    from streamswap.inference.trt_build import import_tensorrt

    try:
        trt_version: str | None = str(import_tensorrt().__version__)
        trt_note = f"TensorRT {trt_version}"
    except BackendUnavailable:
        trt_version, trt_note = None, "no TensorRT"
    gpu_name: str | None = None
    cc: str | None = None
    try:
        device = open_cuda().info()
        gpu_note = f"{device.name} (sm{device.compute_capability})"
        gpu_name, cc = device.name, device.compute_capability
    except BackendUnavailable as exc:
        gpu_note = f"no GPU ({str(exc).split(';')[0]})"
    print(f"engine cache: {cache.dir}")
    print(f"this machine: {trt_note}, {gpu_note}")
    entries = cache.entries()
    if not entries:
        print("no engines cached (build them with `streamswap engines build`)")
    for entry in entries:
        if entry.key is None:
            print(f"  {entry.engine.name}: unusable ({entry.problem})")
            continue
        ok, why = machine_match(entry.key, trt_version, gpu_name, cc)
        size_mb = entry.engine.stat().st_size / 1e6
        print(
            f"  {'✓' if ok else '✗'} {entry.key.model} {entry.key.precision} "
            f"TensorRT {entry.key.trt_version} {entry.key.gpu_name} sm{entry.key.compute_capability} "
            f"{size_mb:.1f} MB — {why}"
        )
        print(f"      {entry.engine.name}")
    for path in cache.other_files():
        print(f"  cache file: {path.name}")
    return 0


@dataclass
class _Target:
    name: str
    path: Path
    sha256: str
    role: str
    contract: str


def _wanted(args: argparse.Namespace, config: Any, store: Any) -> tuple[list[tuple[str, str | None]], list[str]]:
    """The (model, contract) pairs to build engines for: the named ones, else those the
    running pipeline opens; and the built-in entries among them (the mesh swapper), which
    have no model file and run without an engine."""
    from streamswap.models.store import swapper_needs_recognizer

    faces = config.faces
    wanted: list[tuple[str, str | None]] = []
    if args.models:
        wanted = [(m, args.contract) for m in args.models]
    else:
        wanted.append((faces.detector.model, faces.detector.contract))
        if faces.landmarker.model:
            wanted.append((faces.landmarker.model, faces.landmarker.contract))
        if swapper_needs_recognizer(faces, store.catalogue):  # the recognizer serves the neural swappers only
            wanted.append((faces.recognizer.model, faces.recognizer.contract))
        wanted.append((faces.swapper.model, faces.swapper.contract))
        spec = store.catalogue.get(faces.swapper.model)
        if spec is not None and spec.companion:
            wanted.append((spec.companion, None))
        if faces.enhancer:
            wanted.append((faces.enhancer, None))
    builtin = [m for m, _ in wanted if m in store.catalogue and store.catalogue[m].builtin]
    return [(m, c) for m, c in wanted if m not in builtin], builtin


def _targets(
    args: argparse.Namespace, config: Any, wanted: list[tuple[str, str | None]] | None = None
) -> list[_Target]:
    from streamswap.models.store import ModelStore

    store = ModelStore(config.models)
    out = []
    for model, contract in _wanted(args, config, store)[0] if wanted is None else wanted:
        resolved = store.resolve(model, contract)
        if resolved.path is None:  # _wanted leaves the built-in entries out
            raise ModelError(f"{model} is built in (code, no model file): it has no TensorRT engine")
        out.append(
            _Target(
                resolved.spec.name if model in store.catalogue else Path(model).stem,
                resolved.path,
                resolved.sha256,
                resolved.spec.role,
                resolved.spec.contract,
            )
        )
    return out


def _build(args: argparse.Namespace, config: Any, cache: Any) -> int:
    from streamswap.inference.engine_cache import profile_from_inputs
    from streamswap.inference.tensorrt import EngineRequest, TrtEnvironment, ensure_engine, onnx_inputs
    from streamswap.models.store import ModelStore

    wanted, builtin = _wanted(args, config, ModelStore(config.models))
    skipped = f"; {', '.join(builtin)}: built in (code, no model file), no engine" if builtin else ""
    if not wanted:
        print(f"nothing to build{skipped}", file=sys.stderr)
        return 0
    env = TrtEnvironment.detect()  # BackendUnavailable: one line naming what is missing
    settings = config.inference
    precision = settings.engine_precision
    targets = _targets(args, config, wanted)
    print(
        f"building {len(targets)} engine(s) for TensorRT {env.version} on {env.device.name} "
        f"(sm{env.device.compute_capability}), {precision}, into {cache.dir}{skipped}",
        file=sys.stderr,
    )
    failures = 0
    for target in targets:
        # The same profile the running pipeline asks for (SessionPool.get): batch
        # 1..inference.max_batch, a detector's dynamic sides at faces.detector.size.
        detector = target.role == "detector"
        profile = profile_from_inputs(
            onnx_inputs(target.path), settings.max_batch, config.faces.detector.size if detector else None
        )
        request = EngineRequest(target.path, precision, profile, target.sha256)
        try:
            with tempfile.TemporaryDirectory(prefix="streamswap-calib-") as tmp:
                calib = _calibration(target, config, Path(tmp)) if precision == "int8" else None
                path = ensure_engine(
                    request,
                    cache,
                    trt_version=env.version,
                    device=env.device,
                    build=True,
                    timeout_s=settings.build_timeout_s,
                    workspace_mb=settings.workspace_mb,
                    calib_data=calib,
                    progress=_print_progress,
                    force=args.force,
                )
            print(f"{target.name}: {path}")
        except StreamswapError as exc:
            failures += 1
            print(f"{target.name}: failed: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _calibration(target: _Target, config: Any, tmp: Path) -> Path:
    """Preprocessed calibration inputs for `target`, saved for the builder child."""
    from dataclasses import replace

    from streamswap.faces.calibration import calibration_inputs, load_images
    from streamswap.faces.detectors import make_detector
    from streamswap.inference.int8_calib import save_calibration_data
    from streamswap.inference.ort import SessionPool
    from streamswap.inference.tensorrt import onnx_inputs
    from streamswap.models.store import ModelStore

    folder = config.inference.calib_dir
    if not folder:
        raise BackendUnavailable("INT8 needs calibration photos: pass --calib-dir DIR (or set inference.calib_dir)")
    images = load_images(Path(folder).expanduser())
    (input_name, dims), *_ = onnx_inputs(target.path)
    detect = None
    if target.role != "detector":
        store = ModelStore(config.models)
        det = store.resolve(config.faces.detector.model, config.faces.detector.contract)
        pool = SessionPool(replace(config.inference, backend="ort"))
        detector = make_detector(det.spec.contract, pool.get(det.file("faces.detector.model")), config.faces.detector)
        detect = detector.detect
        size = dims[-1] if isinstance(dims[-1], int) else 112
    else:
        size = dims[-1] if isinstance(dims[-1], int) else config.faces.detector.size
    arrays = calibration_inputs(target.contract, input_name, images, detect, size)
    return save_calibration_data(arrays, tmp / "calibration.npz")


def _print_progress(item: Any) -> None:
    done = f" {item.fraction * 100:.0f}%" if item.fraction is not None else ""
    print(f"{item.model}: {item.phase}{done} — {item.message} ({item.elapsed_s:.0f} s)", file=sys.stderr)
