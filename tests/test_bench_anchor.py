"""`streamswap bench anchor`'s generated work: the same clip and models every time, with
the public I/O contracts and the compute the benchmark claims."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np
import onnx
import pytest

from streamswap.bench import anchor_media as media
from streamswap.bench import synthetic


def test_clip_is_deterministic_and_has_video_and_audio(tmp_path: Path) -> None:
    from conftest import require

    require(importlib.util.find_spec("skimage") is not None, "scikit-image (pip install 'streamswap[demo]')")
    a = media.make_clip(tmp_path / "a.mp4", seconds=0.3)
    b = media.make_clip(tmp_path / "b.mp4", seconds=0.3)
    assert media.sha256(a) == media.sha256(b)
    with av.open(str(a)) as c:
        video, audio = c.streams.video[0], c.streams.audio[0]
        assert (video.width, video.height, video.average_rate) == (1280, 720, 30)
        assert audio.codec_context.name == "aac" and audio.sample_rate == 48000
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(frames) == 9
    x, y = media.face_position(8)  # the photo moves, and is where the path says
    assert media.face_position(0) != (x, y)
    green = frames[8][y + 2, x + media.FACE_SIDE // 2]
    assert green[1] > 200 and green[0] < 60 and green[2] < 60


def test_marker_detector_finds_the_moving_face(tmp_path: Path) -> None:
    from streamswap.faces.detectors import make_detector
    from streamswap.faces.settings import DetectorSettings
    from streamswap.inference.ort import open_ort_session
    from streamswap.inference.settings import InferenceSettings

    model = synthetic.make_marker_scrfd_model(tmp_path / "det.onnx")  # no tower: fast
    detector = make_detector(
        "scrfd", open_ort_session(model, InferenceSettings(provider="cpu")), DetectorSettings(model="scrfd_2.5g")
    )
    photo = synthetic.draw_marker_frame(np.full((media.FACE_SIDE,) * 2 + (3,), 170, np.uint8), media.MARKER)
    for index in (0, 40, 100):
        frame = media.background()
        x, y = media.face_position(index)
        frame[y : y + media.FACE_SIDE, x : x + media.FACE_SIDE] = photo
        (face,) = detector.detect(frame)
        expected = np.array([x, y, x + media.FACE_SIDE, y + media.FACE_SIDE], np.float32)
        assert np.abs(face.box - expected).max() < 12
        eyes = face.kps[:2]
        assert eyes[0, 0] < eyes[1, 0] and (expected[1] < eyes[:, 1]).all() and (eyes[:, 1] < expected[3]).all()
    # no green frame at all (a source photo without one): a face in the middle of the input
    (face,) = detector.detect(np.full((512, 512, 3), 90, np.uint8))
    assert np.allclose((face.box[:2] + face.box[2:]) / 2, 256, atol=2)


def test_models_have_the_claimed_compute_and_contracts(tmp_path: Path) -> None:
    # insightface counts multiply-adds as "FLOPs": SCRFD ≈2.19 G at 640², inswapper-shaped ≈2.78 G
    assert synthetic.conv_tower_macs(media.DETECTOR_TOWER, 640) == pytest.approx(2.19e9, rel=0.02)
    assert synthetic.conv_tower_macs(media.SWAPPER_TOWER, 128) == pytest.approx(2.78e9, rel=0.02)
    det, swap, rec = media.make_models(tmp_path / "one")
    again = media.make_models(tmp_path / "two")
    assert [media.sha256(p) for p in (det, swap, rec)] == [media.sha256(p) for p in again]
    graph = onnx.load(str(swap)).graph
    assert [i.name for i in graph.input] == ["target", "source"] and graph.initializer[-1].name == "emap"
    assert sum(n.op_type == "Conv" for n in graph.node) == len(media.SWAPPER_TOWER)
    graph = onnx.load(str(det)).graph
    assert [o.name for o in graph.output] == [f"{k}_{s}" for k in ("score", "bbox", "kps") for s in (8, 16, 32)]
    assert sum(n.op_type == "Conv" for n in graph.node) == len(media.DETECTOR_TOWER) + 1  # + the marker filter


def test_one_anchor_run_keeps_every_frame_and_the_audio(tmp_path: Path) -> None:
    """A short clip through `run_once` (the child process that builds what `streamswap run`
    builds): the numbers come back, every frame and the audio are in the file, the face was
    swapped where the photo is."""
    from conftest import require

    require(
        importlib.util.find_spec("skimage") is not None and importlib.util.find_spec("insightface") is not None,
        "the demo photos (pip install 'streamswap[demo]')",
    )
    from streamswap.bench.anchor import DLC_ENCODER, run_once

    files = media.make_anchor(tmp_path, seconds=0.5)
    result = run_once(files, tmp_path, "file-dlc", live=False, overrides=DLC_ENCODER)
    assert result["frames_out"] == result["file_frames"] == 15 and result["dropped"] == 0
    assert result["file_audio_s"] >= 0.45 and result["errors"] == 0
    assert result["detector_calls"] == 15  # files: the detector runs on every frame
    assert result["fps"] > 0 and result["cpu_ms_per_frame"] > 0 and result["peak_rss_mb"] > 0
    from test_encoder_settings import x264_options

    options = x264_options(tmp_path / "file-dlc.mp4")  # Deep-Live-Cam's settings reached x264
    assert options["crf"] == "18.0" and options["subme"] == "7"
    with av.open(str(tmp_path / "file-dlc.mp4")) as c:
        frames = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
        assert c.streams.video[0].codec_context.name == "h264"
    with av.open(str(files.clip)) as c:
        original = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    x, y = media.face_position(10)
    inner = (slice(y + 120, y + 200), slice(x + 120, x + 200))  # the middle of the face
    diff = np.abs(frames[10][inner].astype(int) - original[10][inner].astype(int)).mean()
    assert diff > 40  # the synthetic swapper inverts the face
    assert np.abs(frames[10][:100, :100].astype(int) - original[10][:100, :100].astype(int)).mean() < 6


def test_scrfd_contract_takes_the_input_by_position(tmp_path: Path) -> None:
    """insightface's SCRFD exports call their input "input.1": a user's such file is loaded."""
    from streamswap.models.contracts import check_onnx_contract

    check_onnx_contract(synthetic.make_marker_scrfd_model(tmp_path / "det.onnx"), "scrfd", "your model file")
