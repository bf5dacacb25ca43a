"""Convert an fp32 ONNX model to fp16 for TensorRT 11 (strongly typed networks only).

TensorRT 11 removed the FP16 builder flag: an fp16 engine comes from an fp16 graph. This
converter keeps the model's inputs and outputs fp32 (adapters feed what they always fed),
turns float initializers, constants and activations to fp16, and keeps numerically
sensitive operators (exp/log/pow, sum-of-squares reductions, …) in fp32 with Cast nodes
at the boundaries. Operator inputs that the ONNX spec fixes to float32 (Resize scales)
stay float32.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from streamswap.errors import ModelError
from streamswap.logs import kv

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

# Ops whose fp16 results overflow or lose too much precision (large intermediate ranges,
# long accumulations, index/box arithmetic). They run in fp32 between Cast nodes.
KEEP_FP32_OPS = frozenset(
    {
        "Exp",
        "Log",
        "Pow",
        "Softplus",
        "ReduceSumSquare",
        "ReduceL2",
        "ReduceLogSumExp",
        "ReduceProd",
        "CumSum",
        "Range",
        "TopK",
        "NonMaxSuppression",
        "RoiAlign",
    }
)
# (op, input index) that the ONNX spec types as tensor(float) whatever T is.
FLOAT32_ONLY_INPUTS = frozenset({("Resize", 2), ("Upsample", 1)})

FP16_MAX = float(np.finfo(np.float16).max)
FP16_MIN_SUBNORMAL = 2.0**-24


def is_fp16_model(model: "onnx.ModelProto") -> bool:
    """True when the graph already computes in fp16: most of its float weights are fp16
    (a few fp32 ones, like Resize scales, are normal in an fp16 model)."""
    from onnx import TensorProto

    def size(init: Any) -> int:
        count = 1
        for d in init.dims:
            count *= d
        return count

    half = sum(size(i) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16)
    single = sum(size(i) for i in model.graph.initializer if i.data_type == TensorProto.FLOAT)
    return half > 0 and half > single


def convert_to_fp16(model: "onnx.ModelProto", keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS) -> "onnx.ModelProto":
    """A new model computing in fp16 with fp32 inputs/outputs. The input is not modified."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    keep = frozenset(keep_fp32_ops)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; unknown tensors are left alone
        inferred = model
    graph = model.graph
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    # Element type of every tensor we can know.
    elem: dict[str, int] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        if vi.type.HasField("tensor_type"):
            elem[vi.name] = vi.type.tensor_type.elem_type
    initializers = {init.name: init for init in graph.initializer}
    for name, init in initializers.items():
        elem[name] = init.data_type
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.type == onnx.AttributeProto.TENSOR:
                    elem[node.output[0]] = attr.t.data_type

    def is_float(name: str) -> bool:
        return bool(name) and elem.get(name) == FLOAT

    def kept(node: "onnx.NodeProto") -> bool:
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        return node.op_type in keep or has_subgraph

    # Which type each consumer slot wants for a float tensor.
    wants: dict[str, set[int]] = defaultdict(set)
    for node in graph.node:
        for slot, name in enumerate(node.input):
            if not is_float(name):
                continue
            fp32 = kept(node) or (node.op_type, slot) in FLOAT32_ONLY_INPUTS
            wants[name].add(FLOAT if fp32 else HALF)
    for out in graph.output:
        if is_float(out.name):
            wants[out.name].add(FLOAT)  # outputs stay fp32

    # Native type of each float tensor after conversion.
    native: dict[str, int] = {}
    for inp in graph.input:
        if is_float(inp.name) and inp.name not in initializers:
            native[inp.name] = FLOAT
    for init in graph.initializer:
        if init.data_type != FLOAT:
            continue
        wanted = wants.get(init.name, {HALF})
        if HALF in wanted and FLOAT not in wanted:
            _to_fp16_initializer(init, numpy_helper)
            native[init.name] = HALF
        else:
            native[init.name] = FLOAT  # mixed consumers: fp32 stays, fp16 users get a Cast
    for node in graph.node:
        if node.op_type == "Constant" and node.output and is_float(node.output[0]):
            wanted = wants.get(node.output[0], {HALF})
            if HALF in wanted and FLOAT not in wanted:
                for attr in node.attribute:
                    if attr.name == "value":
                        _to_fp16_initializer(attr.t, numpy_helper)
                native[node.output[0]] = HALF
            else:
                native[node.output[0]] = FLOAT
            continue
        for name in node.output:
            if is_float(name):
                native[name] = FLOAT if kept(node) else HALF
        if not kept(node):
            _retarget_attributes(node, onnx, numpy_helper)

    # Insert Casts where a consumer wants another type than the tensor's native one.
    casts: dict[tuple[str, int], str] = {}
    cast_nodes: dict[str, list[Any]] = defaultdict(list)  # producer tensor -> cast nodes after it

    def cast_of(name: str, to: int) -> str:
        key = (name, to)
        if key not in casts:
            suffix = "fp32" if to == FLOAT else "fp16"
            out = f"{name}__{suffix}"
            casts[key] = out
            cast_nodes[name].append(helper.make_node("Cast", [name], [out], to=to, name=f"{out}__cast"))
        return casts[key]

    for node in graph.node:
        if node.op_type == "Constant":
            continue
        for slot, name in enumerate(node.input):
            if name not in native:
                continue
            want = FLOAT if (kept(node) or (node.op_type, slot) in FLOAT32_ONLY_INPUTS) else HALF
            if native[name] != want:
                node.input[slot] = cast_of(name, want)

    # Graph outputs produced in fp16: rename the producer's output, cast back to fp32.
    output_names = {o.name for o in graph.output}
    renamed: dict[str, str] = {}
    for name in output_names:
        if native.get(name) == HALF:
            renamed[name] = f"{name}__fp16"
    if renamed:
        for node in graph.node:
            for i, name in enumerate(node.output):
                if name in renamed:
                    node.output[i] = renamed[name]
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]
        for node_list in cast_nodes.values():
            for cast in node_list:
                if cast.input[0] in renamed:
                    cast.input[0] = renamed[cast.input[0]]
        moved = {renamed[k]: v for k, v in cast_nodes.items() if k in renamed}
        for k in renamed:
            cast_nodes.pop(k, None)
        cast_nodes.update(moved)

    # Rebuild the node list in order: each cast right after its producer (graph inputs' and
    # initializers' casts first), output casts at the end.
    ordered = []
    produced_early = [
        n for n in list(cast_nodes) if n in native and (n in initializers or any(i.name == n for i in graph.input))
    ]
    for name in produced_early:
        ordered.extend(cast_nodes.pop(name))
    for node in graph.node:
        ordered.append(node)
        for out in node.output:
            ordered.extend(cast_nodes.pop(out, []))
    for leftover in cast_nodes.values():  # producers we did not see (should not happen)
        ordered.extend(leftover)
    for original, internal in renamed.items():
        ordered.append(helper.make_node("Cast", [internal], [original], to=FLOAT, name=f"{original}__out_cast"))
    del graph.node[:]
    graph.node.extend(ordered)
    # Stale intermediate types would contradict the new ones; runtimes re-infer them.
    del graph.value_info[:]
    return model


