"""Small generated ONNX models with the public I/O contracts of the real ones (inswapper,
hyperswap, simswap/ghost, crossface converters, ArcFace, GFPGAN, SCRFD). The generators do
cheap arithmetic, not face synthesis: benchmarks and tests use them to exercise the
adapters' pre/post-processing, batching and paste-back end to end without the real weights.

Where a benchmark needs the COST of a real network (`streamswap bench anchor`), a
`tower` of 3×3 convolutions (`ConvPlan`) is added whose result is multiplied by zero and
added to an output: ONNX Runtime computes it (it does not fold x·0 away), the outputs stay
those of the cheap arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

OPSET = 13

# A conv tower: (output channels, stride) of each 3×3 conv + ReLU, in order.
ConvPlan = Sequence[tuple[int, int]]


def conv_tower_macs(plan: ConvPlan, size: int, channels: int = 3) -> int:
    """Multiply-accumulates of `plan` on a channels×size×size input (FLOPs ≈ 2 × MACs)."""
    macs = 0
    for c_out, stride in plan:
        size = (size + stride - 1) // stride
        macs += size * size * c_out * channels * 9
        channels = c_out
    return macs


def _conv_tower(nodes: list, inits: list, x: str, plan: ConvPlan, channels: int, prefix: str) -> str:
    """Append `plan`'s convs on `x` (N×channels×S×S); returns a tensor of zeros (shape N) that
    depends on every conv (its mean × 0, shape N), to add to an output so nothing is pruned."""
    from onnx import numpy_helper

    rng = np.random.default_rng(7)
    prev = x
    for i, (c_out, stride) in enumerate(plan):
        w = (rng.standard_normal((c_out, channels, 3, 3)) * np.sqrt(2 / (9 * channels))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{prefix}w{i}"))
        inits.append(numpy_helper.from_array(np.zeros(c_out, np.float32), f"{prefix}b{i}"))
        nodes.append(
            helper_node(
                "Conv",
                [prev, f"{prefix}w{i}", f"{prefix}b{i}"],
                [f"{prefix}c{i}"],
                kernel_shape=[3, 3],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
        )
        nodes.append(helper_node("Relu", [f"{prefix}c{i}"], [f"{prefix}r{i}"]))
        prev, channels = f"{prefix}r{i}", c_out
    inits.append(numpy_helper.from_array(np.array(0.0, np.float32), f"{prefix}zero"))
    nodes.append(helper_node("ReduceMean", [prev], [f"{prefix}mean"], axes=[1, 2, 3], keepdims=0))
    nodes.append(helper_node("Mul", [f"{prefix}mean", f"{prefix}zero"], [f"{prefix}nothing"]))
    return f"{prefix}nothing"


def helper_node(op: str, inputs: list[str], outputs: list[str], **attrs):
    from onnx import helper

    return helper.make_node(op, inputs, outputs, **attrs)


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
    tower: ConvPlan = (),
) -> Path:
    """An inswapper-shaped generator: inputs `target` N×3×S×S and `source` N×latent, one
    output N×3×S×S. The graph carries `emap` (latent×latent) as its LAST initializer and
    uses it (source · emap, scaled by 0, is added to the output) so it is not pruned.

    mode: "invert" (1 − target), "identity" (target) or "constant" (every value `constant`).
    `tower`: convs on the target that cost what a real generator costs (result × 0).
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
        numpy_helper.from_array(
            np.array(1.0 if mode in ("invert", "identity") else constant, dtype=np.float32), "const"
        ),
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
        inits[:0] = [
            numpy_helper.from_array(np.array([0], np.int64), "c0"),
            numpy_helper.from_array(np.array([3], np.int64), "c3"),
            numpy_helper.from_array(np.array([1], np.int64), "c_axis"),
        ]
        image = "t3"
    else:
        image = target_name
    if mode == "invert":
        nodes.append(helper.make_node("Sub", ["const", image], ["body"]))
    elif mode == "identity":
        nodes.append(helper.make_node("Mul", [image, "const"], ["body"]))
    elif mode == "constant":
        nodes += [
            helper.make_node("Mul", [image, "zero"], ["zeros"]),
            helper.make_node("Add", ["zeros", "const"], ["body"]),
        ]
    else:
        raise ValueError(f"unknown mode {mode!r}")
    if tower:
        cost = _conv_tower(nodes, inits, image, tower, 3, "tower_")
        nodes.append(helper.make_node("Add", ["bias", cost], ["bias_t"]))
        nodes.append(helper.make_node("Add", ["body", "bias_t"], [output_name]))
    else:
        nodes.append(helper.make_node("Add", ["body", "bias"], [output_name]))
    if tower:  # emap stays the LAST initializer, as in inswapper
        emap_init = next(i for i in inits if i.name == "emap")
        inits.remove(emap_init)
        inits.append(emap_init)
    graph = helper.make_graph(nodes, "swapper", [target, source], [output], initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def make_converter_model(path: str | Path, *, weight: np.ndarray | None = None, input_name: str = "input") -> Path:
    """A crossface-shaped converter: `input` N×512 → N×512 (input · weight)."""
    from onnx import TensorProto, helper, numpy_helper

    if weight is None:
        weight = np.random.default_rng(1).standard_normal((512, 512)).astype(np.float32) / np.sqrt(512)
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 512])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 512])
    graph = helper.make_graph(
        [helper.make_node("MatMul", [input_name, "w"], ["output"])],
        "converter",
        [x],
        [y],
        initializer=[numpy_helper.from_array(weight.astype(np.float32), "w")],
    )
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


