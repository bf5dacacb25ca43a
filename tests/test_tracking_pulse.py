"""Tracking without pulses: a real face (scikit-image's astronaut) moving at a known speed
through a generated clip, bundled BlazeFace + FaceMesh, `detect_every: 3`. The landmarks'
frame-to-frame change at detector frames stays within 1.3× that between tracked frames,
and smoothing 0.5 lags a steady head motion (1 % of the face size per frame) by at most
0.3 frame, as before."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from swap_fixtures import astronaut

from streamswap.config import load_config

SPEED = 0.5  # px per frame, to the right
FRAMES = 36
EVERY = 3


def _clip_landmarks(models_dir: Path, smoothing: float, speed: float = SPEED) -> np.ndarray:
    from swap_fixtures import FaceTool

    from streamswap.wiring import build_face_stages

    image = astronaut()
    assert image is not None
    config = load_config(
        None,
        {
            "models.dir": str(models_dir),
            "inference.provider": "cpu",
            "faces.tracking.detect_every": EVERY,
            "faces.tracking.smoothing": smoothing,
        },
    )
    processor = FaceTool(build_face_stages(config))
    face = image[40:300, 80:340]
    frame = np.full((360, 480, 3), 100, np.uint8)
    series = []
    for index in range(FRAMES):
        frame[:] = 100
        shift = np.float32([[1, 0, 100 + speed * index], [0, 1, 50]])
        cv2.warpAffine(face, shift, (480, 360), dst=frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        faces = processor.detect(frame, index)
        assert len(faces) == 1
        series.append(faces[0].landmarks[:, :2].copy())
    return np.stack(series)


@pytest.fixture(scope="module")
def smoothed(bundled_models_dir: Path) -> np.ndarray:
    return _clip_landmarks(bundled_models_dir, 0.5)


def test_no_jump_at_detector_frames(smoothed: np.ndarray) -> None:
    # Per-landmark deviation of each frame-to-frame step from the known motion.
    error = np.linalg.norm(np.diff(smoothed, axis=0) - [SPEED, 0.0], axis=2).mean(axis=1)
    detector = np.arange(FRAMES) % EVERY == 0
    touches = detector[:-1] | detector[1:]  # steps entering or leaving a detector frame
    error, touches = error[6:], touches[6:]  # after the filter settled
    assert error[touches].mean() <= 1.3 * error[~touches].mean(), (error[touches].mean(), error[~touches].mean())


def test_smoothing_lags_less_than_a_third_of_a_frame(bundled_models_dir: Path) -> None:
    speed = 2.0  # about 1 % of the face size per frame
    raw = _clip_landmarks(bundled_models_dir, 0.0, speed)
    moving = _clip_landmarks(bundled_models_dir, 0.5, speed)
    lag_px = (raw[10:, :, 0] - moving[10:, :, 0]).mean()
    assert 0.0 < lag_px / speed <= 0.3
