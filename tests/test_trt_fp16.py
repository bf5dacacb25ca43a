"""fp32 → fp16 ONNX conversion (the TensorRT 11 fp16 path): generated detector-,
recognizer- and swapper-shaped models give outputs within fp16 tolerance of the fp32
model under ONNX Runtime; sensitive ops stay fp32; float-only inputs stay float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from streamswap.inference.fp16 import KEEP_FP32_OPS, convert_file, convert_to_fp16, is_fp16_model

RNG = np.random.default_rng(7)


def init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def model_of(nodes, inputs, outputs, inits) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def detector_model() -> onnx.ModelProto:
    """SCRFD-shaped: conv backbone, upsample (Resize with fp32 scales), per-anchor score
    (Sigmoid), box distances through Exp (a kept-fp32 op), dynamic spatial size."""
    nodes = [
        helper.make_node("Conv", ["input.1", "w1", "b1"], ["c1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Resize", ["r2", "roi", "scales"], ["up"], mode="nearest"),
        helper.make_node("Add", ["up", "r1"], ["fpn"]),
        helper.make_node("Conv", ["fpn", "ws", "bs"], ["sl"]),
        helper.make_node("Sigmoid", ["sl"], ["score_map"]),
        helper.make_node("Conv", ["fpn", "wb", "bb"], ["bl"]),
        helper.make_node("Exp", ["bl"], ["bbox_map"]),
        helper.make_node("Shape", ["score_map"], ["shape"]),
    ]
    inits = [
        init("w1", RNG.normal(0, 0.2, (8, 3, 3, 3))),
        init("b1", RNG.normal(0, 0.1, 8)),
        init("w2", RNG.normal(0, 0.2, (8, 8, 3, 3))),
        init("b2", RNG.normal(0, 0.1, 8)),
        init("roi", np.zeros(0)),
        init("scales", [1, 1, 2, 2]),
        init("ws", RNG.normal(0, 0.2, (2, 8, 1, 1))),
        init("bs", [0.1, -0.1]),
        init("wb", RNG.normal(0, 0.1, (8, 8, 1, 1))),
        init("bb", RNG.normal(0, 0.1, 8)),
    ]
    return model_of(
        nodes,
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [
            helper.make_tensor_value_info("score_map", TensorProto.FLOAT, [1, 2, "h2", "w2"]),
            helper.make_tensor_value_info("bbox_map", TensorProto.FLOAT, [1, 8, "h2", "w2"]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [4]),
        ],
        inits,
    )


def recognizer_model() -> onnx.ModelProto:
    """ArcFace-shaped: conv, pooled features, FC to 512, an L2 norm over the embedding
    (ReduceSumSquare is kept fp32: a sum of 512 squares overflows fp16 easily)."""
    nodes = [
        helper.make_node("Conv", ["input.1", "w", "b"], ["c"], strides=[4, 4]),
        helper.make_node("PRelu", ["c", "slope"], ["p"]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["emb"]),
        helper.make_node("ReduceSumSquare", ["emb"], ["ss"], axes=[1], keepdims=1),
        helper.make_node("Sqrt", ["ss"], ["norm"]),
        helper.make_node("Div", ["emb", "norm"], ["683"]),
    ]
    inits = [
        init("w", RNG.normal(0, 0.1, (16, 3, 4, 4))),
        init("b", RNG.normal(0, 0.1, 16)),
        init("slope", np.full((16, 1, 1), 0.25)),
        init("fc", RNG.normal(0, 3, (16, 512))),
        init("fcb", RNG.normal(0, 1, 512)),
    ]
    return model_of(
        nodes,
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])],
        inits,
    )


def swapper_model() -> onnx.ModelProto:
    """inswapper-shaped: target N×3×128×128 in [0,1] and source N×512; the latent modulates
    instance-normalised features (mean/variance with a 1e-8 epsilon), Cast and Constant
    nodes in float, output through Sigmoid."""
    nodes = [
        helper.make_node("Conv", ["target", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("ReduceMean", ["c"], ["mu"], axes=[2, 3], keepdims=1),
        helper.make_node("Sub", ["c", "mu"], ["d"]),
        helper.make_node("Mul", ["d", "d"], ["d2"]),
        helper.make_node("ReduceMean", ["d2"], ["var"], axes=[2, 3], keepdims=1),
        helper.make_node("Add", ["var", "eps"], ["ve"]),
        helper.make_node("Sqrt", ["ve"], ["sd"]),
        helper.make_node("Div", ["d", "sd"], ["n"]),
        helper.make_node("Gemm", ["source", "style", "style_b"], ["st"], transB=1),
        helper.make_node(
            "Constant", [], ["st_shape"], value=numpy_helper.from_array(np.array([-1, 8, 1, 1], np.int64), "st_shape_v")
        ),
        helper.make_node("Reshape", ["st", "st_shape"], ["st4"]),
        helper.make_node("Mul", ["n", "st4"], ["mod"]),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32), "h")),
        helper.make_node("Mul", ["mod", "half"], ["modh"]),
        helper.make_node("Conv", ["modh", "wo", "bo"], ["o"], pads=[1, 1, 1, 1]),
        helper.make_node("Cast", ["o"], ["oc"], to=TensorProto.FLOAT),
        helper.make_node("Sigmoid", ["oc"], ["output"]),
    ]
    inits = [
        init("w", RNG.normal(0, 0.3, (8, 3, 3, 3))),
        init("b", RNG.normal(0, 0.1, 8)),
        init("eps", 1e-8),
        init("style", RNG.normal(0, 0.05, (8, 512))),
        init("style_b", np.ones(8)),
        init("wo", RNG.normal(0, 0.3, (3, 8, 3, 3))),
        init("bo", RNG.normal(0, 0.1, 3)),
    ]
    return model_of(
        nodes,
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, ["N", 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, ["N", 512]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, 128, 128])],
        inits,
    )


def run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_fp16_close(ref: np.ndarray, got: np.ndarray) -> None:
    """Within fp16 tolerance: errors scale with the value range (a few fp16 ulps through
    several layers)."""
    scale = max(float(np.abs(ref).max()), 1.0)
    assert got.dtype == ref.dtype
    np.testing.assert_allclose(got, ref, atol=4e-3 * scale, rtol=1e-2)


@pytest.mark.parametrize(
    "make, feeds",
    [
        (detector_model, lambda: {"input.1": RNG.uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)}),
        (recognizer_model, lambda: {"input.1": RNG.uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)}),
        (
            swapper_model,
            lambda: {
                "target": RNG.uniform(0, 1, (2, 3, 128, 128)).astype(np.float32),
                "source": (lambda v: v / np.linalg.norm(v, axis=1, keepdims=True))(RNG.normal(0, 1, (2, 512))).astype(
                    np.float32
                ),
            },
        ),
    ],
    ids=["detector", "recognizer", "swapper"],
)
def test_fp16_model_matches_fp32_within_fp16_tolerance(make, feeds) -> None:
    model = make()
    half = convert_to_fp16(model)
    onnx.checker.check_model(half)
    x = feeds()
    for ref, got in zip(run(model, x), run(half, x)):
        if ref.dtype.kind == "f":
            assert_fp16_close(ref, got)
            assert not np.array_equal(ref, got)  # it really computed in fp16
        else:
            assert np.array_equal(ref, got)
    # inputs and outputs stay fp32; the weights are fp16
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [
        i.type.tensor_type.elem_type for i in model.graph.input
    ]
    assert is_fp16_model(half) and not is_fp16_model(model)


def test_structure_of_the_converted_graph() -> None:
    half = convert_to_fp16(detector_model())
    inits = {i.name: i.data_type for i in half.graph.initializer}
    assert inits.pop("scales") == TensorProto.FLOAT  # Resize scales are tensor(float) by spec
    assert set(inits.values()) == {TensorProto.FLOAT16}
    exp = next(n for n in half.graph.node if n.op_type == "Exp")
    producer = next(n for n in half.graph.node if exp.input[0] in n.output)
    assert producer.op_type == "Cast" and producer.attribute[0].i == TensorProto.FLOAT
    assert "Exp" in KEEP_FP32_OPS
    # graph outputs come out of Cast-to-float nodes
    for out in ("score_map", "bbox_map"):
        node = next(n for n in half.graph.node if out in n.output)
        assert node.op_type == "Cast" or node.op_type == "Exp"


def test_float_casts_constants_and_tiny_epsilons_are_retargeted() -> None:
    half = convert_to_fp16(swapper_model())
    cast = next(n for n in half.graph.node if n.op_type == "Cast" and n.input == ["o"])
    assert cast.attribute[0].i == TensorProto.FLOAT16
    const = next(n for n in half.graph.node if n.output == ["half"])
    assert const.attribute[0].t.data_type == TensorProto.FLOAT16
    eps = numpy_helper.to_array(next(i for i in half.graph.initializer if i.name == "eps"))
    assert eps.dtype == np.float16 and eps > 0  # 1e-8 would underflow to 0 and divide by 0


def test_convert_file_writes_a_model_and_leaves_fp16_models_alone(tmp_path: Path) -> None:
    src = tmp_path / "rec.onnx"
    onnx.save(recognizer_model(), str(src))
    dst = convert_file(src, tmp_path / "out" / "rec-fp16.onnx")
    assert dst.exists() and is_fp16_model(onnx.load(str(dst)))
    assert convert_file(dst, tmp_path / "again.onnx") == dst
    assert not (tmp_path / "again.onnx").exists()
