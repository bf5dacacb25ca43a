"""Model files are what they claim to be: a flipped byte in a converted bundled model fails
`models verify` and loading; a stamp does not vouch for a file it was not written for."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from streamswap.errors import ModelError
from streamswap.models import bundled
from streamswap.models.catalogue import ModelSpec, build_catalogue
from streamswap.models.settings import ModelsSettings
from streamswap.models.store import MISMATCH, VERIFIED, ModelStore

REPO = Path(__file__).resolve().parent.parent


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # inside the weights: still a valid graph with the right I/O
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", sorted(bundled.BUNDLED))
def test_a_flipped_byte_in_a_converted_bundled_model_fails_verify_and_load(
    tmp_path: Path,
    bundled_models_dir: Path,
    name: str,
) -> None:
    file = bundled.BUNDLED[name].file
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(bundled_models_dir / file, models / file)
    store = ModelStore(ModelsSettings(dir=str(models)))
    assert store.verify(name).state == VERIFIED  # the conversion is reproducible: the pin holds
    _flip_a_byte(models / file)
    bundled.check_bundled_graph(name, models / file)  # the old check (I/O names) still passes…
    status = store.verify(name)
    assert status.state == MISMATCH and "not the pinned conversion" in status.reason  # …this does not
    with pytest.raises(ModelError, match="not the pinned conversion"):
        store.resolve(name)
    env = {**os.environ, "STREAMSWAP_CONFIG": "", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "streamswap", "--models-dir", str(models), "models", "verify", name],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode != 0 and result.stdout.startswith(f"MISMATCH  {name}:"), result.stdout


def test_other_converter_versions_derive_the_expected_hash(
    monkeypatch: pytest.MonkeyPatch, bundled_models_dir: Path
) -> None:
    monkeypatch.setattr(bundled, "CONVERTER", {"tflite2onnx": "0.0.1", "onnx": "0.0.1"})
    bundled._derived_sha256.cache_clear()
    try:
        # Not the pinned versions: the pinned .tflite is converted again and hashed, which with
        # the same converter gives the pinned value (the conversion is byte-reproducible).
        assert bundled.expected_sha256("blazeface") == bundled.BUNDLED["blazeface"].onnx_sha256
    finally:
        bundled._derived_sha256.cache_clear()


def test_a_different_source_tflite_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, bundled_models_dir: Path
) -> None:
    from dataclasses import replace

    changed = dict(bundled.BUNDLED)
    changed["facemesh"] = replace(changed["facemesh"], tflite_sha256="0" * 64)
    monkeypatch.setattr(bundled, "BUNDLED", changed)
    with pytest.raises(ModelError, match="not the face_landmark.tflite this streamswap converts"):
        bundled.convert_bundled("facemesh", tmp_path)
    assert not list(tmp_path.iterdir())


PAYLOAD = os.urandom(4096)


def _spec() -> ModelSpec:
    return ModelSpec(
        name="big",
        role="swapper",
        file="big.onnx",
        urls=("http://127.0.0.1:9/big.onnx",),
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size=len(PAYLOAD),
        license="MIT",
        commercial=True,
        contract="inswapper",
        inputs="x",
        outputs="y",
    )


def test_a_forged_stamp_does_not_make_a_random_file_verified(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamswap.models.store as store_module

    monkeypatch.setattr(store_module, "HASH_ALWAYS_BELOW", 0)  # a file big enough to rely on stamps
    store = ModelStore(ModelsSettings(dir=str(tmp_path)), build_catalogue([_spec()]))
    path = tmp_path / "big.onnx"
    path.write_bytes(os.urandom(len(PAYLOAD)))  # the right size, the wrong bytes
    st = path.stat()
    stamps = tmp_path / ".stamps"
    stamps.mkdir()
    # What a stamp used to be (size, mtime, hash): written by hand with the pinned hash.
    (stamps / "big.onnx.json").write_text(
        json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _spec().sha256})
    )
    assert store.check("big").state == MISMATCH
    with pytest.raises(ModelError, match="fails verification"):
        store.resolve("big")
    # A genuine stamp moved onto another file (a replaced file keeps the name, not the inode).
    path.write_bytes(PAYLOAD)
    assert store.check("big").state == VERIFIED
    genuine = (stamps / "big.onnx.json").read_text()
    impostor = tmp_path / "impostor"
    impostor.write_bytes(os.urandom(len(PAYLOAD)))
    os.utime(impostor, ns=(st.st_atime_ns, path.stat().st_mtime_ns))
    os.replace(impostor, path)
    (stamps / "big.onnx.json").write_text(genuine)
    assert store.check("big").state == MISMATCH


def test_an_older_conversion_in_another_initializer_order_is_migrated(tmp_path: Path, bundled_models_dir: Path) -> None:
    import onnx

    file = bundled.BUNDLED["blazeface"].file
    model = onnx.load(os.fspath(bundled_models_dir / file))
    reordered = list(reversed(model.graph.initializer))
    copies = [onnx.TensorProto() for _ in reordered]
    for copy, tensor in zip(copies, reordered):
        copy.CopyFrom(tensor)
    del model.graph.initializer[:]
    model.graph.initializer.extend(copies)
    models = tmp_path / "models"
    models.mkdir()
    onnx.save(model, os.fspath(models / file))  # what streamswap wrote before the pin
    store = ModelStore(ModelsSettings(dir=str(models)))
    assert store.verify("blazeface").state == VERIFIED
    assert hashlib.sha256((models / file).read_bytes()).hexdigest() == bundled.BUNDLED["blazeface"].onnx_sha256
    # The same order change plus one flipped byte is not an older conversion: refused.
    onnx.save(model, os.fspath(models / file))
    _flip_a_byte(models / file)
    assert store.verify("blazeface").state == MISMATCH


def test_a_fifo_under_a_model_name_is_refused_without_blocking(tmp_path: Path) -> None:
    spec = ModelSpec(
        name="nohash",
        role="swapper",
        file="nohash.onnx",
        urls=(),
        sha256=None,
        size=None,
        license="MIT",
        commercial=True,
        contract="inswapper",
        inputs="x",
        outputs="y",
    )
    store = ModelStore(ModelsSettings(dir=str(tmp_path)), build_catalogue([spec]))
    os.mkfifo(tmp_path / "nohash.onnx")
    status = store.verify("nohash")
    assert status.state == MISMATCH and "FIFO" in status.reason
    with pytest.raises(ModelError, match="FIFO"):
        store.resolve("nohash")
    with pytest.raises(ModelError, match="FIFO"):
        store.resolve(str(tmp_path / "nohash.onnx"), contract="inswapper")
