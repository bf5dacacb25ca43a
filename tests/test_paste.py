"""Paste-back: parity of the footprint with insightface's INSwapper paste, ROI-only and
in-place blending, faces at the border, colour correction and the mouth mask."""

from __future__ import annotations

import tracemalloc
import types

import cv2
import numpy as np
import pytest
from conftest import require
from swap_fixtures import RecordingOrt, cpu_session, face_at, group_photo, reference_module

from streamswap.bench import synthetic
from streamswap.faces import align
from streamswap.faces.mesh_topology import LIPS_INNER
from streamswap.faces.paste import PasteBack, box_mask
from streamswap.faces.settings import PasteSettings
from streamswap.faces.swappers import make_neural_swapper

CONSTANT = 0.25  # generator output → pixel value 63 (both truncate 63.75)
PIXEL = 63


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def _erode(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


@pytest.mark.parametrize("scale,angle,tx,ty", [(1.5, 10.0, 400.0, 300.0), (1.2, -25.0, 900.0, 160.0)])
def test_constant_crop_lands_where_insightface_pastes_it(tmp_path, scale, angle, tx, ty):
    inswapper = reference_module("insightface.model_zoo.inswapper")
    img = group_photo()
    require(img is not None, "insightface's t1.jpg")
    model = synthetic.make_swapper_model(tmp_path / "constant.onnx", mode="constant", constant=CONSTANT)
    face = face_at(scale, angle, tx, ty)
    emb = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    emb /= np.linalg.norm(emb)

    reference = inswapper.INSwapper(str(model), session=RecordingOrt(model)).get(
        img.copy(), types.SimpleNamespace(kps=face.kps), types.SimpleNamespace(normed_embedding=emb), paste_back=True
    )
    ours = img.copy()
    swapper = make_neural_swapper("inswapper", cpu_session(model), name="constant", model_path=model)
    swapper.set_identity(emb)
    swapper.swap(ours, [face])

    changed_ref = (reference != img).any(axis=2)
    changed_ours = (ours != img).any(axis=2)
    core_ref = (np.abs(reference.astype(int) - PIXEL) <= 1).all(axis=2)
    core_ours = (np.abs(ours.astype(int) - PIXEL) <= 1).all(axis=2)
    # The feathered band: 15 % of the crop's side in frame pixels (both feather over ~10 %);
    # the 128 crop holds the template at scale 1, so its side in the frame is 128 · scale.
    band = int(np.ceil(0.15 * 128 * scale))
    assert changed_ref.sum() > 1000 and changed_ours.sum() > 1000
    # Same footprint within the band, both ways; nothing changes far from the face.
    assert not (changed_ours & ~_dilate(changed_ref, band)).any()
    assert not (changed_ref & ~_dilate(changed_ours, band)).any()
    far = ~_dilate(changed_ref | changed_ours, 2)
    assert np.array_equal(ours[far], img[far]) and np.array_equal(reference[far], img[far])
    # Both replace the inside of the face fully with the generated crop.
    assert _erode(core_ref, band).sum() > 500  # so the containments below are not vacuous
    assert not (_erode(core_ref, band) & ~core_ours).any()
    assert not (_erode(core_ours, band) & ~core_ref).any()
    # Inside the band: where one of them visibly changed the frame, so did the other.
    strong_ref = (np.abs(reference.astype(int) - img) > 4).any(axis=2) & ~core_ref
    strong_ours = (np.abs(ours.astype(int) - img) > 4).any(axis=2) & ~core_ours
    assert strong_ref.sum() > 500 and strong_ours.sum() > 500
    assert changed_ours[strong_ref].mean() > 0.95
    assert changed_ref[strong_ours].mean() > 0.95


def _matrix(scale: float, angle: float, tx: float, ty: float, size: int = 128) -> np.ndarray:
    return align.align_matrix(face_at(scale, angle, tx, ty).kps, "arcface", size)


def test_paste_touches_only_the_crop_bounding_box_in_place():
    frame = np.random.default_rng(1).integers(0, 255, (1080, 1920, 3), dtype=np.uint8)
    before = frame.copy()
    m = _matrix(2.0, 20.0, 800.0, 400.0)
    PasteBack(PasteSettings()).paste(frame, np.full((128, 128, 3), 255, np.uint8), m)
    corners = align.transform_points(np.array([[0, 0], [128, 0], [0, 128], [128, 128.0]]), align.invert_affine(m))
    x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
    changed = (frame != before).any(axis=2)
    assert changed.sum() > 10000
    outside = changed.copy()
    outside[y0 : y1 + 1, x0 : x1 + 1] = False
    assert not outside.any()


def test_paste_allocates_no_frame_sized_buffer_and_caches_the_mask():
    frame = np.zeros((1080, 1920, 3), np.uint8)
    paste = PasteBack(PasteSettings())
    crop = np.full((128, 128, 3), 200, np.uint8)
    m = _matrix(1.0, 0.0, 900.0, 500.0)
    paste.paste(frame, crop, m)
    assert paste.mask(128) is paste.mask(128)
    tracemalloc.start()
    try:
        paste.paste(frame, crop, m)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < frame.nbytes // 20


@pytest.mark.parametrize("tx,ty", [(-60.0, 300.0), (1850.0, -70.0), (1800.0, 1000.0)])
def test_faces_partly_outside_the_frame(tx, ty):
    frame = np.zeros((1080, 1920, 3), np.uint8)
    m = _matrix(1.5, 5.0, tx, ty)
    PasteBack(PasteSettings()).paste(frame, np.full((128, 128, 3), 255, np.uint8), m)
    changed = (frame > 0).any(axis=2)
    assert changed.sum() > 500
    ys, xs = np.nonzero(changed)
    # The visible part hugs the frame edge the face hangs over.
    assert xs.min() == 0 or ys.min() == 0 or xs.max() == 1919 or ys.max() == 1079


def test_face_entirely_outside_is_a_no_op():
    frame = np.zeros((200, 200, 3), np.uint8)
    PasteBack(PasteSettings()).paste(frame, np.full((128, 128, 3), 255, np.uint8), _matrix(1.0, 0, 900, 900))
    assert not frame.any()


def test_box_mask_shape_padding_and_blur():
    plain = box_mask(128, blur=0.0, padding=0.0)
    assert plain[64, 64] == 1.0 and plain[0, 0] == 0.0 and plain[1, 64] == 1.0
    padded = box_mask(128, blur=0.0, padding=0.1)
    assert padded[12, 64] == 0.0 and padded[13, 64] == 1.0
    soft = box_mask(128, blur=0.3, padding=0.0)
    assert soft[64, 64] > 0.99 and 0.05 < soft[12, 64] < 0.95 and soft[0, 64] < 0.01


def test_color_correction_matches_the_target_statistics():
    rng = np.random.default_rng(2)
    frame = np.full((400, 400, 3), (40, 120, 200), np.uint8)
    frame += rng.integers(0, 10, frame.shape, dtype=np.uint8)
    m = _matrix(1.0, 0.0, 120.0, 120.0)
    target_crop = align.warp_crop(frame, m, 128)
    crop = np.full((128, 128, 3), (220, 60, 30), np.uint8)
    plain, corrected = frame.copy(), frame.copy()
    PasteBack(PasteSettings()).paste(plain, crop, m, target_crop=target_crop)
    PasteBack(PasteSettings(color_correction=True)).paste(corrected, crop, m, target_crop=target_crop)
    centre = align.transform_points(np.array([[64.0, 64.0]]), align.invert_affine(m))[0].astype(int)
    cx, cy = centre
    patch_plain = plain[cy - 10 : cy + 10, cx - 10 : cx + 10].reshape(-1, 3).mean(axis=0)
    patch_corr = corrected[cy - 10 : cy + 10, cx - 10 : cx + 10].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch_plain - (220, 60, 30)).max() < 3
    assert np.abs(patch_corr - frame[cy, cx]).max() < 12


