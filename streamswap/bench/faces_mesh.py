"""Mesh swapper rows of `streamswap bench faces`: landmarks / swap / paste per frame at
720p and 1080p, for all faces of the group photo and for one face (the ≤ 15 ms target).

"swap" is the mesh warp plus the colour match (the part that replaces a generator);
"paste" is the mask and blend into the frame (what paste-back is for neural swappers).
"""

from __future__ import annotations

import numpy as np

from streamswap.bench.faces import BenchScene, StageResult, StageTimer, median_ms, package_image
from streamswap.faces.identity import SourceFace, SourceFaces


def mesh_timers(threads: int = 0) -> list[StageTimer]:
    """Two timers: all faces of each scene, and its largest face alone."""
    state: dict[str, object] = {}

    def setup(scene: BenchScene):
        if "mesh" not in state:
            from streamswap.faces.detectors import make_detector
            from streamswap.faces.landmarks import FaceMesh
            from streamswap.faces.settings import DetectorSettings
            from streamswap.faces.swappers.mesh import MeshSwapper
            from streamswap.inference.ort import open_ort_session
            from streamswap.inference.settings import InferenceSettings
            from streamswap.models.bundled import convert_bundled

            settings = InferenceSettings(provider="cpu", threads=threads)
            mesh = FaceMesh(open_ort_session(convert_bundled("facemesh", scene.workdir), settings))
            detector = make_detector(
                "blazeface", open_ort_session(convert_bundled("blazeface", scene.workdir), settings), DetectorSettings()
            )
            swapper = MeshSwapper()
            source = package_image("skimage", "data", "astronaut.png")
            source_faces = detector.detect(source) if source is not None else []
            if source is None or not source_faces:  # no sample photo: the scene's own first face is the source
                source, source_faces = scene.frame, scene.faces[:1]
            face = source_faces[0]
            face.landmarks = mesh.landmarks(source, face)
            swapper.set_identity(swapper.prepare_identity(SourceFaces((SourceFace(source, face, "source"),))))
            state.update(mesh=mesh, swapper=swapper)
        return state["mesh"], state["swapper"]

    def measure(scene: BenchScene, faces: list) -> StageResult:
        mesh, swapper = setup(scene)
        landmarks_ms = median_ms(lambda: mesh.landmarks_many(scene.frame, faces), scene.repeat)
        meshes = mesh.landmarks_many(scene.frame, faces)
        for face, lm in zip(faces, meshes):
            face.landmarks = lm
        frame = scene.frame.copy()
        restore = lambda: np.copyto(frame, scene.frame)  # noqa: E731
        swapper.swap(frame, faces)  # warm the buffers
        profile: dict[str, float] = {}
        runs = max(scene.repeat, 1)
        swapper.profile = profile
        for _ in range(runs):
            restore()
            swapper.swap(frame, faces)
        swapper.profile = None
        total_ms = median_ms(lambda: swapper.swap(frame, faces), scene.repeat, setup=restore)
        phases = sum(profile.values()) or 1.0
        swap_share = (profile.get("warp", 0.0) + profile.get("color", 0.0)) / phases
        return StageResult(
            "mesh",
            scene.label,
            len(faces),
            {
                "landmarks": landmarks_ms,
                "swap": total_ms * swap_share,
                "paste": total_ms * (1.0 - swap_share),
            },
        )

    def all_faces(scene: BenchScene) -> StageResult:
        return measure(scene, [_copy(f) for f in scene.faces])

    def one_face(scene: BenchScene) -> StageResult:
        largest = max(scene.faces, key=lambda f: f.area)
        row = measure(scene, [_copy(largest)])
        row.swapper = "mesh (1 face)"
        row.note = "detect is the whole frame's"
        return row

    return [all_faces, one_face]


def _copy(face):
    from dataclasses import replace

    return replace(face, box=face.box.copy(), kps=face.kps.copy(), landmarks=None)
