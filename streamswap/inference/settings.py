"""Settings for running ONNX graphs (ONNX Runtime now, TensorRT on the GPU path)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.typedconfig import choices, limits


@dataclass
class InferenceSettings:
    # auto picks TensorRT EP > CUDA EP > CoreML > CPU by what is installed and usable.
    # An explicit choice that is unavailable is an error, never a silent fallback.
    provider: str = field(default="auto", metadata=choices("auto", "tensorrt", "cuda", "coreml", "cpu"))
    fp16: bool = True
    # 0 = ONNX Runtime's default (one per physical core).
    threads: int = field(default=0, metadata=limits(min=0, max=256))
    graph_optimization: str = field(
        default="all", metadata=choices("disable", "basic", "extended", "all")
    )
    # Built engines and timing caches; None = ./engines when writable, else the XDG cache.
    engine_cache_dir: str | None = None
