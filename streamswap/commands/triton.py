"""`streamswap triton export`: the Triton model repository the config's models need."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from streamswap.commands import examples
from streamswap.errors import BackendUnavailable, InputError

HELP = "Triton Inference Server: write the model repository for the configured models"
EXAMPLES = (
    "streamswap triton export --repo /srv/triton/models -c configs/desktop-gpu.yaml",
    "streamswap triton export --repo /srv/triton/models --platform tensorrt_plan --max-batch 16",
)

PLATFORMS = ("onnxruntime_onnx", "tensorrt_plan")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="triton_command", metavar="ACTION", required=True)
    export = sub.add_parser(
        "export",
        help="write a Triton model repository (config.pbtxt + model file per model)",
        description="Write a Triton model repository for the models the config uses: one folder per "
        "model with a config.pbtxt generated from the model's inputs and outputs (dynamic batching "
        "across clients, instances on the GPU) and the model file. Point tritonserver "
        "--model-repository at it and set inference.backend: triton in the daemons' config. "
        "-c names the config whose models are exported.",
        epilog=examples(
            "streamswap triton export --repo /srv/triton/models -c configs/desktop-gpu.yaml",
            "streamswap triton export --repo models/ --platform tensorrt_plan --instances 2",
        ),
    )
    export.add_argument("--repo", required=True, metavar="DIR", help="the repository folder (created if missing)")
    export.add_argument(
        "--platform",
        choices=PLATFORMS,
        default="onnxruntime_onnx",
        help="onnxruntime_onnx (default: the ONNX file; the server's ONNX Runtime builds a "
        "TensorRT engine on its own GPU, fp16 when inference.fp16) or tensorrt_plan (an "
        "engine built here by `engines build`: run this on the server's GPU)",
    )
    export.add_argument(
        "--max-batch", type=int, metavar="N", help="max_batch_size of the batched models (default: inference.max_batch)"
    )
    export.add_argument(
        "--queue-delay-us",
        type=int,
        default=2000,
        metavar="US",
        help="how long the server may hold a request to batch it with others "
        "(default: 2000 µs, a small part of a 33 ms frame)",
    )
    export.add_argument("--instances", type=int, default=1, metavar="N", help="model instances per GPU (default: 1)")
    export.add_argument("--force", action="store_true", help="replace model folders that hold something else")


def run(args: argparse.Namespace, ctx: Any) -> int:
    for flag, value, lowest in (
        ("--max-batch", args.max_batch, 1),
        ("--queue-delay-us", args.queue_delay_us, 0),
        ("--instances", args.instances, 1),
    ):
        if value is not None and value < lowest:
            raise InputError(f"{flag} {value}: must be {lowest} or more")
    config = ctx.config()
    return export(
        config,
        Path(args.repo),
        platform=args.platform,
        max_batch=args.max_batch,
        queue_delay_us=args.queue_delay_us,
        instances=args.instances,
        force=args.force,
    )


def export(
    config: Any,
    repo: Path,
    *,
    platform: str = "onnxruntime_onnx",
    max_batch: int | None = None,
    queue_delay_us: int = 2000,
    instances: int = 1,
    force: bool = False,
) -> int:
    from streamswap.inference.triton import triton_model_name
    from streamswap.inference.triton_repo import PLAN, RepoModel, RepoOptions, onnx_io, write_repository
    from streamswap.models.store import ModelStore, builtin_models, role_models

    store = ModelStore(config.models)
    settings = config.inference
    max_batch = max_batch or settings.max_batch
    models = []
    plan_dims: dict[str, dict[str, tuple[int, ...]]] = {}
    engines = _PlanBuilder(config, max_batch) if platform == PLAN else None
    for used in role_models(config.faces, store.catalogue):
        resolved = store.resolve(used.model, used.contract)
        path = resolved.file("a Triton model")
        ref = settings.triton.models.get(used.role)
        name = (ref.name if ref and ref.name else "") or triton_model_name(path)
        io = onnx_io(path)
        source = path
        if engines is not None:
            source, plan_dims[name] = engines.build(resolved, detector=used.role == "detector")
        models.append(RepoModel(name, source, io, platform))
    options = RepoOptions(
        max_batch=max_batch,
        queue_delay_us=queue_delay_us,
        instances=instances,
        fp16=settings.engine_precision == "fp16",
        workspace_mb=settings.workspace_mb,
        plan_dims=plan_dims,
    )
    written = write_repository(repo, models, options, force=force)
    for spec in builtin_models(config.faces, store.catalogue):  # code, not a graph: nothing to serve
        print(f"{spec.name}: built in, not exported (no model file; the {spec.role} runs in each daemon)")
    by_name = {m.name: m for m in models}
    for item in written:
        model = by_name[item.name]
        batching = (
            f"max_batch_size {max_batch}, dynamic batching" if model.io.batched else "max_batch_size 0 (fixed batch)"
        )
        print(f"{item.name}: {item.state} ({model.platform}, {batching})")
    print(
        f"repository {repo}: {len(written)} model(s). Serve it with "
        f"`tritonserver --model-repository={repo.resolve()}` (docs/scale-out.md) and set "
        f"inference.backend: triton, inference.triton.url in the daemons' config.",
        file=sys.stderr,
    )
    if engines is not None:
        print(
            f"the plans were built for {engines.where}: the server must run this GPU model and "
            "TensorRT version (engines are not portable)",
            file=sys.stderr,
        )
    elif options.fp16:
        print(
            "the server's ONNX Runtime builds a TensorRT fp16 engine per model on its own GPU at load "
            "(minutes for a swapper)",
            file=sys.stderr,
        )
    return 0


class _PlanBuilder:
    """TensorRT engines for tensorrt_plan, built (or taken from the engine cache) on THIS
    machine's GPU, which must be the server's."""

    def __init__(self, config: Any, max_batch: int) -> None:
        from streamswap.inference.engine_cache import EngineCache, resolve_cache_dir
        from streamswap.inference.tensorrt import TrtEnvironment

        try:
            self.env = TrtEnvironment.detect()
        except BackendUnavailable as exc:
            raise BackendUnavailable(
                f"--platform tensorrt_plan builds the engines on the server's GPU, and none can be used "
                f"here ({exc}). Run this export on the Triton machine, or use --platform "
                "onnxruntime_onnx (the server builds its TensorRT engine itself)"
            ) from None
        self.config = config
        self.max_batch = max_batch
        self.cache = EngineCache(resolve_cache_dir(config.inference.engine_cache_dir))
        self.where = f"{self.env.device.name} (sm{self.env.device.compute_capability}), TensorRT {self.env.version}"

    def build(self, resolved: Any, *, detector: bool) -> tuple[Path, dict[str, tuple[int, ...]]]:
        from streamswap.inference.engine_cache import profile_from_inputs
        from streamswap.inference.tensorrt import EngineRequest, ensure_engine, onnx_inputs

        settings = self.config.inference
        profile = profile_from_inputs(
            onnx_inputs(resolved.path), self.max_batch, self.config.faces.detector.size if detector else None
        )
        request = EngineRequest(resolved.path, settings.engine_precision, profile, resolved.sha256)
        print(f"{resolved.path.name}: TensorRT engine for {self.where}…", file=sys.stderr)
        path = ensure_engine(
            request,
            self.cache,
            trt_version=self.env.version,
            device=self.env.device,
            build=True,
            timeout_s=settings.build_timeout_s,
            workspace_mb=settings.workspace_mb,
        )
        # The engine's input dims: what its profile fixed (a detector's side), batch dynamic.
        dims = {p.name: ((-1,) + tuple(p.max[1:])) if p.min[0] != p.max[0] else tuple(p.max) for p in profile}
        return path, dims
