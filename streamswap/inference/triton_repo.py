"""Writing a Triton model repository: one folder per model, `config.pbtxt` generated from
the model's own inputs and outputs, and the model file under version `1/`.

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.onnx      (platform onnxruntime_onnx)
    REPO/NAME/1/model.plan      (platform tensorrt_plan: an engine for the server's GPU)

The config is built as Triton's own `ModelConfig` protobuf (the one tritonclient ships) and
written in its text format, so what is written is what the server parses. A model whose
every input and output has a dynamic leading dim is batched (`max_batch_size`, dynamic
batching with preferred sizes and a queue delay: requests from many clients become one
execution); the others take whole tensors (`max_batch_size: 0`).

Writing is idempotent: a folder that already holds exactly these files is left alone; one
that holds anything else (another model, another config) is refused unless `force`, and
nothing is written before every folder has been checked. Knows nothing about faces.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from streamswap.errors import ModelError, OutputError
from streamswap.inference.engine_cache import file_sha256
from streamswap.logs import kv

log = logging.getLogger(__name__)

ONNX = "onnxruntime_onnx"
PLAN = "tensorrt_plan"
MODEL_FILES = {ONNX: "model.onnx", PLAN: "model.plan"}

_ONNX_TO_TRITON = {
    1: "TYPE_FP32",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    7: "TYPE_INT64",
    6: "TYPE_INT32",
    5: "TYPE_INT16",
    3: "TYPE_INT8",
    2: "TYPE_UINT8",
    9: "TYPE_BOOL",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str  # TYPE_FP32, ...
    dims: tuple[int, ...]  # -1 = dynamic; with the batch dim when the model is not batched


@dataclass(frozen=True)
class ModelIO:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def batched(self) -> bool:
        """Does every tensor have a dynamic leading (batch) dim?"""
        return all(t.dims and t.dims[0] == -1 for t in self.inputs + self.outputs)


def onnx_io(path: Path) -> ModelIO:
    """Inputs (initializers excluded) and outputs of an ONNX file, Triton-typed."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"{path}: cannot read this ONNX model ({exc})") from None
    inits = {i.name for i in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        t = value.type.tensor_type
        data_type = _ONNX_TO_TRITON.get(t.elem_type)
        if data_type is None:
            raise ModelError(
                f"{path}: tensor {value.name} has ONNX element type {t.elem_type}, which Triton cannot serve here"
            )
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in t.shape.dim)
        return TensorSpec(value.name, data_type, dims)

    return ModelIO(
        tuple(spec(v) for v in model.graph.input if v.name not in inits), tuple(spec(v) for v in model.graph.output)
    )


@dataclass(frozen=True)
class RepoModel:
    """One model to put in the repository."""

    name: str  # the Triton model name (what inference.triton.models names, or the file stem)
    source: Path  # the ONNX file, or the engine for tensorrt_plan
    io: ModelIO
    platform: str = ONNX


@dataclass(frozen=True)
class RepoOptions:
    max_batch: int = 8
    queue_delay_us: int = 2000
    instances: int = 1
    fp16: bool = True  # onnxruntime_onnx: the TensorRT accelerator in FP16 (else FP32)
    workspace_mb: int = 2048
    # tensorrt_plan: the engine's fixed dims for each input (its optimisation profile max)
    plan_dims: dict[str, dict[str, tuple[int, ...]]] = field(default_factory=dict)


def _preferred(max_batch: int) -> list[int]:
    return sorted({max(1, max_batch // 2), max_batch})


def model_config(model: RepoModel, options: RepoOptions) -> Any:
    """Triton's ModelConfig message for `model`."""
    from tritonclient.grpc import model_config_pb2 as pb

    batched = model.io.batched
    config = pb.ModelConfig(
        name=model.name, platform=model.platform, max_batch_size=options.max_batch if batched else 0
    )
    plan_dims = options.plan_dims.get(model.name, {})
    for specs, field_ in ((model.io.inputs, config.input), (model.io.outputs, config.output)):
        for t in specs:
            dims = plan_dims.get(t.name, t.dims)
            entry = field_.add(name=t.name, data_type=pb.DataType.Value(t.data_type))
            entry.dims.extend(dims[1:] if batched else dims)
    if batched:
        config.dynamic_batching.preferred_batch_size.extend(_preferred(options.max_batch))
        config.dynamic_batching.max_queue_delay_microseconds = options.queue_delay_us
    config.instance_group.add(count=options.instances, kind=pb.ModelInstanceGroup.KIND_GPU)
    if model.platform == ONNX:
        # ONNX Runtime's TensorRT execution provider, built by the server on its own GPU.
        accel = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accel.parameters["precision_mode"] = "FP16" if options.fp16 else "FP32"
        accel.parameters["max_workspace_size_bytes"] = str(options.workspace_mb << 20)
    return config


def config_text(model: RepoModel, options: RepoOptions) -> str:
    from google.protobuf import text_format

    return str(text_format.MessageToString(model_config(model, options)))


@dataclass
class Written:
    name: str
    folder: Path
    state: str  # "written", "unchanged", "replaced"


def _same_file(a: Path, b: Path) -> bool:
    return a.stat().st_size == b.stat().st_size and file_sha256(a) == file_sha256(b)


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() or p.is_symlink()}


def write_repository(
    repo: Path, models: Sequence[RepoModel], options: RepoOptions, *, force: bool = False
) -> list[Written]:
    """Write `models` into `repo` (created if missing). Folders already holding exactly these
    files stay untouched; different ones raise OutputError naming them, unless `force`."""
    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise OutputError(f"--repo {repo}: exists and is not a folder")
    # One file serving two roles is one model on the server.
    models = list({(m.name, Path(m.source).resolve(), m.platform): m for m in models}.values())
    names = [m.name for m in models]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise OutputError(
            f"two models would be named {', '.join(dupes)} in the repository; "
            "give them different names (inference.triton.models.<role>.name)"
        )
    plans = []
    conflicts = []
    for model in models:
        folder = repo / model.name
        text = config_text(model, options)
        model_file = f"1/{MODEL_FILES[model.platform]}"
        state = "written"
        if folder.exists():
            present = _files(folder)
            same = (
                present == {"config.pbtxt", model_file}
                and (folder / "config.pbtxt").read_text() == text
                and _same_file(folder / model_file, model.source)
            )
            if same:
                state = "unchanged"
            elif present:
                state = "replaced"
                conflicts.append(f"{folder} holds {', '.join(sorted(present))}, not what this export writes")
        plans.append((model, folder, text, model_file, state))
    if conflicts and not force:
        raise OutputError(
            f"{repo} already holds a different repository: "
            + "; ".join(conflicts)
            + ". Nothing was written; pass --force to replace these folders, or export to another --repo"
        )
    out = []
    for model, folder, text, model_file, state in plans:
        if state != "unchanged":
            if folder.exists():
                shutil.rmtree(folder)
            (folder / "1").mkdir(parents=True)
            tmp = folder / (model_file + ".part")
            shutil.copyfile(model.source, tmp)
            os.replace(tmp, folder / model_file)
            (folder / "config.pbtxt").write_text(text)
            log.debug("Triton model written", extra=kv(model=model.name, folder=str(folder), state=state))
        out.append(Written(model.name, folder, state))
    return out
