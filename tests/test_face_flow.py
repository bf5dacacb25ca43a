"""Following faces between detector frames without a landmarker (optical flow on a crop)."""

from __future__ import annotations

import numpy as np

from streamswap.bench import anchor_media as media
from streamswap.bench import synthetic
from streamswap.faces.flow import FaceFlow
from streamswap.faces.types import Face


def scene(index: int, photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A frame of the anchor clip's motion and the true box of its face photo."""
    frame = media.background()
    x, y = media.face_position(index)
    frame[y : y + media.FACE_SIDE, x : x + media.FACE_SIDE] = photo
    return frame, np.array([x, y, x + media.FACE_SIDE, y + media.FACE_SIDE], np.float32)


def face_at(box: np.ndarray, track_id: int = 0) -> Face:
    x1, y1, x2, y2 = box
    kps = np.array(
        [
            [x1 + 0.35 * (x2 - x1), y1 + 0.45 * (y2 - y1)],
            [x1 + 0.65 * (x2 - x1), y1 + 0.45 * (y2 - y1)],
            [x1 + 0.5 * (x2 - x1), y1 + 0.6 * (y2 - y1)],
            [x1 + 0.38 * (x2 - x1), y1 + 0.75 * (y2 - y1)],
            [x1 + 0.62 * (x2 - x1), y1 + 0.75 * (y2 - y1)],
        ],
        np.float32,
    )
    return Face(box=box.copy(), score=0.9, kps=kps, track_id=track_id, extra={"ears": kps[:2].copy()})


def textured_photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    import cv2

    texture = cv2.resize(
        rng.integers(0, 255, (40, 40, 3), dtype=np.uint8), (media.FACE_SIDE,) * 2, interpolation=cv2.INTER_CUBIC
    )
    return synthetic.draw_marker_frame(texture, media.MARKER)


def test_faces_follow_the_motion_between_detector_frames() -> None:
    photo = textured_photo()
    flow = FaceFlow()
    frame, truth = scene(20, photo)
    faces = [face_at(truth)]
    flow.remember(frame, faces)
    for index in range(21, 25):  # four tracked frames: the photo moves ~15 px a frame
        frame, truth = scene(index, photo)
        faces = flow.follow(frame, faces)
        flow.remember(frame, faces)
        assert np.abs(faces[0].box - truth).max() < 3, (index, faces[0].box, truth)
    moved = truth[:2] - scene(20, photo)[1][:2]
    assert np.abs(moved).max() > 30  # it did move
    expected_kps = face_at(truth).kps
    assert np.abs(faces[0].kps - expected_kps).max() < 3
    assert np.abs(faces[0].extra["ears"] - expected_kps[:2]).max() < 3
    assert faces[0].track_id == 0


def test_a_face_without_texture_or_memory_is_held() -> None:
    flow = FaceFlow()
    flat = np.full((720, 1280, 3), 128, np.uint8)
    face = face_at(np.array([100, 100, 300, 300], np.float32), track_id=4)
    assert flow.follow(flat, [face])[0] is face  # nothing remembered for track 4
    flow.remember(flat, [face])
    assert np.array_equal(flow.follow(flat, [face])[0].box, face.box)  # no texture: no motion found
    edge = face_at(np.array([1270, 710, 1279, 719], np.float32), track_id=5)  # too small a crop
    flow.remember(flat, [edge])
    assert flow.follow(flat, [edge])[0] is edge