def test_mouth_mask_keeps_the_target_mouth_interior():
    face = face_at(2.0, 0.0, 300.0, 200.0)
    frame = np.full((720, 720, 3), 30, np.uint8)
    m = align.align_matrix(face.kps, "arcface", 128)
    # A FaceMesh-like landmark set whose inner lip contour circles the mouth centre.
    landmarks = np.zeros((468, 3), np.float32)
    landmarks[:, :2] = face.kps[2]
    centre = face.kps[3:5].mean(axis=0)
    for i, index in enumerate(LIPS_INNER):
        a = 2 * np.pi * i / len(LIPS_INNER)
        landmarks[index, :2] = centre + (25 * np.cos(a), 10 * np.sin(a))
    crop = np.full((128, 128, 3), 250, np.uint8)
    kept, swapped, fallback = frame.copy(), frame.copy(), frame.copy()
    PasteBack(PasteSettings(mouth_mask=True)).paste(kept, crop, m, kps=face.kps, landmarks=landmarks)
    PasteBack(PasteSettings()).paste(swapped, crop, m, kps=face.kps, landmarks=landmarks)
    PasteBack(PasteSettings(mouth_mask=True)).paste(fallback, crop, m, kps=face.kps)
    cx, cy = centre.astype(int)
    assert swapped[cy, cx, 0] > 240
    assert kept[cy, cx, 0] < 40  # the mouth interior stays the target's
    assert fallback[cy, cx, 0] < 40  # without a mesh: an ellipse between the mouth corners
    nose = face.kps[2].astype(int)
    assert kept[nose[1], nose[0], 0] > 240  # the rest of the face is still swapped


