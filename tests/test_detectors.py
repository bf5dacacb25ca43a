"""Detector decoders on generated ONNX models whose outputs are hand-built tensors with known
faces (each detector), plus parity of the SCRFD decoder with insightface's SCRFD class."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import require
from onnx import TensorProto, helper, numpy_helper

from streamswap.errors import ConfigError, ModelError
from streamswap.faces.detectors import make_detector
from streamswap.faces.detectors.common import LetterboxInput
from streamswap.faces.settings import DetectorSettings
from streamswap.inference.ort import SessionPool
from streamswap.inference.settings import InferenceSettings

FRAME_W, FRAME_H = 1280, 720  # letterboxed into 640: scale 0.5, content 640×360 at top-left


@pytest.fixture(scope="module")
def pool() -> SessionPool:
    return SessionPool(InferenceSettings(provider="cpu"))


def const_model(
    path: Path,
    input_name: str,
    input_shape: list,
    outputs: list[tuple[str, np.ndarray]],
    declared: dict[str, list] | None = None,
) -> Path:
    """An ONNX model with one (unused) image input whose outputs are the given constants."""
    declared = declared or {}
    nodes, outs = [], []
    for name, value in outputs:
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                value=numpy_helper.from_array(np.asarray(value, np.float32), name=name + "_value"),
            )
        )
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, declared.get(name, list(value.shape))))
    graph = helper.make_graph(
        nodes, "const", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, input_shape)], outs
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def frame() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (FRAME_H, FRAME_W, 3), dtype=np.uint8)


def logit(p: float) -> float:
    return math.log(p / (1 - p))


# --- SCRFD ------------------------------------------------------------------------------

SCRFD_STRIDES = (8, 16, 32)


def scrfd_tensors(size: int, faces: list[dict], batch: bool) -> list[np.ndarray]:
    """9 outputs for input size `size`; each face: stride, cell (x, y), anchor, score, and its
    box and 5 key points in INPUT pixels (converted to distances from the anchor centre)."""
    scores, boxes, kps = [], [], []
    for s in SCRFD_STRIDES:
        n = (size // s) ** 2 * 2
        scores.append(np.full((n, 1), 0.01, np.float32))
        boxes.append(np.ones((n, 4), np.float32))
        kps.append(np.zeros((n, 10), np.float32))
    for f in faces:
        i = SCRFD_STRIDES.index(f["stride"])
        s = f["stride"]
        cx, cy = f["cell"]
        idx = (cy * (size // s) + cx) * 2 + f.get("anchor", 0)
        ax, ay = cx * s, cy * s
        x1, y1, x2, y2 = f["box"]
        scores[i][idx, 0] = f["score"]
        boxes[i][idx] = [(ax - x1) / s, (ay - y1) / s, (x2 - ax) / s, (y2 - ay) / s]
        kps[i][idx] = ((np.asarray(f["kps"], np.float32) - [ax, ay]) / s).reshape(-1)
    out = scores + boxes + kps
    return [o[None] for o in out] if batch else out


def scrfd_model(path: Path, size: int | None, tensors: list[np.ndarray], dynamic: bool = False) -> Path:
    names = [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in SCRFD_STRIDES]
    shape = [1, 3, size, size] if size else [1, 3, "h", "w"]
    declared = {n: ["n"] * t.ndim for n, t in zip(names, tensors)} if dynamic else None
    return const_model(path, "input.1", shape, list(zip(names, tensors)), declared)


def face_at(stride, cell, score, box, anchor=0):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    kps = [
        (x1 + 0.3 * w, y1 + 0.4 * h),
        (x1 + 0.7 * w, y1 + 0.4 * h),
        (x1 + 0.5 * w, y1 + 0.6 * h),
        (x1 + 0.35 * w, y1 + 0.8 * h),
        (x1 + 0.65 * w, y1 + 0.8 * h),
    ]
    return dict(stride=stride, cell=cell, score=score, box=box, kps=kps, anchor=anchor)


@pytest.mark.parametrize("batch", [True, False])
def test_scrfd_decodes_known_faces(tmp_path, pool, batch) -> None:
    faces = [face_at(8, (20, 10), 0.9, (150, 70, 182, 110)), face_at(32, (10, 5), 0.75, (290, 120, 370, 220), anchor=1)]
    path = scrfd_model(tmp_path / "scrfd.onnx", 640, scrfd_tensors(640, faces, batch))
    det = make_detector("scrfd", pool.get(path), DetectorSettings(model="scrfd_2.5g"))
    found = det.detect(frame())
    assert [round(f.score, 4) for f in found] == [0.9, 0.75]
    for got, want in zip(found, faces):
        np.testing.assert_allclose(got.box, np.asarray(want["box"]) * 2, atol=1e-3)
        np.testing.assert_allclose(got.kps, np.asarray(want["kps"]) * 2, atol=1e-3)
        assert got.kps.shape == (5, 2) and got.box.dtype == np.float32


def test_scrfd_dynamic_input_size_and_output_shapes(tmp_path, pool) -> None:
    faces = [face_at(16, (5, 3), 0.8, (60, 30, 110, 90))]
    path = scrfd_model(tmp_path / "dyn.onnx", None, scrfd_tensors(320, faces, True), dynamic=True)
    det = make_detector("scrfd", pool.get(path), DetectorSettings(size=320))
    assert det.size == 320 and det.input.buffer.shape == (1, 3, 320, 320)
    found = det.detect(frame())  # 1280 -> 320: scale 0.25
    np.testing.assert_allclose(found[0].box, np.asarray(faces[0]["box"]) * 4, atol=1e-3)
    for bad in (100, 672, 500):
        with pytest.raises(ConfigError, match="faces.detector.size"):
            make_detector("scrfd", pool.get(path), DetectorSettings(size=bad))
    # Its outputs have the lengths of 320: asking for 640 is refused at construction...
    with pytest.raises(ModelError, match=r"dyn\.onnx.*12800"):
        make_detector("scrfd", pool.get(path), DetectorSettings(size=640))
    # ...and outputs that turn out wrong only at run time are refused then.
    tensors = scrfd_tensors(320, faces, True)
    tensors[4] = tensors[4][:, :-2]
    with pytest.raises(ModelError, match="bbox_16 has shape .* at run time"):
        det.decode(tensors, 0.25, (FRAME_H, FRAME_W, 3))


def test_scrfd_border_zero_and_max_faces(tmp_path, pool) -> None:
    edge = face_at(8, (1, 1), 0.95, (-12, -8, 30, 40))  # sticks out of the top-left corner
    right = face_at(16, (39, 10), 0.9, (600, 140, 660, 200))  # past the frame's right edge
    pad = face_at(32, (5, 15), 0.99, (150, 400, 200, 470))  # inside the letterbox padding only
    path = scrfd_model(tmp_path / "edge.onnx", 640, scrfd_tensors(640, [edge, right, pad], True))
    found = make_detector("scrfd", pool.get(path), DetectorSettings()).detect(frame())
    assert len(found) == 2  # the one entirely in the padding is dropped
    np.testing.assert_allclose(found[0].box, [0, 0, 60, 80], atol=1e-3)
    np.testing.assert_allclose(found[0].kps, np.asarray(edge["kps"]) * 2, atol=1e-3)  # not clipped
    np.testing.assert_allclose(found[1].box, [1200, 280, FRAME_W, 400], atol=1e-3)

    path = scrfd_model(tmp_path / "none.onnx", 640, scrfd_tensors(640, [], False))
    assert make_detector("scrfd", pool.get(path), DetectorSettings()).detect(frame()) == []

    many = [face_at(16, (4 + 6 * i, 4), 0.6 + 0.05 * i, (64 + 96 * i, 40, 120 + 96 * i, 100)) for i in range(6)]
    path = scrfd_model(tmp_path / "many.onnx", 640, scrfd_tensors(640, many, True))
    found = make_detector("scrfd", pool.get(path), DetectorSettings(max_faces=4)).detect(frame())
    assert [round(f.score, 3) for f in found] == [0.85, 0.8, 0.75, 0.7]


def test_scrfd_nms_and_thresholds(tmp_path, pool) -> None:
    a = face_at(8, (20, 10), 0.9, (150, 70, 190, 120))
    b = face_at(8, (21, 10), 0.8, (152, 72, 192, 122))  # IoU ≈ 0.85 with a
    c = face_at(8, (40, 10), 0.45, (310, 70, 350, 120))  # under the score threshold
    path = scrfd_model(tmp_path / "nms.onnx", 640, scrfd_tensors(640, [a, b, c], True))
    session = pool.get(path)
    assert [round(f.score, 2) for f in make_detector("scrfd", session, DetectorSettings()).detect(frame())] == [0.9]
    loose = DetectorSettings(nms_iou=0.95, score_threshold=0.4)
    assert [round(f.score, 2) for f in make_detector("scrfd", session, loose).detect(frame())] == [0.9, 0.8, 0.45]


def test_scrfd_rejects_wrong_models(tmp_path, pool) -> None:
    tensors = scrfd_tensors(640, [], True)
    six = const_model(tmp_path / "six.onnx", "x", [1, 3, 640, 640], [(f"o{i}", t) for i, t in enumerate(tensors[:6])])
    with pytest.raises(ModelError, match=r"six\.onnx.*expected 9 outputs"):
        make_detector("scrfd", pool.get(six), DetectorSettings())
    swapped = tensors[3:6] + tensors[:3] + tensors[6:]
    bad = const_model(tmp_path / "swapped.onnx", "x", [1, 3, 640, 640], [(f"o{i}", t) for i, t in enumerate(swapped)])
    with pytest.raises(ModelError, match=r"swapped\.onnx"):
        make_detector("scrfd", pool.get(bad), DetectorSettings())
    gray = const_model(tmp_path / "gray.onnx", "x", [1, 1, 640, 640], [(f"o{i}", t) for i, t in enumerate(tensors)])
    with pytest.raises(ModelError, match="channels"):
        make_detector("scrfd", pool.get(gray), DetectorSettings())
    with pytest.raises(ModelError, match="must be one of"):
        make_detector("retinanet", pool.get(gray), DetectorSettings())


def test_letterbox_input_is_preallocated_and_normalised() -> None:
    box = LetterboxInput(64, mean=127.5, scale=1 / 128, rgb=True)
    buffer = box.buffer
    img = np.zeros((32, 64, 3), np.uint8)
    img[..., 0], img[..., 2] = 10, 200  # B, R
    assert box.fill(img) == 1.0
    assert box.buffer is buffer
    np.testing.assert_allclose(buffer[0, 0, :32], (200 - 127.5) / 128)  # R plane first
    np.testing.assert_allclose(buffer[0, 2, :32], (10 - 127.5) / 128)
    np.testing.assert_allclose(buffer[0, :, 32:], -127.5 / 128)  # padding = black
    tall = np.full((128, 32, 3), 255, np.uint8)
    assert box.fill(tall) == 0.5 and box.buffer is buffer
    np.testing.assert_allclose(buffer[0, :, :, :16], (255 - 127.5) / 128)
    np.testing.assert_allclose(buffer[0, :, :, 16:], -127.5 / 128)  # old content cleared
    resized = box._resized
    darker = np.full((128, 32, 3), 100, np.uint8)
    assert box.fill(darker) == 0.5 and box._resized is resized  # no new resize buffer per frame
    np.testing.assert_allclose(buffer[0, :, :, :16], (100 - 127.5) / 128)


def test_scrfd_parity_with_insightface(tmp_path, pool) -> None:
    """Same outputs through insightface's SCRFD and ours: same faces to 1e-3 px after NMS."""
    require(importlib.util.find_spec("insightface") is not None, "insightface (the SCRFD reference)")
    from insightface.model_zoo import scrfd as scrfd_mod

    rng = np.random.default_rng(7)
    faces, used = [], set()
    for k in range(60):
        stride = SCRFD_STRIDES[k % 3]
        cells = 640 // stride
        while True:  # anchors inside the 640×360 content area, each slot used once
            cell = (int(rng.integers(1, cells - 1)), int(rng.integers(1, 360 // stride - 1)))
            anchor = int(rng.integers(0, 2))
            if (stride, cell, anchor) not in used:
                used.add((stride, cell, anchor))
                break
        ax, ay = cell[0] * stride, cell[1] * stride
        half = rng.uniform(0.6, 2.5, 4) * stride
        box = (max(ax - half[0], 1), max(ay - half[1], 1), min(ax + half[2], 639), min(ay + half[3], 359))
        f = face_at(stride, cell, float(rng.uniform(0.3, 0.99)), box, anchor)
        f["kps"] = [(x + rng.normal(0, 2), y + rng.normal(0, 2)) for x, y in f["kps"]]
        faces.append(f)
    for batch in (True, False):
        path = scrfd_model(tmp_path / f"parity_{batch}.onnx", 640, scrfd_tensors(640, faces, batch))
        ref = scrfd_mod.SCRFD(model_file=str(path))
        ref.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
        img = frame()
        ref_det, ref_kps = ref.detect(img)
        ours = make_detector(
            "scrfd", pool.get(path), DetectorSettings(score_threshold=0.5, nms_iou=0.4, max_faces=64)
        ).detect(img)
        above = sum(f["score"] >= 0.5 for f in faces)
        assert 5 < len(ours) < above, "the generated faces should exercise the threshold and NMS"
        assert len(ours) == len(ref_det)
        np.testing.assert_allclose(np.stack([f.box for f in ours]), ref_det[:, :4], atol=1e-3)
        np.testing.assert_allclose(np.stack([f.kps for f in ours]), ref_kps, atol=1e-3)
        np.testing.assert_allclose([f.score for f in ours], ref_det[:, 4], atol=1e-6)


# --- YOLOFace ---------------------------------------------------------------------------


def yolo_tensor(faces: list[dict], batch: bool = True, anchors: int = 8400) -> np.ndarray:
    out = np.zeros((20, anchors), np.float32)
    out[4] = 0.02
    for j, f in enumerate(faces):
        x1, y1, x2, y2 = f["box"]
        col = 100 + 37 * j
        out[:5, col] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1, f["score"]]
        for k, (x, y) in enumerate(f["kps"]):
            out[5 + 3 * k : 8 + 3 * k, col] = [x, y, 0.9]
    return out[None] if batch else out


def test_yoloface_decodes_known_faces_border_zero_and_limit(tmp_path, pool) -> None:
    a = face_at(8, (0, 0), 0.9, (100, 50, 160, 130))
    b = face_at(8, (0, 0), 0.7, (-20, 300, 40, 380))  # off the left edge, near the bottom
    path = const_model(tmp_path / "yolo.onnx", "images", [1, 3, 640, 640], [("output0", yolo_tensor([a, b]))])
    det = make_detector("yoloface", pool.get(path), DetectorSettings(model="yoloface_8n"))
    found = det.detect(frame())
    assert [round(f.score, 3) for f in found] == [0.9, 0.7]
    np.testing.assert_allclose(found[0].box, np.asarray(a["box"]) * 2, atol=1e-3)
    np.testing.assert_allclose(found[0].kps, np.asarray(a["kps"]) * 2, atol=1e-3)
    np.testing.assert_allclose(found[1].box, [0, 600, 80, FRAME_H], atol=1e-3)
    expected = cv2.resize(frame(), (640, 360)).transpose(2, 0, 1) / 255.0  # BGR planes, x/255
    np.testing.assert_allclose(det.input.buffer[0, :, :360], expected, atol=1e-6)
    assert not det.input.buffer[0, :, 360:].any()
    # Without a batch axis, zero faces, more faces than allowed.
    path = const_model(tmp_path / "yolo2.onnx", "images", [1, 3, 640, 640], [("output0", yolo_tensor([], False))])
    assert make_detector("yoloface", pool.get(path), DetectorSettings()).detect(frame()) == []
    many = [face_at(8, (0, 0), 0.5 + 0.08 * i, (20 + 100 * i, 20, 80 + 100 * i, 90)) for i in range(5)]
    path = const_model(tmp_path / "yolo3.onnx", "images", [1, 3, 640, 640], [("output0", yolo_tensor(many, False))])
    found = make_detector("yoloface", pool.get(path), DetectorSettings(max_faces=2)).detect(frame())
    assert [round(f.score, 2) for f in found] == [0.82, 0.74]
    wrong = const_model(
        tmp_path / "yolo4.onnx", "images", [1, 3, 640, 640], [("o", np.zeros((1, 16, 8400), np.float32))]
    )
    with pytest.raises(ModelError, match=r"yolo4\.onnx"):
        make_detector("yoloface", pool.get(wrong), DetectorSettings())


# --- YuNet ------------------------------------------------------------------------------


def yunet_tensors(size: int, faces: list[dict]) -> list[tuple[str, np.ndarray]]:
    """12 named outputs; each face: stride, cell, cls, obj, box centre/size and key points
    in input pixels (encoded the way YuNet's head does)."""
    out = {}
    for s in SCRFD_STRIDES:
        n = (size // s) ** 2
        out[f"cls_{s}"] = np.full((1, n, 1), 0.05, np.float32)
        out[f"obj_{s}"] = np.full((1, n, 1), 0.05, np.float32)
        out[f"bbox_{s}"] = np.zeros((1, n, 4), np.float32)
        out[f"kps_{s}"] = np.zeros((1, n, 10), np.float32)
    for f in faces:
        s, (col, row) = f["stride"], f["cell"]
        idx = row * (size // s) + col
        x1, y1, x2, y2 = f["box"]
        out[f"cls_{s}"][0, idx, 0], out[f"obj_{s}"][0, idx, 0] = f["cls"], f["obj"]
        out[f"bbox_{s}"][0, idx] = [
            (x1 + x2) / 2 / s - col,
            (y1 + y2) / 2 / s - row,
            math.log((x2 - x1) / s),
            math.log((y2 - y1) / s),
        ]
        out[f"kps_{s}"][0, idx] = (np.asarray(f["kps"]) / s - [col, row]).reshape(-1)
    order = [f"{k}_{s}" for k in ("cls", "obj", "bbox", "kps") for s in SCRFD_STRIDES]
    return [(name, out[name]) for name in reversed(order)]  # stored in another order: matched by name


def test_yunet_decodes_known_faces_border_zero_and_limit(tmp_path, pool) -> None:
    a = face_at(16, (10, 6), 0, (140, 80, 200, 150)) | {"cls": 0.9, "obj": 0.8}
    b = face_at(32, (19, 2), 0, (600, 40, 680, 130)) | {"cls": 0.7, "obj": 0.7}  # past the right edge
    weak = face_at(8, (30, 30), 0, (230, 230, 260, 260)) | {"cls": 0.9, "obj": 0.2}  # √0.18 < 0.5
    path = const_model(tmp_path / "yunet.onnx", "input", [1, 3, 640, 640], yunet_tensors(640, [a, b, weak]))
    det = make_detector("yunet", pool.get(path), DetectorSettings(model="yunet_2023_mar"))
    found = det.detect(frame())
    assert [round(f.score, 4) for f in found] == [round(math.sqrt(0.72), 4), 0.7]
    np.testing.assert_allclose(found[0].box, np.asarray(a["box"]) * 2, atol=1e-3)
    np.testing.assert_allclose(found[0].kps, np.asarray(a["kps"]) * 2, atol=1e-3)
    np.testing.assert_allclose(found[1].box, [1200, 80, FRAME_W, 260], atol=1e-3)
    assert det.input.buffer.max() > 200  # raw 0–255 input
    path = const_model(tmp_path / "yunet0.onnx", "input", [1, 3, 640, 640], yunet_tensors(640, []))
    assert make_detector("yunet", pool.get(path), DetectorSettings()).detect(frame()) == []
    many = [
        face_at(16, (3 + 5 * i, 3), 0, (40 + 80 * i, 40, 90 + 80 * i, 100)) | {"cls": 0.6 + 0.05 * i, "obj": 1.0}
        for i in range(6)
    ]
    path = const_model(tmp_path / "yunet6.onnx", "input", [1, 3, 640, 640], yunet_tensors(640, many))
    found = make_detector("yunet", pool.get(path), DetectorSettings(max_faces=3)).detect(frame())
    assert len(found) == 3 and [round(f.score**2, 2) for f in found] == [0.85, 0.8, 0.75]


# --- BlazeFace --------------------------------------------------------------------------


def blaze_tensors(faces: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Regressors/logits; each face: grid cell, probability, box and 6 points in input pixels."""
    reg = np.zeros((1, 2304, 16), np.float32)
    logits = np.full((1, 2304, 1), -8.0, np.float32)
    for f in faces:
        gx, gy = f["cell"]
        idx = gy * 48 + gx
        ax, ay = (gx + 0.5) * 4, (gy + 0.5) * 4
        x1, y1, x2, y2 = f["box"]
        reg[0, idx, :4] = [(x1 + x2) / 2 - ax, (y1 + y2) / 2 - ay, x2 - x1, y2 - y1]
        reg[0, idx, 4:] = (np.asarray(f["points"]) - [ax, ay]).reshape(-1)
        logits[0, idx, 0] = logit(f["score"])
    return reg, logits


def blaze_face(cell, score, box):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    points = [
        (x1 + 0.3 * w, y1 + 0.35 * h),
        (x1 + 0.7 * w, y1 + 0.35 * h),
        (x1 + 0.5 * w, y1 + 0.55 * h),
        (x1 + 0.5 * w, y1 + 0.78 * h),
        (x1 - 0.05 * w, y1 + 0.4 * h),
        (x2 + 0.05 * w, y1 + 0.4 * h),
    ]
    return dict(cell=cell, score=score, box=box, points=points)


def blaze_model(path: Path, faces: list[dict]) -> Path:
    reg, logits = blaze_tensors(faces)
    return const_model(
        path, "input", [1, 3, 192, 192], [("reshaped_regressor_face_4", reg), ("reshaped_classifier_face_4", logits)]
    )


def test_blazeface_decodes_known_faces_with_weighted_nms(tmp_path, pool) -> None:
    a = blaze_face((10, 8), 0.9, (30, 20, 60, 56))
    a2 = blaze_face((11, 8), 0.6, (34, 24, 64, 60))  # overlaps a: merged, weighted by score
    b = blaze_face((30, 20), 0.8, (110, 70, 140, 96))
    path = blaze_model(tmp_path / "bf.onnx", [a, a2, b])
    det = make_detector("blazeface", pool.get(path), DetectorSettings(nms_iou=0.3))
    found = det.detect(frame())  # 1280×720 -> 192: scale 0.15
    assert [round(f.score, 4) for f in found] == [0.9, 0.8]
    merged = (0.9 * np.asarray(a["box"]) + 0.6 * np.asarray(a2["box"])) / 1.5
    np.testing.assert_allclose(found[0].box, merged / 0.15, atol=1e-2)
    np.testing.assert_allclose(found[1].box, np.asarray(b["box"]) / 0.15, atol=1e-2)
    pts = np.asarray(b["points"]) / 0.15
    np.testing.assert_allclose(found[1].kps[:3], pts[:3], atol=1e-2)
    np.testing.assert_allclose(found[1].kps[[3, 4]].mean(axis=0), pts[3], atol=1e-2)  # corners around the mouth centre
    mouth_w = found[1].kps[4, 0] - found[1].kps[3, 0]
    assert mouth_w == pytest.approx(0.828 * (pts[1, 0] - pts[0, 0]), rel=1e-3)
    np.testing.assert_allclose(found[1].extra["blazeface_points"], pts, atol=1e-2)
    # Greedy-enough threshold keeps the overlapping pair apart.
    apart = make_detector("blazeface", pool.get(path), DetectorSettings(nms_iou=0.9)).detect(frame())
    assert len(apart) == 3


@pytest.mark.parametrize("nms_iou,count", [(0.45, 2), (0.5, 3), (0.54, 4)])
def test_blazeface_weighted_nms_merges_exactly_above_the_configured_iou(tmp_path, pool, nms_iou, count) -> None:
    """Two pairs of 40-px boxes, IoU 0.538 (shifted 12 px) and 0.455 (15 px): a pair is one
    face when its IoU is above faces.detector.nms_iou, two faces below it. Pins the
    threshold the decoder passes and the side of it that merges."""
    pairs = [((20, 20, 60, 60), (32, 20, 72, 60)), ((100, 20, 140, 60), (115, 20, 155, 60))]
    faces = []
    for k, (best, other) in enumerate(pairs):
        faces += [blaze_face((5 + 20 * k, 10), 0.9, best), blaze_face((6 + 20 * k, 10), 0.7, other)]
    path = blaze_model(tmp_path / "pairs.onnx", faces)
    found = make_detector("blazeface", pool.get(path), DetectorSettings(nms_iou=nms_iou)).detect(frame())
    assert len(found) == count
    if count == 3:  # the 0.538 pair merged (score-weighted), the 0.455 pair kept apart
        merged = (0.9 * np.asarray(pairs[0][0]) + 0.7 * np.asarray(pairs[0][1])) / 1.6
        boxes = sorted(tuple(np.round(f.box * 0.15, 2)) for f in found)
        assert boxes[0] == pytest.approx(tuple(merged), abs=0.01)
        assert boxes[1:] == [pytest.approx(pairs[1][0], abs=0.01), pytest.approx(pairs[1][1], abs=0.01)]


def test_blazeface_border_zero_and_max_faces(tmp_path, pool) -> None:
    edge = blaze_face((1, 1), 0.9, (-6, -4, 20, 24))
    pad = blaze_face((20, 40), 0.95, (70, 140, 100, 170))  # below the 108-px content: padding only
    path = blaze_model(tmp_path / "edge.onnx", [edge, pad])
    found = make_detector("blazeface", pool.get(path), DetectorSettings()).detect(frame())
    assert len(found) == 1
    np.testing.assert_allclose(found[0].box, [0, 0, 20 / 0.15, 24 / 0.15], atol=1e-2)
    assert found[0].kps[:, 0].min() < 0 or found[0].extra["blazeface_points"][:, 0].min() < 0
    assert (
        make_detector("blazeface", pool.get(blaze_model(tmp_path / "z.onnx", [])), DetectorSettings()).detect(frame())
        == []
    )
    many = [blaze_face((4 + 8 * i, 10), 0.55 + 0.07 * i, (10 + 30 * i, 30, 30 + 30 * i, 55)) for i in range(6)]
    found = make_detector(
        "blazeface", pool.get(blaze_model(tmp_path / "m.onnx", many)), DetectorSettings(max_faces=2)
    ).detect(frame())
    assert [round(f.score, 2) for f in found] == [0.9, 0.83]


def test_detector_sort_is_deterministic_on_ties(tmp_path, pool) -> None:
    # Equal scores: ordered by x, then y.
    faces = [
        blaze_face((30, 10), 0.8, (110, 30, 130, 50)),
        blaze_face((5, 20), 0.8, (10, 70, 30, 90)),
        blaze_face((5, 5), 0.8, (10, 10, 30, 30)),
    ]
    found = make_detector("blazeface", pool.get(blaze_model(tmp_path / "t.onnx", faces)), DetectorSettings()).detect(
        frame()
    )
    assert [tuple(np.round(f.box[:2] * 0.15)) for f in found] == [(10, 10), (10, 70), (110, 30)]
