"""Face selection and person → source mapping on real photos (insightface's group photo,
the astronaut and Tom Hanks portraits), bundled detector + mesh swapper, and a generated
recognizer of the ArcFace contract (the real one is not on this machine): the chosen faces
change, every other pixel stays byte-identical."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from generated_models import pooled_recognizer
from swap_fixtures import FaceTool, sample_photo_paths

from streamswap.config import load_config
from streamswap.errors import ConfigError


@pytest.fixture(scope="module")
def scene(tmp_path_factory, bundled_models_dir: Path):
    """Paths and pixels: the group photo, its six people as separate reference photos
    (each cut out, enlarged and re-exposed), the recognizer file."""
    astronaut, group, hanks = sample_photo_paths()
    work = tmp_path_factory.mktemp("people")
    recognizer = pooled_recognizer(work / "recognizer.onnx")

    probe = _stages(_config(bundled_models_dir, recognizer))
    image = cv2.imread(str(group))
    faces = sorted(probe.detect_still(image), key=lambda f: f.center[0])
    assert len(faces) == 6
    refs = []
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = face.box.astype(int)
        w = x2 - x1
        crop = image[max(y1 - w // 2, 0) : y2 + w // 2, max(x1 - w // 2, 0) : x2 + w // 2]
        crop = cv2.convertScaleAbs(
            cv2.resize(crop, None, fx=1.7, fy=1.7, interpolation=cv2.INTER_CUBIC), alpha=1.1, beta=-10
        )
        path = work / f"person{i}.png"
        cv2.imwrite(str(path), crop)
        refs.append(path)
    boxes = [f.box for f in faces]
    return {
        "astronaut": astronaut,
        "group": group,
        "hanks": hanks,
        "image": image,
        "refs": refs,
        "boxes": boxes,
        "recognizer": recognizer,
    }


def _stages(config) -> FaceTool:
    from streamswap.wiring import build_face_stages

    return FaceTool(build_face_stages(config))


def _config(models_dir: Path, recognizer: Path, **overrides):
    values = {
        "models.dir": str(models_dir),
        "inference.provider": "cpu",
        "faces.recognizer.model": str(recognizer),
        "faces.recognizer.contract": "arcface",
        "faces.select.threshold": 0.9,
    }
    values.update(overrides)
    return load_config(None, values)


def _swap(models_dir: Path, scene, source: Path, **overrides) -> np.ndarray:

    processor = _stages(_config(models_dir, scene["recognizer"], **overrides))
    processor.set_source_images([source])
    image = scene["image"].copy()
    processor.swap(image, processor.detect_still(image))
    return image


def _changed_people(scene, out: np.ndarray) -> list[int]:
    """Which people's boxes changed; asserts nothing outside their (grown) boxes did."""
    changed = np.abs(out.astype(int) - scene["image"]).sum(axis=2) > 0
    inside = np.zeros_like(changed)
    people = []
    for i, (x1, y1, x2, y2) in enumerate(scene["boxes"]):
        w, h = x2 - x1, y2 - y1
        box = (slice(int(max(y1 - 0.6 * h, 0)), int(y2 + 0.3 * h)), slice(int(max(x1 - 0.3 * w, 0)), int(x2 + 0.3 * w)))
        if changed[box].mean() > 0.05:
            people.append(i)
            inside[box] = True
    assert not changed[~inside].any(), "pixels changed outside the chosen faces"
    return people


def test_one_face_by_order_and_index(bundled_models_dir: Path, scene) -> None:
    out = _swap(bundled_models_dir, scene, scene["astronaut"], **{"faces.select.mode": "one", "faces.select.index": 1})
    assert _changed_people(scene, out) == [1]
    out = _swap(
        bundled_models_dir,
        scene,
        scene["astronaut"],
        **{"faces.select.mode": "one", "faces.select.order": "right-left"},
    )
    assert _changed_people(scene, out) == [5]


def test_reference_swaps_only_that_person(bundled_models_dir: Path, scene) -> None:
    out = _swap(
        bundled_models_dir,
        scene,
        scene["astronaut"],
        **{"faces.select.mode": "reference", "faces.select.reference": [str(scene["refs"][3])]},
    )
    assert _changed_people(scene, out) == [3]


