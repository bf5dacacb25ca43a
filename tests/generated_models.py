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
        nodes,
        "pooled_recognizer",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 512])],
        [numpy_helper.from_array(weights, "weights")],
    )
    return _save(graph, path)


def blue_occluder(path: Path) -> Path:
    """The xseg contract (NHWC N×256×256×3 BGR in [0, 1] → N×256×256×1): "occluded" (0)
    where a pixel is clearly bluer than red (a blue surgical mask, a blue cup), else 1."""
    weights = np.array([[-1.0], [0.0], [1.0]], np.float32)  # red − blue
    nodes = [
        helper.make_node("MatMul", ["input", "weights"], ["diff"]),
        helper.make_node("Add", ["diff", "bias"], ["shifted"]),
        helper.make_node("Mul", ["shifted", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["visible"]),
    ]
    graph = helper.make_graph(
        nodes,
        "blue_occluder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 256, 256, 3])],
        [helper.make_tensor_value_info("visible", TensorProto.FLOAT, ["N", 256, 256, 1])],
        [
            numpy_helper.from_array(weights, "weights"),
            numpy_helper.from_array(np.array(0.1, np.float32), "bias"),
            numpy_helper.from_array(np.array(60.0, np.float32), "gain"),
        ],
    )
    return _save(graph, path)


def red_parser(path: Path) -> Path:
    """The BiSeNet contract (N×3×512×512 RGB ImageNet-normalised → N×19×512×512 logits): class
    1 (skin) where the normalised red channel is above 0 (red > 0.485), class 17 (hair)
    elsewhere, every other class far below."""
    weights = np.zeros((19, 3, 1, 1), np.float32)
    bias = np.full((19,), -100.0, np.float32)
    weights[1, 0, 0, 0] = 1.0
    bias[1] = 0.0
    bias[17] = 0.0
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weights", "bias"], ["logits"], kernel_shape=[1, 1])],
        "red_parser",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 512, 512])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 19, 512, 512])],
        [numpy_helper.from_array(weights, "weights"), numpy_helper.from_array(bias, "bias")],
    )
    return _save(graph, path)
