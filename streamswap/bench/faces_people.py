"""Per-face rows of `streamswap bench faces` for issue 13's work: the mesh swapper's texture
stretch / mirrored-fill decision, a FaceMesh region mask, and person → source mapping
(selection bookkeeping per frame, and recognition amortised over `recognize_every`).

Recognition runs a GENERATED ArcFace-shaped model (the real I/O contract, cheap arithmetic
inside): its row is the alignment, pre/post-processing and runtime overhead, not the real
w600k_r50's compute — multiply that model's own per-face time by 1/recognize_every.
"""

from __future__ import annotations

import numpy as np

from streamswap.bench.faces import BenchScene, StageResult, StageTimer, median_ms, package_image


def people_timers(threads: int = 0) -> list[StageTimer]:
    state: dict[str, object] = {}

    def setup(scene: BenchScene):
        if "identity" not in state:
            from streamswap.bench import synthetic
            from streamswap.faces.detectors import make_detector
            from streamswap.faces.identity import ArcFace
            from streamswap.faces.landmarks import FaceMesh
            from streamswap.faces.settings import DetectorSettings
            from streamswap.faces.swappers.mesh import prepare_identity
            from streamswap.inference.ort import open_ort_session
            from streamswap.inference.settings import InferenceSettings
            from streamswap.models.bundled import convert_bundled

            settings = InferenceSettings(provider="cpu", threads=threads)
            mesh = FaceMesh(open_ort_session(convert_bundled("facemesh", scene.workdir), settings))
            detector = make_detector(
                "blazeface", open_ort_session(convert_bundled("blazeface", scene.workdir), settings), DetectorSettings()
            )
            source = package_image("skimage", "data", "astronaut.png")
            faces = detector.detect(source) if source is not None else []
            if source is None or not faces:  # no sample photo: the scene's own first face
                source, faces = scene.frame, scene.faces[:1]
            face = faces[0]
            recognizer = ArcFace(
                open_ort_session(synthetic.make_arcface_model(scene.workdir / "arcface.onnx"), settings)
            )
            state.update(
                mesh=mesh,
                identity=prepare_identity(source, mesh.landmarks(source, face)),
                recognizer=recognizer,
            )
        return state

    def timer(scene: BenchScene) -> StageResult:
        from dataclasses import replace

        from streamswap.faces.masks import region_mask
        from streamswap.faces.selection import Mapping, SelectionRules, Selector
        from streamswap.faces.swappers.mesh import painted_stretch

        st = setup(scene)
        faces = [replace(f, box=f.box.copy(), kps=f.kps.copy(), track_id=i) for i, f in enumerate(scene.faces)]
        meshes = list(st["mesh"].landmarks_many(scene.frame, faces))
        for face, lm in zip(faces, meshes):
            face.landmarks = lm
        n = max(len(faces), 1)
        identity = st["identity"]
        stretch = median_ms(lambda: [painted_stretch(identity, lm) for lm in meshes], scene.repeat) / n
        from streamswap.faces.swappers.mesh import MeshSwapper

        h, w = scene.frame.shape[:2]
        # The faces whose oval lies in the frame (the swap skips the others too).
        placed = [(lm, r) for lm in meshes if (r := MeshSwapper._region(lm[:, :2], w, h)) is not None]
        shifts = [np.array([[1, 0, -r[0]], [0, 1, -r[1]]], np.float64) for _, r in placed]
        mask = (
            median_ms(
                lambda: [region_mask(lm, m, (r[2], r[3]), ["nose", "lips"]) for (lm, r), m in zip(placed, shifts)],
                scene.repeat,
            )
            / n
        )
        recognizer = st["recognizer"]
        embed_ms = median_ms(lambda: recognizer.embed(scene.frame, faces), scene.repeat) / n
        rules = SelectionRules(mappings=(Mapping("ref", np.eye(512, dtype=np.float32)[:1], "star"),))
        selector = Selector(rules, recognizer.embed, recognize_every=30)
        selector.plan(scene.frame, faces, 0)  # every track recognised once
        frame_no = iter(range(1, 10**9))
        select = median_ms(lambda: selector.plan(scene.frame, faces, next(frame_no) % 29 + 1), scene.repeat) / n
        return StageResult(
            "per face: new work",
            scene.label,
            len(faces),
            {
                "stretch": stretch,
                "mask": mask,
                "select": select,
                "recognize": embed_ms / 30.0,
            },
            note="ms per face; mask = FaceMesh region mask (nose+lips) on the face region; "
            "recognize = generated ArcFace, once per 30 frames",
        )

    return [timer]
