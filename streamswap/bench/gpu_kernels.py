"""The fixed-cost stand-in network of `bench gpu` (a module of its own: numba is imported
only when that benchmark runs, not by `streamswap bench --help`)."""

from __future__ import annotations

import numpy as np
from numba import cuda


@cuda.jit
def spin(src, dst, count, iterations):
    """Each thread reads one element of the network's input, does `iterations` dependent
    multiply-adds on it and writes the result to scratch memory (the input stays as it was)."""
    i = cuda.grid(1)
    if i < count:
        v = src[i]
        for _ in range(iterations):
            v = v * np.float32(0.999) + np.float32(0.001)
        dst[i] = v
