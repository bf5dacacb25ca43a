"""Small generated ONNX models with the public I/O contracts of the real ones (inswapper,
hyperswap, simswap/ghost, crossface converters, ArcFace, GFPGAN). The generators do cheap
arithmetic, not face synthesis: benchmarks and tests use them to exercise the adapters'
pre/post-processing, batching and paste-back end to end without the real weights."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

OPSET = 13


def _save(model, path: Path) -> Path:
    import onnx

    model.ir_version = 8  # loadable by every onnxruntime we support
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_swapper_model(
    path: str | Path,
    *,
    size: int = 128,
    latent: int = 512,
    mode: str = "invert",
    constant: float = 0.5,
    batch_dynamic: bool = False,
    emap: np.ndarray | None = None,
    emap_dtype: type = np.float32,
    input_names: Sequence[str] = ("target", "source"),
    target_channels: int = 3,
    output_name: str = "output",
) -> Path:
    """An inswapper-shaped generator: inputs `target` N×3×S×S and `source` N×latent, one
    output N×3×S×S. The graph carries `emap` (latent×latent) as its LAST initializer and
    uses it (source · emap, scaled by 0, is added to the output) so it is not pruned.

    mode: "invert" (1 − target), "identity" (target) or "constant" (every value `constant`).
    """
    from onnx import TensorProto, helper, numpy_helper

    batch = "N" if batch_dynamic else 1
    target_name, source_name = input_names
    target = helper.make_tensor_value_info(target_name, TensorProto.FLOAT, [batch, target_channels, size, size])
    source = helper.make_tensor_value_info(source_name, TensorProto.FLOAT, [batch, latent])
    output = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch, 3, size, size])
    if emap is None:
        emap = np.random.default_rng(0).standard_normal((latent, latent)).astype(np.float32) / np.sqrt(latent)
    inits = [
        numpy_helper.from_array(np.array([-1, 1, 1, 1], dtype=np.int64), "shape4"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
        numpy_helper.from_array(np.array(1.0 if mode in ("invert", "identity") else constant, dtype=np.float32), "const"),
        numpy_helper.from_array(np.asarray(emap).astype(emap_dtype), "emap"),  # LAST, as in inswapper
    ]
    nodes = []
    emap_input = "emap"
    if emap_dtype != np.float32:
        nodes.append(helper.make_node("Cast", ["emap"], ["emap_f32"], to=TensorProto.FLOAT))
        emap_input = "emap_f32"
    nodes += [
        helper.make_node("MatMul", [source_name, emap_input], ["proj"]),
        helper.make_node("ReduceMean", ["proj"], ["proj_mean"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["proj_mean", "zero"], ["proj_zero"]),
        helper.make_node("Reshape", ["proj_zero", "shape4"], ["bias"]),
    ]
    if target_channels != 3:
        nodes.append(helper.make_node("Slice", [target_name, "c0", "c3", "c_axis"], ["t3"]))
        inits[:0] = [numpy_helper.from_array(np.array([0], np.int64), "c0"),
                     numpy_helper.from_array(np.array([3], np.int64), "c3"),
                     numpy_helper.from_array(np.array([1], np.int64), "c_axis")]
        image = "t3"
    else:
        image = target_name
    if mode == "invert":
        nodes.append(helper.make_node("Sub", ["const", image], ["body"]))
    elif mode == "identity":
        nodes.append(helper.make_node("Mul", [image, "const"], ["body"]))
    elif mode == "constant":
        nodes += [helper.make_node("Mul", [image, "zero"], ["zeros"]),
                  helper.make_node("Add", ["zeros", "const"], ["body"])]
    else:
        raise ValueError(f"unknown mode {mode!r}")
    nodes.append(helper.make_node("Add", ["body", "bias"], [output_name]))
    graph = helper.make_graph(nodes, "swapper", [target, source], [output], initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def make_converter_model(path: str | Path, *, weight: np.ndarray | None = None, input_name: str = "input") -> Path:
    """A crossface-shaped converter: `input` N×512 → N×512 (input · weight)."""
    from onnx import TensorProto, helper, numpy_helper

    if weight is None:
        weight = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32) / np.sqrt(512)
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 512])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 512])
    graph = helper.make_graph([helper.make_node("MatMul", [input_name, "w"], ["output"])], "converter",
                              [x], [y], initializer=[numpy_helper.from_array(weight.astype(np.float32), "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def make_arcface_model(path: str | Path, *, batch_dynamic: bool = True) -> Path:
    """An ArcFace-shaped recognizer: N×3×112×112 → N×512. The 'embedding' is a fixed
    projection of 4×4-pooled colours, so different faces get different vectors."""
    from onnx import TensorProto, helper, numpy_helper

    batch = "N" if batch_dynamic else 1
    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [batch, 3, 112, 112])
    y = helper.make_tensor_value_info("683", TensorProto.FLOAT, [batch, 512])
    w = np.random.default_rng(2).standard_normal((48, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]
    graph = helper.make_graph(nodes, "arcface", [x], [y], initializer=[numpy_helper.from_array(w, "w")])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def make_enhancer_model(path: str | Path, *, size: int = 512, batch_dynamic: bool = False) -> Path:
    """A GFPGAN-shaped enhancer: `input` N×3×512×512 → N×3×512×512 (−input, a visible change)."""
    from onnx import TensorProto, helper

    batch = "N" if batch_dynamic else 1
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])
    graph = helper.make_graph([helper.make_node("Neg", ["input"], ["output"])], "enhancer", [x], [y])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))