def make_facemesh_model(path: str | Path, *, size: int = 192) -> Path:
    """A FaceMesh-shaped landmarker: `input` N×3×192×192 → `mesh` N×1404×1×1 (a fixed
    frontal face: eye contours, nose tip and mouth corners where a level face's are, every
    other point on the face oval) and `flag` N×1×1×1 (presence logit 5: a face). The input
    is read (its mean, times 0) so the graph depends on it."""
    from onnx import TensorProto, helper, numpy_helper

    from streamswap.faces.landmarks import FIRST_MOUTH_CORNER, SECOND_MOUTH_CORNER
    from streamswap.faces.mesh_topology import LEFT_EYE, NOSE_TIP, NUM_LANDMARKS, RIGHT_EYE

    angles = np.linspace(0, 2 * np.pi, NUM_LANDMARKS, endpoint=False)
    points = np.stack([0.5 + 0.3 * np.cos(angles), 0.5 + 0.36 * np.sin(angles), np.zeros_like(angles)], axis=1)
    for contour, cx in ((RIGHT_EYE, 0.38), (LEFT_EYE, 0.62)):  # RIGHT_EYE: the subject's, image-left
        ring = np.linspace(0, 2 * np.pi, len(contour), endpoint=False)
        points[list(contour), 0] = cx + 0.03 * np.cos(ring)
        points[list(contour), 1] = 0.42 + 0.015 * np.sin(ring)
    points[NOSE_TIP] = (0.5, 0.55, -0.05)
    points[FIRST_MOUTH_CORNER] = (0.4, 0.68, 0.0)
    points[SECOND_MOUTH_CORNER] = (0.6, 0.68, 0.0)
    mesh = (points * size).astype(np.float32).reshape(1, NUM_LANDMARKS * 3, 1, 1)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])
    outputs = [
        helper.make_tensor_value_info("mesh", TensorProto.FLOAT, ["N", NUM_LANDMARKS * 3, 1, 1]),
        helper.make_tensor_value_info("flag", TensorProto.FLOAT, ["N", 1, 1, 1]),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["nothing", "points"], ["mesh"]),
        helper.make_node("Add", ["nothing", "logit"], ["flag"]),
    ]
    inits = [
        numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        numpy_helper.from_array(mesh, "points"),
        numpy_helper.from_array(np.full((1, 1, 1, 1), 5.0, np.float32), "logit"),
    ]
    graph = helper.make_graph(nodes, "facemesh", [x], outputs, initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def make_enhancer_model(path: str | Path, *, size: int = 512, batch_dynamic: bool = False) -> Path:
    """A GFPGAN-shaped enhancer: `input` N×3×512×512 → N×3×512×512 (−input, a visible change)."""
    from onnx import TensorProto, helper

    batch = "N" if batch_dynamic else 1
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])
    graph = helper.make_graph([helper.make_node("Neg", ["input"], ["output"])], "enhancer", [x], [y])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


# SCRFD's 5 key points as fractions of a face box centred on 0 (left eye, right eye, nose,
# left and right mouth corner): ArcFace's 112 template, centred, for a box ~1.25× the crop.
_FACE_POINTS = (
    np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]], np.float32
    )
    / 112
    - 0.5
) * 0.8


