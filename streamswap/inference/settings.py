"""Settings for running ONNX graphs (ONNX Runtime now, TensorRT on the GPU path)."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamswap.typedconfig import choices, limits


@dataclass
class TritonModelRef:
    """Which model the server runs for one role."""

    # "" = the name `streamswap triton export` gives the configured model file.
    name: str = ""
    # "" = the server's choice (its version policy, latest by default).
    version: str = ""


TRITON_ROLES = (
    "detector",
    "landmarker",
    "recognizer",
    "swapper",
    "embedding_converter",
    "enhancer",
    "occluder",
    "parser",
)


@dataclass
class TritonSettings:
    """A Triton Inference Server that runs the models (inference.backend: triton)."""

    # host:port of the server: gRPC listens on 8001, HTTP on 8000 by default.
    url: str = "localhost:8001"
    protocol: str = field(default="grpc", metadata=choices("grpc", "http"))
    # One request, seconds; a frame waits at most timeout × (retries + 1) plus back-off.
    timeout_s: float = field(default=1.0, metadata=limits(min=0.01, max=600))
    # Retries of a request the server refused (unavailable, overloaded, timed out).
    retries: int = field(default=2, metadata=limits(min=0, max=10))
    # First pause before a retry, doubled each time. After the last retry the server is
    # taken as down: calls fail at once (frames pass unswapped) and the server is tried
    # again after `backoff_s` × 2ⁿ, at most `max_backoff_s`, until it answers.
    backoff_s: float = field(default=0.05, metadata=limits(min=0, max=60))
    max_backoff_s: float = field(default=2.0, metadata=limits(min=0, max=600))
    # TLS: gRPC takes the three PEM files below; HTTPS checks the server with `root_certificates`.
    ssl: bool = False
    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None
    # Extra request headers (e.g. an auth token for a gateway in front of the server).
    headers: dict[str, str] = field(default_factory=dict)
    # Tensors through system shared memory instead of the socket when the server is on
    # this host. auto: used when registering a region works (checked at start); on: required.
    shared_memory: str = field(default="auto", metadata=choices("auto", "on", "off"))
    # At start, how long to wait for the server and its models to be ready.
    wait_ready_s: float = field(default=30.0, metadata=limits(min=0, max=3600))
    # Per role (detector, landmarker, recognizer, swapper, embedding_converter, enhancer,
    # occluder, parser): the server's model name and version.
    models: dict[str, TritonModelRef] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        from streamswap.errors import ConfigError

        if "://" in self.url or "/" in self.url:
            raise ConfigError(
                f"{where}.url: host:port without a scheme or path, got {self.url!r} "
                "(gRPC or HTTP is protocol:, TLS is ssl: true)"
            )
        import re

        for name, value in self.headers.items():
            if not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
                raise ConfigError(f"{where}.headers: {name!r} is not a valid header name")
            if any(c in value for c in "\r\n\0"):
                raise ConfigError(f"{where}.headers.{name}: a header value cannot hold line breaks")
        for role in self.models:
            if role not in TRITON_ROLES:
                raise ConfigError(f"{where}.models.{role}: unknown role (one of {', '.join(TRITON_ROLES)})")
        for role, ref in self.models.items():
            if ref.version and not ref.version.isdigit():
                raise ConfigError(f"{where}.models.{role}.version: must be a number, got {ref.version!r}")
        if self.ssl and self.shared_memory == "on":
            raise ConfigError(
                f"{where}.shared_memory: on needs the server on this host; with ssl (a remote server) use auto or off"
            )
        if self.private_key and not self.certificate_chain or self.certificate_chain and not self.private_key:
            raise ConfigError(f"{where}.private_key and certificate_chain go together (a client certificate)")


@dataclass
class InferenceSettings:
    # auto picks TensorRT EP > CUDA EP > CoreML > CPU by what is installed and usable.
    # An explicit choice that is unavailable is an error, never a silent fallback.
    provider: str = field(default="auto", metadata=choices("auto", "tensorrt", "cuda", "coreml", "cpu"))
    fp16: bool = True
    # Intra-op threads per session; 0 = the CPU budget's share (the cores divided among the
    # stages that run models at once, see pipeline/cpu_budget.py), ONNX Runtime's default
    # (one per core) where no budget applies.
    threads: int = field(default=0, metadata=limits(min=0, max=256))
    # Let ORT's worker threads spin (busy-wait) between tasks. Off: on shared cores the
    # spinning burns the time another stage's thread needs (measured: 2× slower calls).
    allow_spinning: bool = False
    graph_optimization: str = field(default="all", metadata=choices("disable", "basic", "extended", "all"))
    # Built engines and timing caches; None = ./engines when writable, else the XDG cache.
    engine_cache_dir: str | None = None
    # What runs the graphs: ONNX Runtime (provider above), our own TensorRT engines, or a
    # Triton Inference Server shared by many daemons (`triton` below).
    backend: str = field(default="ort", metadata=choices("ort", "tensorrt", "triton"))
    triton: TritonSettings = field(default_factory=TritonSettings)
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
