"""Engine cache: keying, invalidation, sidecars, listing, clearing, build lock, and
`ensure_engine` rebuilding whenever any key field changes. No GPU needed: the builder child
is replaced by a small script that writes an engine file and counts its builds."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from streamswap.errors import BackendUnavailable
from streamswap.inference.cuda import DeviceInfo
from streamswap.inference.engine_cache import (
    RECIPE,
    EngineCache,
    EngineKey,
    InputProfile,
    machine_match,
    profile_from_inputs,
    resolve_cache_dir,
)
from streamswap.inference.tensorrt import EngineRequest, ensure_engine

ORIN = DeviceInfo(0, "Orin", "8.7")
PROFILE = (
    InputProfile("target", (1, 3, 128, 128), (1, 3, 128, 128), (8, 3, 128, 128)),
    InputProfile("source", (1, 512), (1, 512), (8, 512)),
)


def make_key(**changes) -> EngineKey:
    key = EngineKey(
        model="inswapper_128",
        model_sha256="ab" * 32,
        trt_version="10.3.0.30",
        gpu_name="Orin",
        compute_capability="8.7",
        precision="fp16",
        profile=PROFILE,
    )
    return dataclasses.replace(key, **changes)


FAKE_BUILDER = textwrap.dedent("""
    import json, sys, pathlib
    req = json.loads(pathlib.Path(sys.argv[-1]).read_text())
    counter = pathlib.Path(req["work_dir"]).parent / "builds.txt"
    with open(counter, "a") as f:
        f.write(req["model"] + " " + req["precision"] + "\\n")
    print(json.dumps({"event": "progress", "phase": "build", "message": "fake", "fraction": 0.5}), flush=True)
    pathlib.Path(req["engine_out"]).write_bytes(("plan " + json.dumps(req["profile"])).encode())
    print(json.dumps({"event": "done", "seconds": 0.0}), flush=True)
