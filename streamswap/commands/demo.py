"""`streamswap demo`: a real face swap on a moving test video, offline, on the CPU.

The "camera" is insightface's group photo t1.jpg gliding across the frame (io's
test://photo); the identity is scikit-image's astronaut. Both ship inside installed
packages (the `demo` extra), the models are the bundled BlazeFace + FaceMesh with the
mesh swapper, so nothing is downloaded."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

from streamswap.commands.progress import ProgressPrinter
from streamswap.commands.run import build_stages, run_until_done
from streamswap.errors import InputError
from streamswap.install import install_extra

HELP = "make demo.mp4: a real face swap on a moving test video from bundled sample photos"
EXAMPLES = (
    "streamswap demo                          # 10 s, 1280x720, into demo.mp4",
    "streamswap demo -o /tmp/short.mp4 --seconds 3 --size 640x360",
    "streamswap demo -y                       # make demo.mp4 again",
)

log = logging.getLogger(__name__)

_MISSING = "the demo photos come with the 'demo' extra ({what} is not installed); run: {install}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o", "--output", default="demo.mp4", metavar="FILE", help="video file to write (default: demo.mp4)"
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, metavar="N", help="length of the demo video (default: 10)"
    )
    parser.add_argument("--fps", type=int, default=25, help="frame rate (default: 25)")
    parser.add_argument("--size", default="1280x720", metavar="WxH", help="frame size (default: 1280x720)")
    parser.add_argument(
        "-y", "--overwrite", action="store_true", help="replace the output file if it exists (default: refuse)"
    )


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(_MISSING.format(what=package, install=install_extra("demo")))
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise InputError(
            f"{path}: sample photo missing from the installed {package}; "
            f"reinstall it: {install_extra('demo')} --force-reinstall"
        )
    return path


def demo_photos() -> tuple[Path, Path]:
    """(moving "camera" photo, source face): insightface's t1.jpg, skimage's astronaut."""
    camera = _package_file("insightface", "data", "images", "t1.jpg")
    face = _package_file("skimage", "data", "astronaut.png")
    return camera, face


def run(args: argparse.Namespace, ctx: Any) -> int:
    if args.seconds <= 0 or args.fps <= 0:
        raise InputError("--seconds and --fps must be positive")
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        raise InputError(f"--size {args.size!r}: expected WIDTHxHEIGHT, e.g. 640x480") from None
    camera, face = demo_photos()
    frames = max(int(round(args.seconds * args.fps)), 1)
    uri = f"test://photo?path={quote(str(camera))}&width={width}&height={height}&fps={args.fps}&frames={frames}"
    # Not live: every frame is swapped and written, however long the CPU takes.
    from streamswap.wiring import apply_cpu_budget, build_pipeline, plan_endpoints

    more = {"io.existing_output": "overwrite"} if args.overwrite else {}
    config = apply_cpu_budget(ctx.config(source=[str(face)], input=uri, outputs=[args.output], **more))
    endpoints = plan_endpoints(config, live=False)
    stages = build_stages(config)
    runtime = build_pipeline(
        config,
        stages.stages if stages else [],
        source=endpoints.source,
        sinks=endpoints.sinks,
        gpu=stages.gpu if stages else None,
    )
    printer = ProgressPrinter(lambda: frames, label="demo")
    code = run_until_done(runtime, label="demo", printer=printer)
    if code == 0:
        print(
            f"demo: wrote {args.output} ({runtime.frames_out()} frames, "
            f"{runtime.frames_out() / args.fps:.1f} s): {face.name} swapped onto {camera.name}",
            file=sys.stderr,
        )
    return code
