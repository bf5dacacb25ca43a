"""Region and occlusion masks for every swapper: FaceMesh regions, an xseg-contract occluder
and a BiSeNet-contract parser (generated models of those contracts), on real photos. The
pixels a mask keeps stay the target's, byte for byte."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require
from generated_models import blue_occluder, red_parser
from swap_fixtures import astronaut, cpu_session, package_file, sample_photo_paths

from streamswap.bench import synthetic
from streamswap.config import load_config
from streamswap.errors import ConfigError
from streamswap.faces.identity import SourceIdentity, l2_normalise
from streamswap.faces.masks import FaceMasks, FaceParser, Occluder, region_mask, region_polygons
from streamswap.faces.swappers import make_neural_swapper
from streamswap.models.catalogue import get_spec


def _config(models_dir: Path, **overrides):
    values = {"models.dir": str(models_dir), "inference.provider": "cpu"}
    values.update(overrides)
    return load_config(None, values)


@pytest.fixture(scope="module")
def masked_target() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut with a real blue surgical mask photo (insightface's mask_blue.jpg) over
    her mouth and chin, and where that mask is (bool)."""
    image = astronaut()
    mask_photo = package_file("insightface", "data", "images", "mask_blue.jpg")
    require(image is not None and mask_photo is not None, "astronaut.png and insightface's mask_blue.jpg")
    cover = cv2.resize(cv2.imread(str(mask_photo)), (110, 55), interpolation=cv2.INTER_AREA)
    out = image.copy()
    out[165:220, 150:260] = cover
    where = np.zeros(image.shape[:2], bool)
    where[165:220, 150:260] = True
    return out, where


def _interior(where: np.ndarray, px: int) -> np.ndarray:
    return cv2.erode(where.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)).astype(bool)


def test_catalogue_lists_the_mask_models() -> None:
    xseg, parser = get_spec("xseg_1"), get_spec("bisenet_resnet_34")
    assert (xseg.role, xseg.contract, xseg.size) == ("occluder", "xseg", 70324286)
    assert xseg.urls[0].endswith("/models-3.1.0/xseg_1.onnx") and "GPL-3.0" in xseg.license
    assert (parser.role, parser.contract, parser.license.split()[0]) == ("parser", "bisenet", "MIT")
    assert parser.sha256 == "4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96"


def test_bad_regions_and_wrong_contract_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"faces.mask.regions\[1\]: unknown region 'ears'"):
        load_config(None, {"faces.mask.regions": ["nose", "ears"]})
    from streamswap.errors import ModelError

    with pytest.raises(ModelError, match="not an xseg occlusion model"):
        Occluder(cpu_session(red_parser(tmp_path / "p.onnx")))


def test_mesh_swap_limited_to_nose_and_lips(bundled_models_dir: Path) -> None:
    from swap_fixtures import FaceTool

    from streamswap.wiring import build_face_stages

    astronaut_path, group_path, _ = sample_photo_paths()
    processor = FaceTool(build_face_stages(_config(bundled_models_dir, **{"faces.mask.regions": ["nose", "lips"]})))
    processor.set_source_images([astronaut_path])
    target = cv2.imread(str(group_path))
    faces = processor.detect(target, 0)
    out = target.copy()
    processor.swap(out, faces)
    allowed = np.zeros(target.shape[:2], np.uint8)
    changed = np.abs(out.astype(int) - target).sum(axis=2) > 0
    for face in faces:
        polys = region_polygons(face.landmarks[:, :2])
        cv2.fillPoly(allowed, [np.round(p).astype(np.int32) for p in polys["nose"] + polys["lips"]], 1)
    near = cv2.dilate(allowed, np.ones((9, 9), np.uint8)).astype(bool)  # the mask's soft edge
    assert not changed[~near].any()  # cheeks, brows, eyes, forehead: the target's own
    assert changed[allowed.astype(bool)].mean() > 0.5