def _to_fp16_initializer(tensor: Any, numpy_helper: Any) -> None:
    array = numpy_helper.to_array(tensor)
    clipped = np.clip(array, -FP16_MAX, FP16_MAX)
    # Non-zero values below fp16's smallest subnormal (epsilons like 1e-8) would become 0
    # and turn x / sqrt(v + eps) into a division by zero: keep them at that smallest value.
    tiny = (clipped != 0) & (np.abs(clipped) < FP16_MIN_SUBNORMAL)
    clipped = np.where(tiny, np.sign(clipped) * FP16_MIN_SUBNORMAL, clipped).astype(np.float16)
    tensor.CopyFrom(numpy_helper.from_array(clipped, tensor.name))


def _retarget_attributes(node: Any, onnx: Any, numpy_helper: Any) -> None:
    """Attributes that name or carry float32 in a node that now computes in fp16."""
    from onnx import TensorProto

    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
            _to_fp16_initializer(attr.t, numpy_helper)


def convert_file(src: Path, dst: Path) -> Path:
    """Write an fp16 version of the ONNX file `src` to `dst` (src itself when already fp16)."""
    import onnx

    try:
        model = onnx.load(str(src))
    except Exception as exc:
        raise ModelError(
            f"{src}: cannot read this ONNX model ({exc}); check the file (`streamswap models verify`)"
        ) from None
    if is_fp16_model(model):
        log.info("model already fp16", extra=kv(model=src.name))
        return src
    converted = convert_to_fp16(model)
    dst.parent.mkdir(parents=True, exist_ok=True)
    large = converted.ByteSize() > 1_900_000_000
    onnx.save(converted, str(dst), save_as_external_data=large, location=dst.name + ".data" if large else None)
    log.info("converted to fp16", extra=kv(model=src.name, out=dst.name))
    return dst
