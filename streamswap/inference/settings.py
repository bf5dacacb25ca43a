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
    # What runs the graphs: ONNX Runtime (provider above) or our own TensorRT engines.
    backend: str = field(default="ort", metadata=choices("ort", "tensorrt"))
    # When backend: tensorrt cannot be used here (no tensorrt, cuda-python or driver), try
    # these ONNX Runtime providers in order; [] = fail with the reason. "cpu" must be listed
    # explicitly: a user who asked for TensorRT never gets a silent CPU run.
    fallback: list[str] = field(default_factory=list)
    # TensorRT engine precision; None follows `fp16` (fp16 when true, else fp32).
    precision: str | None = field(default=None, metadata=choices("fp32", "fp16", "int8"))
    # Build a missing or stale engine on first use (minutes on Jetson); false = refuse with
    # a message and let `streamswap engines build` do it ahead of time.
    build_engines: bool = True
    build_timeout_s: float = field(default=3600.0, metadata=limits(min=10))
    # Largest batch (faces per call) an engine's optimisation profile accepts.
    max_batch: int = field(default=8, metadata=limits(min=1, max=64))
    # Builder scratch memory.
    workspace_mb: int = field(default=2048, metadata=limits(min=64, max=65536))
    # Face images for INT8 calibration (aligned crops are cut by our own detector).
    calib_dir: str | None = None
    # The CUDA device (GPU index) every stage, engine and ONNX Runtime GPU provider uses.
    device: int = field(default=0, metadata=limits(min=0, max=64))
    # Frame slots in mapped (zero-copy) pinned memory: the GPU reads them in place instead
    # of copying; right where CPU and GPU share memory (Jetson), slower on desktop GPUs.
    mapped_slots: bool = False

    def validate(self, where: str) -> None:
        from streamswap.errors import ConfigError
        from streamswap.safeyaml import shorten

        for i, name in enumerate(self.fallback):
            if name not in ("cuda", "cpu"):
                raise ConfigError(
                    f"{where}.fallback[{i}]: must be cuda or cpu (ONNX Runtime providers), got {shorten(name)}"
                )

    @property
    def engine_precision(self) -> str:
        """The precision engines are built with."""
        return self.precision or ("fp16" if self.fp16 else "fp32")
