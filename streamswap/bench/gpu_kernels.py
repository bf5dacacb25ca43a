"""The fixed-cost stand-in network of `bench gpu` (a module of its own: numba is imported
only when that benchmark runs, not by `streamswap bench --help`)."""

from __future__ import annotations

import numpy as np
from numba import cuda


@cuda.jit
def spin(buf, iterations):
    """Each thread does `iterations` dependent multiply-adds on its element."""
    i = cuda.grid(1)
    if i < buf.shape[0]:
        v = buf[i]
        for _ in range(iterations):
            v = v * np.float32(0.999) + np.float32(0.001)
        buf[i] = v