""")


@pytest.fixture
def builder(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_builder.py"
    script.write_text(FAKE_BUILDER)
    return [sys.executable, str(script)]


def builds(cache: EngineCache) -> list[str]:
    counter = cache.dir / "builds.txt"
    return counter.read_text().splitlines() if counter.exists() else []


def test_file_name_carries_the_key_and_digest_covers_every_field() -> None:
    key = make_key()
    stem = key.stem
    assert stem.startswith("inswapper_128-abababababab-trt10.3.0.30-orin-sm87-fp16-")
    seen = {key.digest}
    for field, value in [
        ("model_sha256", "cd" * 32),
        ("trt_version", "10.3.0.31"),
        ("gpu_name", "Orin Nano"),
        ("compute_capability", "8.6"),
        ("precision", "fp32"),
        ("recipe", "other"),
        ("profile", PROFILE[:1]),
        ("model", "x"),
    ]:
        changed = make_key(**{field: value})
        assert changed.digest not in seen, field
        assert changed.differences(key) == [field]
        seen.add(changed.digest)


def test_key_round_trips_through_json() -> None:
    key = make_key()
    assert EngineKey.from_json(json.loads(json.dumps(key.to_json()))) == key


@pytest.mark.parametrize(
    "field, value",
    [
        ("model_sha256", "cd" * 32),
        ("trt_version", "8.6.2.3"),
        ("gpu_name", "NVIDIA GeForce RTX 4090"),
        ("compute_capability", "8.9"),
        ("precision", "int8"),
        ("profile", (InputProfile("target", (1, 3, 128, 128), (1, 3, 128, 128), (4, 3, 128, 128)),)),
    ],
)
def test_any_key_field_change_makes_the_entry_stale(tmp_path: Path, field: str, value) -> None:
    cache = EngineCache(tmp_path)
    built = tmp_path / "built.plan"
    built.write_bytes(b"engine")
    cache.store(make_key(), built, build_seconds=1.0)
    assert cache.lookup(make_key()).fresh
    other = make_key(**{field: value})
    found = cache.lookup(other)
    assert not found.fresh


def test_a_key_mismatch_in_the_sidecar_is_reported_by_field(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    built = tmp_path / "built.plan"
    built.write_bytes(b"engine")
    path = cache.store(make_key(), built, build_seconds=1.0)
    sidecar = json.loads(cache.sidecar_path(path).read_text())
    sidecar["key"]["gpu_name"] = "Jetson Xavier"  # same file name, foreign content
    cache.sidecar_path(path).write_text(json.dumps(sidecar))
    found = cache.lookup(make_key())
    assert not found.fresh and "gpu_name" in found.reason


def test_corrupted_or_orphaned_engines_are_never_fresh(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    built = tmp_path / "built.plan"
    built.write_bytes(b"engine-bytes")
    path = cache.store(make_key(), built, build_seconds=1.0)
    path.write_bytes(b"engine-bytEs")  # same size, other content
    assert "hash" in cache.lookup(make_key()).reason
    path.write_bytes(b"short")
    assert "size" in cache.lookup(make_key()).reason
    cache.sidecar_path(path).unlink()
    assert cache.lookup(make_key()).reason == "no readable sidecar"


def _model(tmp_path: Path, content: bytes = b"onnx-model") -> Path:
    model = tmp_path / "models" / "arcface.onnx"
    model.parent.mkdir(exist_ok=True)
    model.write_bytes(content)
    return model


def test_ensure_engine_builds_once_then_uses_the_cache(tmp_path: Path, builder: list[str]) -> None:
    cache = EngineCache(tmp_path / "engines")
    request = EngineRequest(_model(tmp_path), "fp16", PROFILE)
    seen = []
    path = ensure_engine(
        request, cache, trt_version="10.3.0.30", device=ORIN, build_command=builder, progress=seen.append
    )
    assert path.exists() and cache.lookup(request.key("10.3.0.30", ORIN)).fresh
    assert any(p.fraction == 0.5 for p in seen)
    again = ensure_engine(request, cache, trt_version="10.3.0.30", device=ORIN, build_command=builder)
    assert again == path
    assert len(builds(cache)) == 1
    assert not list(cache.dir.glob(".build-*"))  # work dirs are cleaned up


@pytest.mark.parametrize("change", ["model", "trt", "gpu_model", "cc", "precision", "profile"])
def test_ensure_engine_rebuilds_when_any_key_field_changes(tmp_path: Path, builder: list[str], change: str) -> None:
    cache = EngineCache(tmp_path / "engines")
    model = _model(tmp_path)
    request = EngineRequest(model, "fp16", PROFILE)
    ensure_engine(request, cache, trt_version="10.3.0.30", device=ORIN, build_command=builder)
    trt, device = "10.3.0.30", ORIN
    if change == "model":
        model.write_bytes(b"onnx-model-v2")
    elif change == "trt":
        trt = "10.3.0.31"
    elif change == "gpu_model":
        device = DeviceInfo(0, "Orin Nano", "8.7")
    elif change == "cc":
        device = DeviceInfo(0, "Orin", "8.6")
    elif change == "precision":
        request = dataclasses.replace(request, precision="fp32")
    elif change == "profile":
        request = dataclasses.replace(request, profile=PROFILE[:1])
    ensure_engine(request, cache, trt_version=trt, device=device, build_command=builder)
    assert len(builds(cache)) == 2


def test_building_disabled_refuses_with_the_command_to_run(tmp_path: Path, builder: list[str]) -> None:
    cache = EngineCache(tmp_path / "engines")
    request = EngineRequest(_model(tmp_path), "fp16", PROFILE, name="arcface_w600k_r50")
    with pytest.raises(
        BackendUnavailable,
        match=r"arcface_w600k_r50: no engine is cached.*`streamswap engines build` with the same config",
    ):
        ensure_engine(request, cache, trt_version="10.3.0.30", device=ORIN, build=False)
    ensure_engine(request, cache, trt_version="10.3.0.30", device=ORIN, build_command=builder)
    # a stale engine (other TensorRT) is refused too, never loaded
    with pytest.raises(BackendUnavailable, match="no engine is cached"):
        ensure_engine(request, cache, trt_version="10.4.0", device=ORIN, build=False)
    assert ensure_engine(request, cache, trt_version="10.3.0.30", device=ORIN, build=False).exists()


def test_build_lock_blocks_a_second_process_until_released(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = make_key()
    cache.dir.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import fcntl, os, sys
            fd = os.open({str(cache.lock_path(key))!r}, os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("locked", flush=True)
            sys.stdin.readline()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        waits = []
        with pytest.raises(BackendUnavailable, match="another process has been building"):
            with cache.build_lock(key, timeout_s=0.6, waiting=lambda: waits.append(1)):
                pass
        assert waits  # the waiting callback ran (systemd keep-alive hook)
    finally:
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=10)
    with cache.build_lock(key, timeout_s=5):
        assert cache.lock_path(key).read_text().strip() == str(__import__("os").getpid())


def test_concurrent_ensure_engine_builds_only_once(tmp_path: Path, builder: list[str]) -> None:
    cache = EngineCache(tmp_path / "engines")
    request = EngineRequest(_model(tmp_path), "fp16", PROFILE)
    results, errors = [], []

    def worker() -> None:
        try:
            results.append(ensure_engine(request, cache, trt_version="10.3.0.30", device=ORIN, build_command=builder))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(set(results)) == 1 and len(results) == 3
    assert len(builds(cache)) == 1


def test_entries_list_machine_match_and_clear(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("keep me")
    cache = EngineCache(tmp_path)
    for precision in ("fp16", "fp32"):
        built = tmp_path / "built.plan"
        built.write_bytes(precision.encode())
        cache.store(make_key(precision=precision), built, build_seconds=2.0)
    (tmp_path / "orphan.engine").write_bytes(b"x")
    cache.timing_cache_path("Orin", "8.7", "10.3.0.30").write_bytes(b"t")
    cache.calibration_cache_path("arcface", "ef" * 32).write_bytes(b"c")
    entries = cache.entries()
    assert len(entries) == 3
    assert [e.problem for e in entries if e.key is None] == ["no readable sidecar"]
    good = [e for e in entries if e.key is not None]
    assert {e.key.precision for e in good} == {"fp16", "fp32"}
    key = good[0].key
    assert machine_match(key, "10.3.0.30", "Orin", "8.7") == (True, "matches this machine")
    ok, why = machine_match(key, None, None, None)
    assert not ok and "no TensorRT here" in why and "no GPU here" in why
    ok, why = machine_match(key, "10.3.0.30", "NVIDIA GeForce RTX 4090", "8.9")
    assert not ok and "GPU Orin" in why and "sm8.7" in why
    assert machine_match(dataclasses.replace(key, recipe="old"), "10.3.0.30", "Orin", "8.7")[0] is False
    assert key.recipe == RECIPE

    removed = cache.clear(keep_caches=True)
    assert {p.suffix for p in removed} == {".engine", ".json"}
    assert len(list(tmp_path.glob("*.cache"))) == 2
    cache.clear()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "built.plan") == ["README.md"]


def test_profile_from_model_inputs() -> None:
    profile = profile_from_inputs([("target", ["N", 3, 128, 128]), ("source", [None, 512])], max_batch=6)
    assert profile[0] == InputProfile("target", (1, 3, 128, 128), (1, 3, 128, 128), (6, 3, 128, 128))
    assert profile[1].max == (6, 512)
    det = profile_from_inputs([("input.1", [1, 3, "h", "w"])], max_batch=1, size=320)
    assert det[0].min == det[0].max == (1, 3, 320, 320)
    with pytest.raises(BackendUnavailable, match="faces.detector.size"):
        profile_from_inputs([("input.1", [1, 3, "h", "w"])], max_batch=1)


def test_cache_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_cache_dir("/var/cache/streamswap/engines") == Path("/var/cache/streamswap/engines")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_cache_dir(None) == tmp_path / "xdg" / "streamswap" / "engines"
    (tmp_path / "engines").mkdir()
    assert resolve_cache_dir(None) == tmp_path / "engines"


def test_unwritable_cache_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cache = EngineCache(blocker / "engines")
    with pytest.raises(BackendUnavailable, match="inference.engine_cache_dir"):
        with cache.build_lock(make_key(), timeout_s=1):
            pass
