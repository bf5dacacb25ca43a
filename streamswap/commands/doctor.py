"""`streamswap doctor`: what is installed and usable here, one line each, and what to do."""

from __future__ import annotations

import argparse
import os

from streamswap import __version__

HELP = "check what is installed and usable: FFmpeg/NVENC, ONNX Runtime, CUDA, TensorRT, v4l2loopback, models"
DESCRIPTION = (
    HELP + ". With -c CONFIG it also judges what that config needs (its inference backend "
    "and provider, its models, its input and outputs): exit 1 when it cannot run here."
)
EXAMPLES = (
    "streamswap doctor",
    "streamswap doctor -c configs/desktop-gpu.yaml     # can this machine run that profile?",
    "streamswap doctor --quiet                         # only what is not OK",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="print only what is not OK")


def run(args: argparse.Namespace, ctx) -> int:
    # The checks import the model store and probe libraries: not needed to parse arguments.
    from streamswap.config import CONFIG_ENV
    from streamswap.doctor import FAIL, MISSING, OK, WARN, essentials_ok, run_checks

    config = ctx.config()
    source = ctx.config_path or os.environ.get(CONFIG_ENV) or "built-in defaults"
    checks = run_checks(config, config_path=ctx.config_path or os.environ.get(CONFIG_ENV))
    print(f"streamswap {__version__} doctor (config: {source})")
    width = max(len(c.name) for c in checks)
    for check in checks:
        if args.quiet and check.status == OK:
            continue
        print(f"{check.status:<8} {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != OK:
            print(f"{'':<8} {'':<{width}}  -> {check.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in (FAIL, WARN, MISSING)}
    tail = f"{counts[WARN]} warnings, {counts[MISSING]} optional components missing"
    if essentials_ok(checks):
        what = "this config can run here" if source != "built-in defaults" else "the CPU path can run"
        print(f"essentials OK: {what} ({tail})")
        return 0
    print(f"{counts[FAIL]} essential checks FAILED ({tail}); fix the lines marked FAIL")
    return 1