def test_region_mask_picks_the_parts() -> None:
    lm = np.zeros((468, 2), np.float32)
    rng = np.random.default_rng(1)
    lm[:] = rng.uniform(20, 80, (468, 2))
    identity = np.array([[1, 0, 0], [0, 1, 0]], np.float64)
    full = region_mask(lm, identity, (100, 100), ["skin", "brows", "eyes", "nose", "mouth", "lips"], soften=0)
    skin = region_mask(lm, identity, (100, 100), ["skin"], soften=0)
    assert full.sum() >= skin.sum() and skin.max() <= 1.0 and full[0, 0] == 0.0


def test_occluded_pixels_stay_the_targets_mesh_swapper(bundled_models_dir: Path, masked_target, tmp_path) -> None:
    from swap_fixtures import FaceTool

    from streamswap.wiring import build_face_stages

    _, _, tom = sample_photo_paths()
    target, where = masked_target
    occluder = blue_occluder(tmp_path / "occluder.onnx")
    config = _config(bundled_models_dir, **{"faces.mask.occluder": str(occluder)})
    processor = FaceTool(build_face_stages(config))
    assert processor.swapper.masks is not None and processor.swapper.masks.occluder is not None
    processor.set_source_images([tom])
    faces = processor.detect(target, 0)
    assert len(faces) == 1
    out = target.copy()
    processor.swap(out, faces)
    inside = _interior(where, 6)
    assert np.array_equal(out[inside], target[inside])  # the mask stays on the face, untouched
    x1, y1, x2, y2 = faces[0].box.astype(int)
    face_area = np.zeros_like(where)
    face_area[y1:y2, x1:x2] = True
    changed = np.abs(out.astype(int) - target).sum(axis=2) > 0
    assert changed[face_area & ~where].mean() > 0.3  # the rest of the face is swapped


def test_occluded_and_parsed_pixels_stay_the_targets_neural_swapper(masked_target, tmp_path) -> None:
    from streamswap.faces.detectors import make_detector  # noqa: F401 (the processor path is tested above)

    target, where = masked_target
    model = synthetic.make_swapper_model(tmp_path / "hyperswap.onnx", size=256, batch_dynamic=True, mode="invert")
    swapper = make_neural_swapper("hyperswap", cpu_session(model), name="hyperswap_test", model_path=model)
    emb = l2_normalise(np.random.default_rng(0).standard_normal(512))
    swapper.set_identity(SourceIdentity(embedding=emb, raw=emb))
    from swap_fixtures import ASTRONAUT_KPS

    from streamswap.faces.types import Face

    face = Face(box=np.array([140, 60, 270, 230], np.float32), score=0.9, kps=ASTRONAUT_KPS.copy())
    swapper.masks = FaceMasks(occluder=Occluder(cpu_session(blue_occluder(tmp_path / "o.onnx"))))
    out = target.copy()
    swapper.swap(out, [face])
    inside = _interior(where, 6)
    assert np.array_equal(out[inside], target[inside])
    assert (np.abs(out.astype(int) - target).sum(axis=2) > 0)[100:160, 160:250].mean() > 0.5

    # Parser, skin only: what it calls hair (red ≤ 0.485, e.g. the dark eyes and brows) stays.
    parser = FaceParser(cpu_session(red_parser(tmp_path / "p.onnx")), regions=["skin"])
    swapper.masks = FaceMasks(parser=parser)
    out = target.copy()
    swapper.swap(out, [face])
    dark = _interior(target[..., 2] < 0.3 * 255, 6)
    dark[:, :140] = False  # inside the face box only
    dark[:, 270:] = False
    dark[:60] = False
    dark[230:] = False
    assert dark.sum() > 50
    assert np.array_equal(out[dark], target[dark])


def test_mask_model_with_the_wrong_output_is_refused_at_load(tmp_path: Path) -> None:
    """An occluder-shaped input with a parser-shaped output (or the reverse) is refused by
    name when it loads, not on every frame."""
    import onnx
    from onnx import TensorProto, helper

    from streamswap.errors import ModelError

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["input"], ["out"], axes=[3], keepdims=0)],
        "bad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 256, 256, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 256, 256])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "bad_xseg.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match="bad_xseg|first output"):
        Occluder(cpu_session(path), name="bad_xseg")