def test_feathered_band_blends_by_the_mask_weight():
    """Every pixel of the band is w·crop + (1 − w)·frame, w the mask at that crop point
    (an integer shift maps frame pixels onto crop pixels exactly)."""
    settings = PasteSettings(blur=0.3, padding=0.0)
    frame_bgr, crop_bgr = np.array([20, 40, 60]), np.array([220, 200, 180])
    frame = np.empty((300, 300, 3), np.uint8)
    frame[:] = frame_bgr
    crop = np.empty((128, 128, 3), np.uint8)
    crop[:] = crop_bgr
    tx, ty = 70, 90
    matrix = np.array([[1.0, 0.0, -tx], [0.0, 1.0, -ty]])  # frame → crop
    paste = PasteBack(settings)
    paste.paste(frame, crop, matrix)
    w = paste.mask(128)
    band = (w > 0.02) & (w < 0.98)
    assert band.sum() > 4000  # the feather is ~19 px wide on each side
    want = w[..., None] * crop_bgr + (1.0 - w[..., None]) * frame_bgr
    got = frame[ty : ty + 128, tx : tx + 128].astype(np.float64)
    assert np.abs(got - want)[band].max() <= 1.0
    assert np.abs(got - want).max() <= 1.0  # and the core (crop) and the rim (frame)
    outside = np.ones(frame.shape[:2], bool)
    outside[ty : ty + 128, tx : tx + 128] = False
    assert (frame[outside] == frame_bgr).all()


def test_box_mask_feather_is_a_blurred_step_that_reaches_zero_at_the_edge():
    """The band's profile: a step at half the feather in from the edge, Gaussian-blurred
    with σ = feather / 6, so the weight is ~0 at the crop's edge and ~1 a feather in."""
    from math import erf, sqrt

    size, blur = 128, 0.3
    feather = int(size * 0.5 * blur)  # 19 px
    step, sigma = feather // 2 - 0.5, feather / 6.0  # between pixels 8 and 9
    profile = box_mask(size, blur=blur, padding=0.0)[size // 2, : size // 2]
    want = np.array([0.5 * (1 + erf((x - step) / (sigma * sqrt(2)))) for x in range(size // 2)])
    assert np.abs(profile - want).max() < 0.02
    assert profile[0] < 0.01 and profile[feather] > 0.99


def test_color_transfer_moves_the_crop_statistics_onto_the_target():
    """Direction: the generated crop takes the target's LAB mean and spread (not the
    target the crop's), on textured crops whose spreads differ."""
    from streamswap.faces.paste import transfer_color_lab

    rng = np.random.default_rng(4)
    crop = np.clip(rng.normal((150, 120, 200), 25, (128, 128, 3)), 0, 255).astype(np.uint8)
    target = np.clip(rng.normal((70, 100, 90), 6, (128, 128, 3)), 0, 255).astype(np.uint8)
    weight = box_mask(128, blur=0.3, padding=0.0)
    sel = weight > 0.5

    def stats(img):
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2LAB).astype(np.float64)[sel]
        return lab.mean(axis=0), lab.std(axis=0)

    out = transfer_color_lab(crop, target, weight)
    mean, std = stats(out)
    t_mean, t_std = stats(target)
    c_mean, c_std = stats(crop)
    assert np.abs(mean - t_mean).max() < 1.5
    assert np.allclose(std, t_std, rtol=0.15, atol=0.6)
    assert (np.abs(c_mean - t_mean) > 5).any() and (c_std > 2 * t_std).any()  # so it moved
