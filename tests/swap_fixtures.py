"""Helpers shared by the align / swapper / paste tests: real photos, faces with known key
points, sessions on generated models, and a session wrapper that records its calls."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np

from streamswap.faces import align
from streamswap.faces.types import Face
from streamswap.inference.ort import open_ort_session
from streamswap.inference.settings import InferenceSettings


def package_file(package: str, *parts: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], *parts)
    return path if path.exists() else None


def sample_photo_paths() -> tuple[Path, Path, Path]:
    """(astronaut.png, t1.jpg group photo, Tom_Hanks_54745.png): required test inputs."""
    from conftest import require

    found = (
        package_file("skimage", "data", "astronaut.png"),
        package_file("insightface", "data", "images", "t1.jpg"),
        package_file("insightface", "data", "images", "Tom_Hanks_54745.png"),
    )
    require(found[0] is not None, "scikit-image's astronaut.png (pip install scikit-image)")
    require(
        found[1] is not None and found[2] is not None,
        "insightface's t1.jpg and Tom_Hanks_54745.png (pip install insightface)",
    )
    return found  # type: ignore[return-value]


def astronaut() -> np.ndarray | None:
    path = package_file("skimage", "data", "astronaut.png")
    return None if path is None else cv2.imread(os.fspath(path))


def group_photo() -> np.ndarray | None:
    path = package_file("insightface", "data", "images", "t1.jpg")
    return None if path is None else cv2.imread(os.fspath(path))


def tom_hanks() -> np.ndarray | None:
    """A real 112×112 ArcFace-aligned face: its key points ARE the 112 template."""
    path = package_file("insightface", "data", "images", "Tom_Hanks_54745.png")
    return None if path is None else cv2.imread(os.fspath(path))


# Hand-placed key points of the astronaut's face (skimage astronaut.png, 512×512).
ASTRONAUT_KPS = np.array(
    [[176.0, 118.0], [226.0, 112.0], [205.0, 150.0], [188.0, 178.0], [228.0, 173.0]], dtype=np.float32
)


def similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    c, s = scale * np.cos(a), scale * np.sin(a)
    return np.array([[c, -s, tx], [s, c, ty]], dtype=np.float64)


def face_at(scale: float, angle: float, tx: float, ty: float) -> Face:
    """A face whose 5 key points are the 112 ArcFace template moved by a similarity."""
    kps = align.transform_points(align.template("arcface", 112), similarity(scale, angle, tx, ty))
    x1, y1 = kps.min(axis=0) - 30 * scale
    x2, y2 = kps.max(axis=0) + 30 * scale
    return Face(box=np.array([x1, y1, x2, y2], np.float32), score=0.9, kps=kps.astype(np.float32))


def frame_with_face(
    shape: tuple[int, int], scale: float, angle: float, tx: float, ty: float
) -> tuple[np.ndarray, Face]:
    """A frame holding the real Tom Hanks crop placed by a similarity, and its Face."""
    face = tom_hanks()
    h, w = shape
    frame = np.full((h, w, 3), 90, np.uint8)
    frame[:] = np.linspace(40, 200, w, dtype=np.uint8)[None, :, None]
    M = similarity(scale, angle, tx, ty)
    if face is not None:
        cv2.warpAffine(face, M, (w, h), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
    return frame, face_at(scale, angle, tx, ty)


def cpu_session(path: Path):
    return open_ort_session(Path(path), InferenceSettings(provider="cpu", threads=1))


class CountingSession:
    """Wraps a Session; counts run() calls and keeps the last feeds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0
        self.feeds: list[dict[str, np.ndarray]] = []

    @property
    def inputs(self):
        return self.inner.inputs

    @property
    def outputs(self):
        return self.inner.outputs

    @property
    def backend(self) -> str:
        return self.inner.backend

    def run(self, feeds: Mapping[str, np.ndarray], stream: int | None = None) -> dict[str, np.ndarray]:
        self.calls += 1
        self.feeds.append({k: np.array(v) for k, v in feeds.items()})
        return self.inner.run(feeds, stream)


class RecordingOrt:
    """An onnxruntime.InferenceSession stand-in for insightface: records the feeds."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.inner = onnxruntime.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        self.feeds: list[dict[str, np.ndarray]] = []

    def get_inputs(self):
        return self.inner.get_inputs()

    def get_outputs(self):
        return self.inner.get_outputs()

    def run(self, names, feeds):
        self.feeds.append({k: np.array(v) for k, v in feeds.items()})
        return self.inner.run(names, feeds)


def reference_module(name: str):
    """Import a parity reference (insightface, scikit-image): skipped locally when missing,
    a failure under CI=true."""
    import importlib

    from conftest import require

    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        require(False, f"{name} (the parity reference): {exc}")
    return module


class FaceTool:
    """The face stages (`faces.stages.FaceStageSet`) driven by hand on the test's thread,
    as a tool does with still images: detect, swap, reset, identities."""

    def __init__(self, stages) -> None:
        self.stages = stages
        self.detect = stages.detect.faces  # found or tracked, then selected
        self.swap = stages.swap.swap
        self.reset = stages.detect.reset
        self.detect_still = stages.detect_still
        self.set_source_images = stages.set_source_images
        self.swapper = stages.swap.swapper
        self.people = stages.people

    @property
    def source_names(self) -> list[str]:
        return list(self.stages.source_names)