def test_mapping_gives_each_person_their_source(bundled_models_dir: Path, scene) -> None:
    mapping = [
        {"reference": str(scene["refs"][0]), "source": str(scene["hanks"])},
        {"reference": str(scene["refs"][4]), "source": str(scene["astronaut"])},
    ]
    kept = _swap(bundled_models_dir, scene, scene["astronaut"], **{"faces.map": mapping})
    assert _changed_people(scene, kept) == [0, 4]  # unmatched: keep
    all_hanks = _swap(bundled_models_dir, scene, scene["hanks"])
    all_astronaut = _swap(bundled_models_dir, scene, scene["astronaut"])
    for person, reference in ((0, all_hanks), (4, all_astronaut)):
        x1, y1, x2, y2 = scene["boxes"][person].astype(int)
        assert np.array_equal(kept[y1:y2, x1:x2], reference[y1:y2, x1:x2])
    # unmatched: default-source -> everybody else gets the main source (Tom Hanks here).
    default = _swap(
        bundled_models_dir, scene, scene["hanks"], **{"faces.map": mapping, "faces.unmatched": "default-source"}
    )
    assert _changed_people(scene, default) == [0, 1, 2, 3, 4, 5]
    x1, y1, x2, y2 = scene["boxes"][4].astype(int)
    assert np.array_equal(default[y1:y2, x1:x2], all_astronaut[y1:y2, x1:x2])


def test_portrait_of_someone_else_is_left_alone(bundled_models_dir: Path, scene, tmp_path: Path) -> None:

    processor = _stages(
        _config(
            bundled_models_dir,
            scene["recognizer"],
            **{"faces.select.mode": "reference", "faces.select.reference": [str(scene["refs"][2])]},
        )
    )
    processor.set_source_images([scene["hanks"]])
    portrait = cv2.imread(str(scene["astronaut"]))
    out = portrait.copy()
    processor.swap(out, processor.detect_still(out))
    assert np.array_equal(out, portrait)  # not the reference person: byte-identical
    processor.people.set_selection(reference=[scene["astronaut"]])  # live: now she is
    out = portrait.copy()
    processor.swap(out, processor.detect_still(out))
    assert np.abs(out.astype(int) - portrait)[100:220, 150:260].mean() > 3.0  # her face


def test_live_mapping_add_and_remove(bundled_models_dir: Path, scene) -> None:

    processor = _stages(_config(bundled_models_dir, scene["recognizer"]))
    processor.set_source_images([scene["astronaut"]])
    processor.people.add_mapping(scene["refs"][2], scene["hanks"])
    state = processor.people.rules.describe()
    assert state["map"] == [{"reference": str(scene["refs"][2]), "source": str(scene["hanks"])}]
    image = scene["image"].copy()
    processor.swap(image, processor.detect_still(image))
    assert _changed_people(scene, image) == [2]
    processor.people.remove_mapping(str(scene["refs"][2]))
    assert processor.people.identities == {} and not processor.people.active
    image = scene["image"].copy()
    processor.swap(image, processor.detect_still(image))
    assert _changed_people(scene, image) == [0, 1, 2, 3, 4, 5]


def test_recognised_once_per_track_in_a_clip(bundled_models_dir: Path, scene) -> None:
    """Twenty frames of the group photo: each of the six people is recognised once, not
    per frame."""

    processor = _stages(
        _config(
            bundled_models_dir,
            scene["recognizer"],
            **{
                "faces.map": [{"reference": str(scene["refs"][1]), "source": str(scene["hanks"])}],
                "faces.tracking.detect_every": 3,
            },
        )
    )
    processor.set_source_images([scene["astronaut"]])
    for index in range(20):
        faces = processor.detect(scene["image"], index)
        assert [f.source for f in faces] == [str(scene["hanks"])]
    assert processor.people.selector.recognitions == 6


def test_bundled_profile_refuses_reference_naming_the_model(bundled_models_dir: Path, scene) -> None:

    config = load_config(
        None,
        {
            "models.dir": str(bundled_models_dir),
            "inference.provider": "cpu",
            "faces.select.mode": "reference",
            "faces.select.reference": [str(scene["refs"][0])],
        },
    )
    with pytest.raises(ConfigError, match=r"streamswap models fetch arcface_w600k_r50"):
        _stages(config)
