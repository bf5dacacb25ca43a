"""`streamswap bench NAME`: run one benchmark and print its numbers."""

from __future__ import annotations

import argparse
import importlib

from streamswap.bench import BENCHES
from streamswap.commands import examples

HELP = (
    "measure speed: per-stage face timings, pipeline throughput/latency, TensorRT engines, "
    "the peer comparison's anchor work"
)
EXAMPLES = (
    "streamswap bench faces",
    "streamswap bench pipeline",
    "streamswap bench engines -c configs/desktop-gpu.yaml",
    "streamswap bench anchor",
)


_EXAMPLES = {
    "faces": ("streamswap bench faces", "streamswap bench faces --repeat 50 --threads 4"),
    "pipeline": ("streamswap bench pipeline", "streamswap bench pipeline --skip-hd --json"),
    "engines": (
        "streamswap bench engines -c configs/desktop-gpu.yaml",
        "streamswap bench engines --precisions fp16,int8 --calib-dir faces/",
    ),
    "anchor": ("streamswap bench anchor", "streamswap bench anchor --rounds 3 --busy-core --workdir anchor/"),
    "triton": (
        "streamswap bench triton --streams 4 -c edge.yaml",
        "streamswap bench triton --url triton:8001 --streams 1 --roundtrip 200 --json",
    ),
    "uploads": ("streamswap bench uploads", "streamswap bench uploads --uploads 20 --settle 10 --json"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, module_name in BENCHES.items():
        module = importlib.import_module(f"streamswap.bench.{module_name}")
        p = sub.add_parser(
            name,
            help=module.HELP,
            description=module.HELP,
            epilog=examples(*_EXAMPLES.get(name, (f"streamswap bench {name}",))),
        )
        module.add_arguments(p)
        p.set_defaults(_bench=module)


def run(args: argparse.Namespace, ctx) -> int:
    return int(args._bench.run(args, ctx) or 0)
