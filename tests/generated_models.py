"""ONNX models generated with onnx.helper that follow public contracts, for tests that need
a recogniser, an occlusion model or a face parser the machine does not have."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def pooled_recognizer(path: Path, seed: int = 3) -> Path:
    """The ArcFace contract (`input` N×3×112×112 → N×512) as a fixed random projection of
    the aligned crop pooled to 14×14 and centred: the same face (same crop) maps to the
    same direction, different faces to clearly different ones. Not a real recogniser: it
    tells apart photos of the test scenes, which is all a test of the wiring needs."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(0, 1, size=(3 * 14 * 14, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat"], ["mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "weights"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes, "pooled_recognizer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])],
        [numpy_helper.from_array(weights, "weights")],
    )
    return _save(graph, path)
