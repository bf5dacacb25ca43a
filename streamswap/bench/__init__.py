"""Benchmarks behind `streamswap bench NAME`: speed and memory targets are measured here,
never asserted in unit tests. Each module has HELP, add_arguments(parser), run(args, ctx)."""

# name -> module under streamswap.bench, in `streamswap bench --help` order.
BENCHES: dict[str, str] = {
    "faces": "faces",
    "pipeline": "pipeline",
    "engines": "engines",
    "anchor": "anchor",
    "gpu": "gpu",
    "triton": "triton",
    "uploads": "uploads",
}
