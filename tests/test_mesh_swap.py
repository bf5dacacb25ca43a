"""The offline default: bundled BlazeFace + FaceMesh + the mesh swapper on real photos
(scikit-image's astronaut as the source, insightface's t1.jpg group photo as the target)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from swap_fixtures import FaceTool, sample_photo_paths

from streamswap.config import load_config
from streamswap.errors import NoFaceError
from streamswap.faces.align import align_matrix, warp_crop
from streamswap.faces.identity import SourceFace, SourceFaces
from streamswap.faces.mesh_topology import LEFT_EYE, RIGHT_EYE
from streamswap.faces.tracking import iou


@pytest.fixture(scope="module")
def photos() -> tuple[Path, Path]:
    astronaut, group, _ = sample_photo_paths()
    return astronaut, group


@pytest.fixture(scope="module")
def processor(bundled_models_dir: Path):
    from streamswap.wiring import build_face_stages

    config = load_config(None, {"models.dir": str(bundled_models_dir), "inference.provider": "cpu"})
    return FaceTool(build_face_stages(config))


@pytest.fixture(scope="module")
def swapped(processor, photos):
    astronaut, group = photos
    processor.set_source_images([astronaut])
    target = cv2.imread(str(group))
    processor.reset()
    faces = processor.detect(target, 0)
    out = target.copy()
    processor.swap(out, faces)
    return target, out, faces


def _normalised_crop(image: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """Inner face of the 112 ArcFace crop, grey, zero mean and unit variance."""
    crop = warp_crop(image, align_matrix(kps, "arcface", 112), 112)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY).astype(np.float32)[20:100, 16:96]
    return (grey - grey.mean()) / max(float(grey.std()), 1e-3)


def test_finds_the_six_faces_with_landmarks(swapped) -> None:
    _, _, faces = swapped
    assert len(faces) == 6
    for face in faces:
        assert face.landmarks is not None and face.landmarks.shape == (468, 3)
        x1, y1, x2, y2 = face.box
        inside = (
            (face.landmarks[:, 0] > x1 - 0.3 * face.width)
            & (face.landmarks[:, 0] < x2 + 0.3 * face.width)
            & (face.landmarks[:, 1] > y1 - 0.3 * face.height)
            & (face.landmarks[:, 1] < y2 + 0.3 * face.height)
        )
        assert inside.mean() > 0.95  # the mesh sits on its face


def test_every_face_region_changes(swapped) -> None:
    target, out, faces = swapped
    assert len(faces) == 6  # the six people, each its own region
    boxes = np.stack([f.box for f in faces])
    assert all(iou(b[None], np.delete(boxes, i, axis=0)).max() < 0.05 for i, b in enumerate(boxes))
    for face in faces:
        x1, y1, x2, y2 = face.box.astype(int)
        before = target[y1:y2, x1:x2].astype(np.int32)
        after = out[y1:y2, x1:x2].astype(np.int32)
        diff = np.abs(after - before).sum(axis=-1)
        assert diff.mean() / 3 > 5.0, f"face at {face.box} barely changed"
        assert (diff > 20).mean() > 0.2, f"face at {face.box}: too few pixels changed"


def test_target_keeps_its_own_eyes(swapped) -> None:
    """Gaze and blinks stay live: the inner half of each target eye is left as it was."""
    target, out, faces = swapped
    diff = np.abs(out.astype(np.int32) - target.astype(np.int32)).sum(axis=-1) / 3
    for face in faces:
        for contour in (RIGHT_EYE, LEFT_EYE):
            poly = face.landmarks[list(contour), :2]
            centre = poly.mean(axis=0)
            inner = np.zeros(target.shape[:2], np.uint8)
            cv2.fillPoly(inner, [np.round(centre + (poly - centre) * 0.5).astype(np.int32)], 1)
            assert inner.sum() >= 10
            assert diff[inner > 0].mean() < 3.0, f"face at {face.box}: eye changed"


def test_swapped_faces_look_more_like_the_source(swapped, photos, processor) -> None:
    target, out, faces = swapped
    source = cv2.imread(str(photos[0]))
    processor.reset()
    (source_face,) = processor.detect(source, 0)
    reference = _normalised_crop(source, source_face.kps)
    for face in faces:
        before = float((_normalised_crop(target, face.kps) * reference).mean())
        after = float((_normalised_crop(out, face.kps) * reference).mean())
        assert after > before + 0.05, f"face at {face.box}: correlation with the source {before:.2f} -> {after:.2f}"


def test_background_untouched(swapped) -> None:
    target, out, faces = swapped
    away = np.ones(target.shape[:2], bool)
    for face in faces:
        cx, cy = face.center
        half = max(face.width, face.height) * 0.9
        away[max(int(cy - half), 0) : int(cy + half), max(int(cx - half), 0) : int(cx + half)] = False
    assert away.mean() > 0.5
    np.testing.assert_array_equal(out[away], target[away])


def test_swapping_a_face_with_itself_changes_almost_nothing(processor, photos) -> None:
    astronaut = cv2.imread(str(photos[0]))
    processor.set_source_images([astronaut])
    processor.reset()
    frame = astronaut.copy()
    faces = processor.detect(frame, 0)
    processor.swap(frame, faces)
    x1, y1, x2, y2 = faces[0].box.astype(int)
    assert np.abs(frame[y1:y2, x1:x2].astype(int) - astronaut[y1:y2, x1:x2].astype(int)).mean() < 2.0


def test_source_without_face_is_named(processor, tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 120, np.uint8))
    with pytest.raises(NoFaceError, match="wall.png"):
        processor.set_source_images([blank])


def test_faces_partly_outside_the_frame(processor, photos) -> None:
    astronaut = cv2.imread(str(photos[0]))
    processor.set_source_images([astronaut])
    target = cv2.imread(str(photos[1]))
    processor.reset()
    faces = processor.detect(target, 0)
    # Crop the frame through the middle of the first face: the swap must stay in bounds.
    face = faces[0]
    cut = int(face.center[0])
    frame = np.ascontiguousarray(target[:, cut:])
    for f in faces:
        f.box = f.box - np.array([cut, 0, cut, 0], np.float32)
        f.landmarks = f.landmarks - np.array([cut, 0, 0], np.float32)
    before = frame.copy()
    processor.swap(frame, faces)
    assert frame.shape == before.shape and not np.array_equal(frame, before)


def test_large_face_rendered_at_working_scale(processor, photos) -> None:
    """A face larger than max_work_face goes through the scaled path and still lands on
    itself; work buffers are reused from frame to frame."""
    big = cv2.resize(cv2.imread(str(photos[0])), None, fx=3.0, fy=3.0, interpolation=cv2.INTER_CUBIC)
    processor.set_source_images([big])
    processor.reset()
    faces = processor.detect(big, 0)
    face_px = float(np.ptp(faces[0].landmarks[:, :2], axis=0).max())
    assert face_px > processor.swapper.settings.max_work_face
    frame = big.copy()
    processor.swap(frame, faces)
    buffers = dict(processor.swapper._buffers)
    processor.swap(frame, faces)
    assert dict(processor.swapper._buffers) == buffers  # same arrays, nothing new allocated
    frame = big.copy()
    processor.swap(frame, faces)
    x1, y1, x2, y2 = faces[0].box.astype(int)
    assert np.abs(frame[y1:y2, x1:x2].astype(int) - big[y1:y2, x1:x2].astype(int)).mean() < 3.0


def test_tight_face_crop_as_source(processor, photos) -> None:
    """insightface's Tom_Hanks_54745.png is an aligned 112×112 crop: no context around the
    face, which the detector alone misses; the source detector retries inside a margin."""
    _, _, hanks = sample_photo_paths()
    processor.set_source_images([hanks])
    target = cv2.imread(str(photos[1]))
    processor.reset()
    faces = processor.detect(target, 0)
    out = target.copy()
    processor.swap(out, faces)
    assert processor.source_names == [str(hanks)]
    level = processor.swapper.identity.levels[0]
    assert level.lab.shape[0] <= 112 and level.lab.shape[1] <= 112  # the texture is that crop
    changes = []
    for face in faces:
        x1, y1, x2, y2 = face.box.astype(int)
        changes.append(np.abs(out[y1:y2, x1:x2].astype(int) - target[y1:y2, x1:x2].astype(int)).mean())
    assert len(changes) == 6 and min(changes) > 2.0 and np.mean(changes) > 5.0, changes


def test_several_sources_use_the_most_frontal(processor, photos, caplog) -> None:
    """The mesh swapper cannot average textures: of several photos it takes the most
    frontal face (the astronaut over the turned Tom Hanks crop), in either order, and says so."""
    _, _, hanks = sample_photo_paths()
    processor.set_source_images([photos[0]])
    processor.swap(np.zeros((8, 8, 3), np.uint8), [])  # hand the identity over
    alone = processor.swapper.identity.levels[0].lab
    for order in ([hanks, photos[0]], [photos[0], hanks]):
        caplog.clear()
        with caplog.at_level("INFO", logger="streamswap.faces.swappers.mesh"):
            processor.set_source_images(order)
        processor.swap(np.zeros((8, 8, 3), np.uint8), [])
        np.testing.assert_array_equal(processor.swapper.identity.levels[0].lab, alone)
        chosen = [r for r in caplog.records if "one source photo" in r.getMessage()]
        assert chosen and chosen[0].kv["chosen"] == str(photos[0])


def _astronaut_identity_on_group(processor, photos):
    """The astronaut as the identity, already handed over to the mesh swapper, and the
    group photo with its detected faces: (target, faces, swapper)."""
    processor.set_source_images([photos[0]])
    target = cv2.imread(str(photos[1]))
    processor.reset()
    faces = processor.detect(target, 0)
    processor.swap(target.copy(), [])  # no faces: only hands the pending identity over
    assert processor.swapper.identity is not None
    return target, faces, processor.swapper


def test_no_uncovered_pixels_inside_turned_faces(processor, photos) -> None:
    """The mesh folds on turned faces (t1.jpg has two in near profile); every pixel inside
    the face oval must still get a triangle, or the target shows through as lines and specks."""
    from streamswap.faces.mesh_topology import FACE_OVAL
    from streamswap.faces.swappers.mesh import _polygon_mask

    target, faces, swapper = _astronaut_identity_on_group(processor, photos)
    sentinel = len(swapper.identity.triangles)
    for face in faces:
        swapper.swap_one(target.copy(), face.landmarks, swapper.identity)
        rx, ry, rw, rh = swapper._region(face.landmarks[:, :2], target.shape[1], target.shape[0])
        oval = _polygon_mask((rh, rw), [face.landmarks[list(FACE_OVAL), :2] - (rx, ry)]) > 0
        oval = cv2.erode(oval.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # the contour's own pixels aside
        uncovered = int((swapper._buffers[(rh, rw)].tri_id[oval] == sentinel).sum())
        assert uncovered == 0, f"face at {face.box}: {uncovered} pixels without a triangle"


def _winding(triangles: np.ndarray) -> np.ndarray:
    """Signed doubled area of each (T, 3, 2) triangle."""
    e1, e2 = triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    return e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]


def test_turned_away_triangles_are_never_painted(processor, photos) -> None:
    """On turned faces (t1.jpg has two near profiles) part of the mesh turns away from the
    camera (its winding flips against the source's). Such a triangle must not paint its
    texture over the facing ones in front of it, nor over the background beyond the
    silhouette: only facing triangles appear in the raster, and where none does the
    target is left as it was."""
    target, faces, swapper = _astronaut_identity_on_group(processor, photos)
    identity = swapper.identity
    tri = identity.triangles
    src = identity.levels[0].points[tri]
    src_det = _winding(src)
    flipped_total = 0
    for face in faces:
        out = target.copy()
        swapper.swap_one(out, face.landmarks, identity)
        rx, ry, rw, rh = swapper._region(face.landmarks[:, :2], target.shape[1], target.shape[0])
        dst = face.landmarks[:, :2][tri]
        flipped = _winding(dst) * src_det < 0
        flipped_total += int(flipped.sum())
        raster = swapper._buffers[(rh, rw)].tri_id
        drawn = np.unique(raster[raster < len(tri)])
        assert not flipped[drawn].any(), f"face at {face.box}: turned-away triangles painted"
        hidden = raster == len(tri) + 1
        np.testing.assert_array_equal(
            out[ry : ry + rh, rx : rx + rw][hidden], target[ry : ry + rh, rx : rx + rw][hidden]
        )
    assert flipped_total > 0  # the profile faces do turn parts of the mesh away


def test_black_and_white_source_takes_the_targets_skin_colour(processor, photos) -> None:
    """A grey source photo has no skin colour to carry: the target's own local tint is
    taken whatever `relight_color` says; a colour source keeps honouring the setting."""
    from streamswap.faces.settings import MeshSettings
    from streamswap.faces.swappers.mesh import MeshSwapper

    colour = cv2.imread(str(photos[0]))
    grey = cv2.cvtColor(cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    target = cv2.imread(str(photos[1]))
    processor.reset()
    faces = processor.detect(target, 0)
    results = {}
    for name, source in (("grey", grey), ("colour", colour)):
        processor.reset()
        (source_face,) = processor.detect(source, 0)
        for share in (0.0, 1.0):
            swapper = MeshSwapper(MeshSettings(relight_color=share))
            identity = swapper.prepare_identity(SourceFaces((SourceFace(source, source_face, name),)))
            assert identity.colourless == (name == "grey")
            swapper.set_identity(identity)
            out = target.copy()
            swapper.swap(out, faces)
            results[name, share] = out
    np.testing.assert_array_equal(results["grey", 0.0], results["grey", 1.0])
    assert not np.array_equal(results["colour", 0.0], results["colour", 1.0])


def _stretch_stats(identity, landmarks, settings) -> tuple[float, float]:
    """(share of the painted area whose texture is stretched more than 3×, share of the
    face's mesh area that is painted at all)."""
    from streamswap.faces.swappers.mesh import _areas, painted_stretch

    stretch, area = painted_stretch(identity, landmarks, settings)
    total = float(_areas(np.asarray(landmarks)[:, :2][identity.triangles]).sum())
    return float(area[stretch > 3.0].sum() / max(area.sum(), 1e-6)), float(area.sum() / total)


def test_turned_targets_get_no_stretched_texture(processor, photos) -> None:
    """Texture stretch per triangle (target area / source area, each over its face size²):
    the profile and three-quarter faces of the group photo used to take 6–17 % of their
    swapped area from source triangles seen nearly edge-on (the side of the nose and
    cheek); now none, while the frontal faces keep (almost) all of their swap."""
    from streamswap.faces.settings import MeshSettings
    from streamswap.faces.swappers.mesh import frontality, prepare_identity

    source = cv2.imread(str(photos[0]))
    processor.reset()
    identity = prepare_identity(source, processor.detect(source, 0)[0].landmarks)
    processor.reset()
    faces = processor.detect(cv2.imread(str(photos[1])), 0)
    before, after = MeshSettings(mirror_fill=False, max_stretch=1e9), MeshSettings()
    turned = [f for f in faces if frontality(f.landmarks) < 0.5]
    frontal = [f for f in faces if frontality(f.landmarks) > 0.85]
    assert len(turned) >= 3 and len(frontal) >= 2
    assert max(_stretch_stats(identity, f.landmarks, before)[0] for f in turned) > 0.05  # the old look
    for face in turned:
        stretched, covered = _stretch_stats(identity, face.landmarks, after)
        assert stretched == 0.0 and covered > 0.7
    for face in frontal:
        assert _stretch_stats(identity, face.landmarks, after)[1] > 0.97


def test_turned_source_fills_its_hidden_half_mirrored(processor, photos) -> None:
    """A source in three-quarter view (the group photo's second person from the left)
    onto the frontal astronaut: its far half, seen edge-on, is replaced by the mirrored near
    half, so almost the whole face gets unstretched texture (without the mirror, a third of
    it would be left out or smeared)."""
    from streamswap.faces.settings import MeshSettings
    from streamswap.faces.swappers.mesh import frontality, prepare_identity

    group = cv2.imread(str(photos[1]))
    processor.reset()
    turned = min(processor.detect(group, 0), key=lambda f: frontality(f.landmarks))
    identity = prepare_identity(group, turned.landmarks)
    assert (identity.side != 0).sum() > 0.8 * len(identity.side)
    target = cv2.imread(str(photos[0]))
    processor.reset()
    landmarks = processor.detect(target, 0)[0].landmarks
    no_mirror = _stretch_stats(identity, landmarks, MeshSettings(mirror_fill=False))
    mirrored = _stretch_stats(identity, landmarks, MeshSettings())
    assert mirrored[0] == 0.0 and mirrored[1] > 0.8
    assert mirrored[1] > no_mirror[1] + 0.1


def test_tight_face_crop_as_target(processor, photos) -> None:
    """The 112 px Tom Hanks crop as the TARGET: found with the padded retry and swapped."""
    _, _, hanks = sample_photo_paths()
    processor.set_source_images([photos[0]])
    target = cv2.imread(str(hanks))
    processor.reset()
    assert processor.detect(target, 0) == []  # the plain detector misses it
    faces = processor.detect_still(target)
    assert len(faces) == 1
    out = target.copy()
    processor.swap(out, faces)
    assert np.abs(out.astype(int) - target).mean() > 3.0


def test_paste_color_correction_and_mouth_mask_apply_to_the_mesh_swapper(bundled_models_dir, photos) -> None:
    """faces.paste.color_correction and mouth_mask are honoured by the mesh swapper (they used
    to be silently ignored): colour correction takes all of the target's skin tint, the
    mouth mask keeps the target's lips, byte for byte, inside their contour."""
    from streamswap.faces.mesh_topology import LIPS_OUTER
    from streamswap.wiring import build_face_stages

    outs = {}
    for key in ("none", "faces.paste.color_correction", "faces.paste.mouth_mask"):
        overrides = {"models.dir": str(bundled_models_dir), "inference.provider": "cpu"}
        if key != "none":
            overrides[key] = True
        processor = FaceTool(build_face_stages(load_config(None, overrides)))
        processor.set_source_images([photos[0]])
        target = cv2.imread(str(photos[1]))
        faces = processor.detect_still(target)
        out = target.copy()
        processor.swap(out, faces)
        outs[key] = (target, out, faces)
    target, plain, faces = outs["none"]
    assert not np.array_equal(outs["faces.paste.color_correction"][1], plain)
    mouthed = outs["faces.paste.mouth_mask"][1]
    lips = np.zeros(target.shape[:2], np.uint8)
    for face in faces:
        cv2.fillPoly(lips, [np.round(face.landmarks[list(LIPS_OUTER), :2]).astype(np.int32)], 1)
    inside = cv2.erode(lips, np.ones((7, 7), np.uint8)).astype(bool)
    assert inside.sum() > 100
    assert np.array_equal(mouthed[inside], target[inside])
    assert not np.array_equal(plain[inside], target[inside])


def test_skin_colour_moves_toward_the_skin_around_the_face(processor, photos) -> None:
    """faces.mesh.surround: the swapped skin's colour moves toward the target's skin just
    around its face (neck, ears, forehead edge), measured over the face oval."""
    from streamswap.faces.swappers.mesh import _polygon_mask, _skin_polygons, surrounding_skin

    target = cv2.imread(str(photos[1]))
    processor.set_source_images([photos[0]])
    faces = processor.detect_still(target)
    lab0 = cv2.cvtColor(target, cv2.COLOR_BGR2LAB).astype(np.float32)
    swapper = processor.swapper
    results = {}
    for surround in (0.0, 1.0):
        swapper.settings.surround = surround
        out = target.copy()
        processor.swap(out, faces)
        results[surround] = cv2.cvtColor(out, cv2.COLOR_BGR2LAB).astype(np.float32)
    swapper.settings.surround = 0.15
    moved = 0
    for face in faces:
        pts = face.landmarks[:, :2]
        oval, holes = _skin_polygons(pts)
        mask = _polygon_mask(target.shape[:2], [oval])
        _polygon_mask(target.shape[:2], holes, 0, out=mask)
        inside = mask > 0
        ring = surrounding_skin(target, pts, lab0[inside].mean(0), lab0[inside].std(0))
        if ring is None or abs(ring[0] - lab0[inside][:, 0].mean()) < 4:
            continue
        before, after = results[0.0][inside].mean(0), results[1.0][inside].mean(0)
        assert abs(after[0] - ring[0]) < abs(before[0] - ring[0]) - 2, (before, after, ring)
        moved += 1
    assert moved >= 2
