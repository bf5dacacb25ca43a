"""Alignment templates, the similarity fit, and ROI-only crop warps (parity with insightface)."""

from __future__ import annotations

import warnings

import cv2
import numpy as np
import pytest
from conftest import require
from swap_fixtures import ASTRONAUT_KPS, astronaut, reference_module, similarity, tom_hanks

from streamswap.faces import align


def insightface_norm_crop(img, kps, size):
    face_align = reference_module("insightface.utils.face_align")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # skimage's estimate() deprecation
        return face_align.norm_crop2(img, kps, size)


def test_templates_follow_models_md():
    assert np.allclose(
        align.template("arcface_128", 1),
        [
            (0.36167656, 0.40387734),
            (0.63696719, 0.40235469),
            (0.50019687, 0.56044219),
            (0.38710391, 0.72160547),
            (0.61507734, 0.72034453),
        ],
        atol=1e-7,
    )
    # Every point of every template (MODELS.md), not only one: a wrong eye or mouth corner
    # tilts or squeezes every crop made with it.
    assert np.allclose(
        align.template("ffhq_512", 512),
        [
            (192.98138, 239.94708),
            (318.90277, 240.1936),
            (256.63416, 314.01935),
            (201.26117, 371.41043),
            (313.08905, 371.15118),
        ],
        atol=1e-5,
    )
    assert np.allclose(
        align.template("arcface_112_v1", 112),
        [(39.730, 51.138), (72.270, 51.138), (56.000, 68.493), (42.463, 87.010), (69.537, 87.010)],
        atol=1e-5,
    )
    t112 = align.template("arcface", 112)
    assert np.allclose(
        t112,
        [(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655), (70.7299, 92.2041)],
        atol=1e-5,
    )
    assert np.allclose(align.template("arcface_112_v2", 112), t112)
    assert np.allclose(align.template("ffhq_512", 256), align.template("ffhq_512", 512) / 2)
    assert np.allclose(align.template("arcface_112_v1", 256), align.template("arcface_112_v1", 112) * 256 / 112)
    assert np.allclose(align.template("arcface_112_v2", 224), t112 * 2)
    # The insightface size rule: multiples of 112 scale the template, multiples of 128
    # use the 128-style crop (x shifted by 8·S/128).
    assert np.allclose(align.template("arcface", 224), t112 * 2)
    assert np.allclose(align.template("arcface", 128), t112 + [8, 0])
    assert np.allclose(align.template("arcface", 256), (t112 + [8, 0]) * 2)
    assert np.allclose(align.template("arcface", 256), align.template("arcface_128", 256))
    with pytest.raises(ValueError, match="multiple of 112 or 128"):
        align.template("arcface", 100)
    with pytest.raises(ValueError, match="unknown alignment template"):
        align.template("nope", 112)


def test_similarity_fit_recovers_a_known_transform_and_matches_umeyama():
    rng = np.random.default_rng(3)
    src = rng.uniform(0, 500, size=(5, 2))
    truth = similarity(1.7, -23.0, 41.5, -12.25)
    dst = align.transform_points(src, truth)
    assert np.allclose(align.estimate_similarity(src, dst), truth, atol=1e-9)
    # With noise it is the least-squares fit: skimage's Umeyama (float64) gives the same.
    transform = reference_module("skimage.transform")
    noisy = dst + rng.normal(0, 2.0, size=dst.shape)
    tform = transform.SimilarityTransform()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tform.estimate(src, noisy)
    assert np.allclose(align.estimate_similarity(src, noisy), tform.params[:2], atol=1e-9)


def test_invert_affine():
    m = similarity(0.4, 77.0, 300.0, -20.0)
    inv = align.invert_affine(m)
    pts = np.array([[0, 0], [10, 5], [-3, 100.0]])
    assert np.allclose(align.transform_points(align.transform_points(pts, m), inv), pts)


@pytest.mark.parametrize("size", [112, 128])
def test_crop_equals_insightface_norm_crop_on_a_real_photo(size):
    img = astronaut()
    require(img is not None, "scikit-image's astronaut.png")
    ref, ref_m = insightface_norm_crop(img, ASTRONAUT_KPS, size)
    crop, m = align.align_crop(img, ASTRONAUT_KPS, "arcface", size)
    # insightface fits in float32 (its template is float32): matrices agree to ~1e-5,
    # pixels to one grey level on a handful of rounding-edge pixels.
    assert np.allclose(m, ref_m, atol=1e-4)
    diff = np.abs(crop.astype(int) - ref.astype(int))
    assert diff.max() <= 1
    assert (diff > 0).mean() < 1e-3
    assert crop.std() > 20  # a real face, not an empty crop


@pytest.mark.parametrize("size", [112, 128])
def test_crop_of_a_face_partly_outside_the_frame_equals_norm_crop(size):
    img = astronaut()
    require(img is not None, "scikit-image's astronaut.png")
    kps = ASTRONAUT_KPS - np.array([185.0, 125.0], np.float32)  # face hangs over the top-left corner
    ref, _ = insightface_norm_crop(img, kps, size)
    crop, _ = align.align_crop(img, kps, "arcface", size)
    diff = np.abs(crop.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    assert (crop == 0).all(axis=2).mean() > 0.2  # the part outside the frame is black


def test_warp_reads_only_the_crop_region():
    face = tom_hanks()
    require(face is not None, "insightface's Tom_Hanks_54745.png")
    frame = np.zeros((720, 1280, 3), np.uint8)
    m_place = similarity(2.0, 15.0, 600.0, 250.0)
    cv2.warpAffine(face, m_place, (1280, 720), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
    kps = align.transform_points(align.template("arcface", 112), m_place)
    m = align.align_matrix(kps, "arcface", 112)
    x0, y0, x1, y1 = align.source_roi(align.invert_affine(m), 112, 112, frame.shape)
    assert (x1 - x0) * (y1 - y0) < 0.1 * 1280 * 720  # a small part of the frame
    poisoned = np.full_like(frame, 255)
    poisoned[y0:y1, x0:x1] = frame[y0:y1, x0:x1]
    crop = align.warp_crop(frame, m, 112)
    assert np.array_equal(align.warp_crop(poisoned, m, 112), crop)  # nothing outside is read
    full = cv2.warpAffine(frame, m, (112, 112), borderValue=0)
    assert np.abs(full.astype(int) - crop).max() <= 1
    # The key points land on the template, so the crop is the original aligned face.
    assert np.abs(crop.astype(float) - face).mean() < 6.0


def test_warp_of_a_face_outside_the_frame_is_black_and_out_is_reused():
    frame = np.full((100, 100, 3), 200, np.uint8)
    m = align.estimate_similarity(align.template("arcface", 112) + 1000, align.template("arcface", 112))
    out = np.full((112, 112, 3), 7, np.uint8)
    assert align.warp_crop(frame, m, 112, out=out) is out
    assert not out.any()
