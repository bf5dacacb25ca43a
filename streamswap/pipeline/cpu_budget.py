"""The CPU thread budget the stages share: how many threads each thread pool may start.

Every stage of the pipeline runs on its own thread, and several of them start thread pools
of their own: ONNX Runtime (intra-op workers per session), OpenCV (parallel_for inside
resize/warp), the H.264 encoder and decoder. Left at their defaults, each pool takes one
thread per core, so on a 2-core machine the detect and swap sessions alone run four
workers on two cores, and ORT's workers spin while they wait for work another pool's
thread is doing. Measured on the 2-core machine with the anchor models (`streamswap bench
anchor` prints the same comparison): detect and swap running at once took 31 / 31 ms per
call with one thread each (29 / 33 with two non-spinning threads each, for 7–14 % more CPU
per frame in whole runs), and 61 / 59 ms with ORT's default of one spinning thread per core
each — oversubscription turns contention into collapse.

So the cores are shared out: the compute stages, those that run models (or the mesh
swapper's OpenCV work) at the same time — detect and swap — get an equal share each for their sessions' intra-op threads (and OpenCV's pool, used on
the same stage threads); a quarter of the cores is kept for decoding and encoding once
there are four or more. Spinning is off unless asked for: it only pays when a session has
cores nobody else wants. Each number can be overridden in the config.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuBudget:
    """Threads per pool for one pipeline (all ≥ 1)."""

    cores: int  # usable by this process (affinity / container limits)
    compute_stages: int  # stages that run models / heavy OpenCV work at the same time
    intra_op_threads: int  # per ONNX Runtime session
    spinning: bool  # ORT workers busy-wait between tasks
    opencv_threads: int  # cv2.setNumThreads (process-wide)
    encoder_threads: int  # per H.264 encoder (libx264)
    decoder_threads: int  # per decoder

    def describe(self) -> str:
        return (
            f"{self.cores} cores, {self.compute_stages} compute stages: ORT {self.intra_op_threads} "
            f"thread(s)/session, spinning {'on' if self.spinning else 'off'}, OpenCV "
            f"{self.opencv_threads}, encoder {self.encoder_threads}, decoder {self.decoder_threads}"
        )


def usable_cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_limit()
    if quota is not None:
        cores = min(cores, quota)
    return max(1, cores)


def _cgroup_cpu_limit(path: str = "/sys/fs/cgroup/cpu.max") -> int | None:
    """A cgroup v2 CPU quota as whole cores (rounded up), None when unlimited or unknown."""
    try:
        with open(path, encoding="ascii") as f:
            quota, period = f.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, -(-int(quota) // int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def plan_cpu_budget(
    cores: int,
    compute_stages: int,
    *,
    intra_op_threads: int = 0,
    spinning: bool = False,
    encoder_threads: int = 0,
    decoder_threads: int = 0,
) -> CpuBudget:
    """Share `cores` out among `compute_stages` stages running models at once (0 = none: a
    pass-through pipeline). A non-zero thread count is a config override and is kept."""
    cores = max(1, cores)
    io_reserve = cores // 4  # 0 on 2–3 cores: decode/encode then share with the models
    share = max(1, (cores - io_reserve) // max(1, compute_stages))
    io_threads = max(1, io_reserve) if compute_stages else cores
    return CpuBudget(
        cores=cores,
        compute_stages=compute_stages,
        intra_op_threads=intra_op_threads or share,
        spinning=spinning,
        opencv_threads=share,
        encoder_threads=encoder_threads or io_threads,
        decoder_threads=decoder_threads or io_threads,
    )
