"""ModelStore: models dir precedence, cached verification, refusals, users' own files."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path

import pytest
from hostile_files import INSWAPPER_IO, onnx_bytes

from streamswap.errors import ModelError
from streamswap.models.catalogue import CATALOGUE, ModelSpec, all_specs, build_catalogue, get_spec
from streamswap.models.settings import ModelsSettings
from streamswap.models.store import ModelStore, default_models_dir, models_used_by

PAYLOAD = b"not really onnx, but hashed like one" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


def spec(name: str = "tiny", **kw: object) -> ModelSpec:
    base = ModelSpec(
        name=name,
        role="swapper",
        file=f"{name}.onnx",
        urls=("http://127.0.0.1:9/x",),
        sha256=SHA,
        size=len(PAYLOAD),
        license="MIT",
        commercial=True,
        contract="inswapper",
        inputs="x",
        outputs="y",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def store_with(tmp_path: Path, *specs: ModelSpec, **settings: object) -> ModelStore:
    return ModelStore(
        ModelsSettings(dir=str(tmp_path), **settings),  # type: ignore[arg-type]
        build_catalogue(specs or [spec()]),
    )


def test_catalogue_has_every_required_model_with_facts() -> None:
    required = {
        "scrfd_2.5g",
        "retinaface_10g",
        "yoloface_8n",
        "yunet_2023_mar",
        "arcface_w600k_r50",
        "inswapper_128",
        "inswapper_128_fp16",
        "hyperswap_1a_256",
        "simswap_256",
        "crossface_simswap",
        "ghost_1_256",
        "crossface_ghost",
        "gfpgan_1.4",
        "blazeface",
        "facemesh",
        "mesh",
    }
    assert required <= set(CATALOGUE)
    for s in all_specs():
        if s.builtin:  # code, not a file
            assert s.file == "" and s.urls == () and s.sha256 is None and s.size is None and not s.bundled
            assert s.commercial and s.license.startswith("Apache-2.0")
            continue
        if s.bundled:
            assert s.urls == () and s.commercial and s.license.startswith("Apache-2.0")
            continue
        assert s.urls and all(u.startswith("https://") and u.endswith(".onnx") for u in s.urls)
        assert s.sha256 is None or len(s.sha256) == 64
    assert get_spec("simswap_256").companion == "crossface_simswap"
    assert get_spec("ghost_1_256").companion == "crossface_ghost"
    assert get_spec("hyperswap_1a_256").urls[0].endswith("/models-3.3.0/hyperswap_1a_256.onnx")
    assert "/models-3.4.0/" in get_spec("crossface_ghost").urls[0]
    assert get_spec("inswapper_128").urls[1] == (
        "https://huggingface.co/facefusion/models-3.0.0/resolve/main/inswapper_128.onnx"
    )
    assert not get_spec("inswapper_128").commercial and get_spec("gfpgan_1.4").commercial
    with pytest.raises(TypeError):
        CATALOGUE["x"] = spec()  # type: ignore[index]


def test_bundled_file_names_match_the_converter() -> None:
    from streamswap.models import bundled  # our own module: a failure to import is a failure

    for name, model in bundled.BUNDLED.items():
        assert get_spec(name).file == model.file


def test_unknown_name_lists_known_models(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'; known models: .*inswapper_128"):
        get_spec("nope")
    with pytest.raises(ModelError, match="known models: tiny"):
        store_with(tmp_path).resolve("nope")


def test_models_dir_precedence(tmp_path: Path) -> None:
    env = {"STREAMSWAP_MODELS_DIR": str(tmp_path / "env"), "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert default_models_dir(ModelsSettings(dir=str(tmp_path / "cfg")), env) == tmp_path / "cfg"
    assert default_models_dir(ModelsSettings(), env) == tmp_path / "env"
    del env["STREAMSWAP_MODELS_DIR"]
    assert default_models_dir(ModelsSettings(), env) == tmp_path / "xdg" / "streamswap" / "models"
    assert default_models_dir(ModelsSettings(), {"HOME": "/home/u"}) == Path("/home/u/.cache/streamswap/models")


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as err:
        store_with(tmp_path).resolve("tiny")
    assert str(tmp_path / "tiny.onnx") in str(err.value)
    assert "streamswap models fetch tiny" in str(err.value) and "models.mirror" in str(err.value)


def test_verified_file_is_hashed_once_then_trusted_by_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamswap.models.store as store_module

    monkeypatch.setattr(store_module, "HASH_ALWAYS_BELOW", 0)  # as if it were a 500 MB swapper
    hashed: list[Path] = []
    real_hash = store_module.file_sha256
    monkeypatch.setattr(store_module, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    (tmp_path / "tiny.onnx").write_bytes(PAYLOAD)
    store = store_with(tmp_path)
    assert store.status("tiny").state == "unchecked"
    resolved = store.resolve("tiny")
    assert resolved.verified and resolved.sha256 == SHA and resolved.path == tmp_path / "tiny.onnx"
    assert store.resolve("tiny").verified and len(hashed) == 1  # the stamp is trusted: hashed once
    # Same size and mtime but other bytes: the file's identity (ctime) changed, so the stamp
    # no longer vouches for it and loading hashes it again and refuses it.
    st = (tmp_path / "tiny.onnx").stat()
    (tmp_path / "tiny.onnx").write_bytes(bytes(len(PAYLOAD)))
    os.utime(tmp_path / "tiny.onnx", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(ModelError, match="fails verification"):
        store.resolve("tiny")
    assert store.verify("tiny").state == "mismatch"


def test_small_files_are_hashed_on_every_check(tmp_path: Path) -> None:
    (tmp_path / "tiny.onnx").write_bytes(PAYLOAD)
    store = store_with(tmp_path)
    assert store.status("tiny").state == "verified"  # no stamp needed below 64 MiB
    (tmp_path / "tiny.onnx").write_bytes(bytes(len(PAYLOAD)))
    assert store.status("tiny").state == "mismatch"


def test_wrong_file_under_the_catalogue_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tiny.onnx").write_bytes(bytes(len(PAYLOAD)))
    with pytest.raises(ModelError) as err:
        store_with(tmp_path).resolve("tiny")
    message = str(err.value)
    assert str(tmp_path / "tiny.onnx") in message and "fails verification" in message
    assert SHA in message and "streamswap models fetch tiny" in message


def test_wrong_size_is_refused_without_hashing(tmp_path: Path) -> None:
    (tmp_path / "tiny.onnx").write_bytes(PAYLOAD[:-1])
    status = store_with(tmp_path).status("tiny")
    assert status.state == "mismatch" and status.sha256 is None
    with pytest.raises(ModelError, match=f"{len(PAYLOAD) - 1} bytes"):
        store_with(tmp_path).resolve("tiny")


def test_commercial_switch_refuses_non_commercial_models(tmp_path: Path) -> None:
    free = spec("free")
    research = spec("research", commercial=False, license="research only")
    (tmp_path / "research.onnx").write_bytes(PAYLOAD)
    store = store_with(tmp_path, free, research, commercial=True)
    with pytest.raises(ModelError) as err:
        store.resolve("research")
    assert "does not allow commercial use" in str(err.value)
    assert "models.commercial" in str(err.value) and "free" in str(err.value)
    with pytest.raises(ModelError, match="commercial"):
        store.fetch("research")
    assert store_with(tmp_path, free, research).resolve("research").verified


def test_users_own_file_loads_unverified_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    own = tmp_path / "exports" / "my_swapper.onnx"
    own.parent.mkdir()
    export = onnx_bytes(INSWAPPER_IO)
    own.write_bytes(export)
    store = store_with(tmp_path / "models", spec())
    with caplog.at_level(logging.WARNING):
        resolved = store.resolve(str(own), contract="tiny")
    assert not resolved.verified and resolved.path == own
    assert resolved.sha256 == hashlib.sha256(export).hexdigest()
    assert resolved.spec.contract == "inswapper" and resolved.spec.file == "my_swapper.onnx"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unverified" in warnings[0].getMessage()
    # A contract name works as well as a catalogue name.
    assert store.resolve(str(own), contract="inswapper").spec.contract == "inswapper"


def test_users_own_file_needs_contract_and_existence(tmp_path: Path) -> None:
    own = tmp_path / "x.onnx"
    store = store_with(tmp_path / "models")
    with pytest.raises(ModelError, match="needs the contract it follows"):
        store.resolve(str(own))
    with pytest.raises(ModelError, match="cannot read model file"):
        store.resolve(str(own), contract="inswapper")
    with pytest.raises(ModelError, match="unknown contract 'bogus'"):
        own.write_bytes(b"x")
        store.resolve(str(own), contract="bogus")


def test_contract_mismatch_for_a_catalogue_model(tmp_path: Path) -> None:
    (tmp_path / "tiny.onnx").write_bytes(PAYLOAD)
    with pytest.raises(ModelError, match="follows the 'inswapper' contract, not 'scrfd'"):
        store_with(tmp_path).resolve("tiny", contract="scrfd")
    assert store_with(tmp_path).resolve("tiny", contract="inswapper").verified


def test_companions_come_along(tmp_path: Path) -> None:
    conv = spec("conv", role="embedding_converter", contract="crossface")
    main = spec("main", companion="conv")
    names = [s.name for s in store_with(tmp_path, main, conv).with_companions(["main", "conv"])]
    assert names == ["main", "conv"]


def test_models_used_by_config() -> None:
    from streamswap.faces.settings import FacesSettings

    faces = FacesSettings()
    # The default needs no download: the built-in mesh swapper is used, but has no file, and
    # loads no recognizer.
    assert models_used_by(faces) == ["blazeface", "facemesh", "mesh"]
    assert ModelStore(ModelsSettings(dir="/nonexistent")).missing(models_used_by(faces)) == []
    faces.swapper.model = "inswapper_128"
    faces.enhancer = "gfpgan_1.4"
    faces.detector.model = "/opt/my/det.onnx"
    assert models_used_by(faces) == ["facemesh", "gfpgan_1.4", "inswapper_128", "arcface_w600k_r50"]


def builtin_spec(name: str = "mymesh", **kw: object) -> ModelSpec:
    fields: dict = dict(file="", urls=(), sha256=None, size=None, contract="mesh", builtin=True)
    return spec(name, **{**fields, **kw})


def test_mesh_is_a_builtin_catalogue_entry(tmp_path: Path) -> None:
    """`mesh` resolves like any model: a swapper following the mesh contract, with no file,
    nothing on disk and nothing to fetch; its entry loads no recognizer (the neural ones do)."""
    store = ModelStore(ModelsSettings(dir=str(tmp_path / "models")))
    resolved = store.resolve("mesh")
    assert (resolved.spec.role, resolved.spec.contract, resolved.path, resolved.verified) == (
        "swapper",
        "mesh",
        None,
        True,
    )
    assert store.resolve("mesh", contract="mesh").spec.name == "mesh"
    assert not get_spec("mesh").needs_recognizer and get_spec("inswapper_128").needs_recognizer
    assert all(s.needs_recognizer for s in all_specs() if s.role == "swapper" and not s.builtin)
    status = store.check("mesh")
    assert status.state == "builtin" and status.path is None and status.usable and status.builtin
    assert store.verify("mesh").state == "builtin"
    assert store.fetch("mesh") == (status, None)
    assert store.missing(["mesh"]) == [] and store.partial_download("mesh") is None
    store.require(["mesh"])  # nothing to fetch: no error
    with pytest.raises(ModelError, match="mesh is built in .* it has no file"):
        store.path_of("mesh")
    with pytest.raises(ModelError, match="mesh is built in .* but faces.mask.occluder needs a model file"):
        resolved.file("faces.mask.occluder")
    assert not (tmp_path / "models").exists()  # nothing was written for it


def test_a_users_file_cannot_claim_the_builtin_contract(tmp_path: Path) -> None:
    own = tmp_path / "my_mesh.onnx"
    own.write_bytes(PAYLOAD)
    store = store_with(tmp_path, spec(), builtin_spec("mesh"), builtin_spec("other"))
    with pytest.raises(ModelError, match="'mesh' contract is built in .* name it instead of a file: mesh or other"):
        store.resolve(str(own), contract="mesh")


def test_a_builtin_entry_with_another_name_resolves_the_same(tmp_path: Path) -> None:
    store = store_with(tmp_path, spec(), builtin_spec("mymesh"))
    resolved = store.resolve("mymesh")
    assert resolved.path is None and resolved.spec.contract == "mesh" and resolved.spec.role == "swapper"
    with pytest.raises(ModelError, match="follows the 'mesh' contract, not 'inswapper'"):
        store.resolve("mymesh", contract="inswapper")


@pytest.mark.parametrize(
    "fields, why",
    [
        ({"file": "x.onnx"}, "a built-in entry has no file"),
        ({"urls": ("https://x/y.onnx",)}, "a built-in entry has no file"),
        ({"sha256": SHA}, "a built-in entry has no file"),
        ({"builtin": False}, "names no file"),
    ],
)
def test_catalogue_refuses_a_builtin_with_a_file_and_a_file_entry_without_one(fields: dict, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        build_catalogue([builtin_spec(**fields)])


def test_what_a_config_uses_follows_the_swappers_entry_not_its_name(tmp_path: Path) -> None:
    """A built-in swapper under another name loads no recognizer and is served by no model
    server; a user's file declared as a neural contract does load one."""
    from streamswap.faces.settings import FacesSettings
    from streamswap.models.store import builtin_models, role_models

    catalogue = build_catalogue([*all_specs(), builtin_spec("mymesh")])
    faces = FacesSettings()
    faces.swapper.model = "mymesh"
    assert models_used_by(faces, catalogue) == ["blazeface", "facemesh", "mymesh"]
    assert [m.role for m in role_models(faces, catalogue)] == ["detector", "landmarker"]
    assert [s.name for s in builtin_models(faces, catalogue)] == ["mymesh"]
    faces.swapper.model, faces.swapper.contract = "/opt/my_swapper.onnx", "inswapper"
    assert models_used_by(faces, catalogue) == ["blazeface", "facemesh", "arcface_w600k_r50"]
    assert [m.role for m in role_models(faces, catalogue)] == ["detector", "landmarker", "swapper", "recognizer"]
    assert builtin_models(faces, catalogue) == []