def make_marker_scrfd_model(
    path: str | Path, *, size: int = 640, tower: ConvPlan = (), prior_side: float = 400.0
) -> Path:
    """An SCRFD-shaped detector (input `input.1` 1×3×S×S normalised RGB, the 9 outputs
    score/bbox/kps for strides 8, 16, 32 without a batch axis) that "finds" one face: the
    square drawn by a pure green frame (`draw_marker_frame`), from the centroid and spread
    of its green pixels. Without green pixels it finds a face of `prior_side` input pixels
    in the middle of the input. `tower` adds the compute of a real detector (result × 0).

    The face comes out of the stride-32 anchor at (0, 0) (box = centre ∓ distance·32)."""
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])
    rows = {s: (size // s) ** 2 * 2 for s in (8, 16, 32)}
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    widths = {"score": 1, "bbox": 4, "kps": 10}
    outputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [rows[int(n.split("_")[1])], widths[n.split("_")[0]]])
        for n in names
    ]
    eps = 1e-3  # pixel mass of the prior (a frame has thousands of green pixels)
    centre = size / 2
    prior_var = prior_side**2 / 6  # a thin square outline of side L: variance of x is L²/6
    coords = np.arange(size, dtype=np.float32)
    # [cx, cy, half, 1] → bbox distances / kps offsets of the anchor at (0, 0), stride 32.
    to_bbox = np.array([[-1, 0, 1, 0], [0, -1, 1, 0], [1, 0, 1, 0], [0, 1, 1, 0]], np.float32).T / 32
    to_kps = np.zeros((4, 10), np.float32)  # divided by the stride below
    for i, (fx, fy) in enumerate(_FACE_POINTS):
        to_kps[:, 2 * i] = [1, 0, 2 * fx, 0]
        to_kps[:, 2 * i + 1] = [0, 1, 2 * fy, 0]
    to_kps /= 32
    onehot = np.zeros((rows[32], 1), np.float32)
    onehot[0, 0] = 1
    inits = [
        # green minus the mean of red and blue, minus a threshold (input is (x − 127.5)/128)
        numpy_helper.from_array(np.array([-0.5, 1.0, -0.5], np.float32).reshape(1, 3, 1, 1), "green_w"),
        numpy_helper.from_array(np.array([-0.5], np.float32), "green_b"),
        numpy_helper.from_array(coords.reshape(size, 1), "xs"),
        numpy_helper.from_array((coords**2).reshape(size, 1), "xs2"),
        numpy_helper.from_array(np.array([2], np.int64), "ax_h"),
        numpy_helper.from_array(np.array([3], np.int64), "ax_w"),
        numpy_helper.from_array(np.array(eps, np.float32), "eps"),
        numpy_helper.from_array(np.array(eps * centre, np.float32), "prior_s"),
        numpy_helper.from_array(np.array(eps * (centre**2 + prior_var), np.float32), "prior_ss"),
        numpy_helper.from_array(np.array(6.0, np.float32), "six"),
        numpy_helper.from_array(np.array(0.125, np.float32), "eighth"),
        numpy_helper.from_array(np.array([1, 1], np.int64), "shape11"),
        numpy_helper.from_array(np.array(1.0, np.float32), "min_var"),
        numpy_helper.from_array(np.ones((1, 1), np.float32), "one"),
        numpy_helper.from_array(to_bbox, "to_bbox"),
        numpy_helper.from_array(to_kps, "to_kps"),
        numpy_helper.from_array(onehot, "onehot"),
    ]
    nodes = [
        helper.make_node("Conv", ["input.1", "green_w", "green_b"], ["green_raw"]),
        helper.make_node("Relu", ["green_raw"], ["mask"]),  # 1×1×S×S
        helper.make_node("ReduceSum", ["mask", "ax_h"], ["cols"], keepdims=0),  # 1×1×S (per x)
        helper.make_node("ReduceSum", ["mask", "ax_w"], ["rows"], keepdims=0),  # 1×1×S (per y)
        helper.make_node("ReduceSum", ["cols"], ["mass_raw"], keepdims=0),
        helper.make_node("Add", ["mass_raw", "eps"], ["mass"]),
    ]
    for axis, profile in (("x", "cols"), ("y", "rows")):
        nodes += [
            helper.make_node("MatMul", [profile, "xs"], [f"s_{axis}"]),  # 1×1×1
            helper.make_node("MatMul", [profile, "xs2"], [f"ss_{axis}"]),
            helper.make_node("Add", [f"s_{axis}", "prior_s"], [f"sp_{axis}"]),
            helper.make_node("Add", [f"ss_{axis}", "prior_ss"], [f"ssp_{axis}"]),
            helper.make_node("Div", [f"sp_{axis}", "mass"], [f"c_{axis}"]),
            helper.make_node("Div", [f"ssp_{axis}", "mass"], [f"m2_{axis}"]),
            helper.make_node("Mul", [f"c_{axis}", f"c_{axis}"], [f"c2_{axis}"]),
            helper.make_node("Sub", [f"m2_{axis}", f"c2_{axis}"], [f"var_{axis}"]),
        ]
    nodes += [
        helper.make_node("Add", ["var_x", "var_y"], ["var2"]),
        helper.make_node("Mul", ["var2", "six"], ["var6_2"]),
        helper.make_node("Max", ["var6_2", "min_var"], ["var_pos"]),
        # a square outline of side L has variance L²/6 per axis: var_pos = 2·L², half = √(var_pos/8)
        helper.make_node("Mul", ["var_pos", "eighth"], ["half_sq"]),
        helper.make_node("Sqrt", ["half_sq"], ["half"]),
    ]
    nodes += [
        helper.make_node("Reshape", ["c_x", "shape11"], ["cx"]),
        helper.make_node("Reshape", ["c_y", "shape11"], ["cy"]),
        helper.make_node("Reshape", ["half", "shape11"], ["hs"]),
        helper.make_node("Concat", ["cx", "cy", "hs", "one"], ["v"], axis=1),  # 1×4
        helper.make_node("MatMul", ["v", "to_bbox"], ["bbox_row"]),
        helper.make_node("MatMul", ["v", "to_kps"], ["kps_row"]),
        helper.make_node("MatMul", ["onehot", "bbox_row"], ["bbox_face"]),
        helper.make_node("MatMul", ["onehot", "kps_row"], ["kps_face"]),
    ]
    base = {}
    for s, n in rows.items():
        score = np.full((n, 1), 0.01, np.float32)
        if s == 32:
            score[0, 0] = 0.9
        base[f"score_{s}"], base[f"bbox_{s}"], base[f"kps_{s}"] = (
            score,
            np.zeros((n, 4), np.float32),
            np.zeros((n, 10), np.float32),
        )
    for name, value in base.items():
        inits.append(numpy_helper.from_array(value, f"base_{name}"))
    cost = _conv_tower(nodes, inits, "input.1", tower, 3, "tower_") if tower else None
    extras = {"bbox_32": ["bbox_face"], "kps_32": ["kps_face"], "score_8": [cost] if cost else []}
    for name in names:
        current = f"base_{name}"  # the tensor the next term is added to
        terms = extras.get(name, [])
        if not terms:
            nodes.append(helper.make_node("Identity", [current], [name]))
        for i, term in enumerate(terms):
            out = name if i == len(terms) - 1 else f"{name}_{i}"
            nodes.append(helper.make_node("Add", [current, term], [out]))
            current = out
    graph = helper.make_graph(nodes, "scrfd_marker", [x], outputs, initializer=inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def make_fixed_scrfd_model(
    path: str | Path, boxes: Sequence[tuple[float, float, float, float]], size: int = 640
) -> Path:
    """An SCRFD-shaped detector (input `input.1` 1×3×S×S, the 9 score/bbox/kps outputs)
    that "finds" the same faces in every image: `boxes` (x1, y1, x2, y2 in input pixels,
    each on its own stride-32 anchor), with the 5 key points of `_FACE_POINTS` inside. For benchmarks whose frames draw faces at known places."""
    from onnx import TensorProto, helper, numpy_helper

    cells = size // 32
    outputs: dict[str, np.ndarray] = {}
    for s in (8, 16, 32):
        n = (size // s) ** 2 * 2
        outputs[f"score_{s}"] = np.full((n, 1), 0.01, np.float32)
        outputs[f"bbox_{s}"] = np.ones((n, 4), np.float32)
        outputs[f"kps_{s}"] = np.zeros((n, 10), np.float32)
    used: set[int] = set()
    for x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        col, row = min(max(int(cx // 32), 0), cells - 1), min(max(int(cy // 32), 0), cells - 1)
        index = (row * cells + col) * 2 + (1 if (row * cells + col) * 2 in used else 0)
        if index in used:
            raise ValueError(f"two faces on the stride-32 cell at ({col}, {row}): move them apart")
        used.add(index)
        ax, ay = col * 32.0, row * 32.0
        side = max(x2 - x1, y2 - y1)
        points = np.array([cx, cy], np.float32) + _FACE_POINTS * side * 1.25
        outputs["score_32"][index, 0] = 0.9
        outputs["bbox_32"][index] = [(ax - x1) / 32, (ay - y1) / 32, (x2 - ax) / 32, (y2 - ay) / 32]
        outputs["kps_32"][index] = ((points - [ax, ay]) / 32).reshape(-1)
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(outputs[name], f"{name}_value"))
        for name in names
    ]
    graph = helper.make_graph(
        nodes,
        "scrfd_fixed",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(outputs[n].shape)) for n in names],
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), Path(path))


def draw_marker_frame(image: np.ndarray, width: int) -> np.ndarray:
    """`image` (BGR) with a pure green frame `width` pixels wide drawn over its border: the
    face `make_marker_scrfd_model` finds is the square this frame outlines."""
    out = image.copy()
    out[:width], out[-width:], out[:, :width], out[:, -width:] = (0, 255, 0), (0, 255, 0), (0, 255, 0), (0, 255, 0)
    return out
