"""The TensorRT engine cache: file names, JSON sidecars, validity, build locks.

An engine is only valid for the exact model file (SHA-256), TensorRT version, GPU model and
compute capability, precision, optimisation profile and build recipe it was built with.
All of these form an `EngineKey`; the file name carries a readable digest of it, and the
JSON sidecar records it in full. A lookup loads an engine only when the sidecar equals the
wanted key and the engine file's own SHA-256 matches the one recorded at build time.
Naming is described for users in engines/README.md.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from streamswap.errors import BackendUnavailable
from streamswap.logs import kv

log = logging.getLogger(__name__)

# Bump when how we build changes (flags, fp16 conversion, profile policy): old engines
# then no longer match and are rebuilt.
RECIPE = "streamswap-trt-1"
SIDECAR_FORMAT = 1

Shape = tuple[int, ...]


@dataclass(frozen=True)
class InputProfile:
    """min/opt/max shapes of one dynamic input (all equal for a fixed input)."""

    name: str
    min: Shape
    opt: Shape
    max: Shape

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "InputProfile":
        return cls(str(data["name"]), tuple(data["min"]), tuple(data["opt"]), tuple(data["max"]))


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Any field that differs means another engine."""

    model: str  # readable model name (file stem)
    model_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str  # "8.7"
    precision: str  # fp32 | fp16 | int8
    profile: tuple[InputProfile, ...]
    recipe: str = RECIPE

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["profile"] = [p.to_json() for p in self.profile]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "EngineKey":
        return cls(
            model=str(data["model"]),
            model_sha256=str(data["model_sha256"]),
            trt_version=str(data["trt_version"]),
            gpu_name=str(data["gpu_name"]),
            compute_capability=str(data["compute_capability"]),
            precision=str(data["precision"]),
            profile=tuple(InputProfile.from_json(p) for p in data["profile"]),
            recipe=str(data.get("recipe", "")),
        )

    @property
    def digest(self) -> str:
        """A short hash over the whole key (profile and recipe included)."""
        blob = json.dumps(self.to_json(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:10]

    @property
    def stem(self) -> str:
        cc = self.compute_capability.replace(".", "")
        return (
            f"{slug(self.model)}-{self.model_sha256[:12]}-trt{self.trt_version}-"
            f"{slug(self.gpu_name)}-sm{cc}-{self.precision}-{self.digest}"
        )

    def differences(self, other: "EngineKey") -> list[str]:
        """Names of the key fields that differ (for 'stale because ...' messages)."""
        mine, theirs = self.to_json(), other.to_json()
        return [name for name in mine if mine[name] != theirs.get(name)]


def slug(text: str) -> str:
    """File-name-safe lower-case form: 'NVIDIA GeForce RTX 4090' -> 'nvidia-geforce-rtx-4090'."""
    return re.sub(r"[^a-z0-9._]+", "-", text.lower()).strip("-") or "unknown"


def file_sha256(path: Path, chunk: int = 8 << 20) -> str:
    """Hex SHA-256 of a file read in large chunks (model files, engines; the model store too)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class CacheEntry:
    """One engine file in the cache, with its sidecar (None when missing/unreadable)."""

    engine: Path
    key: EngineKey | None
    sidecar: dict[str, Any] = field(default_factory=dict)
    problem: str | None = None  # why the entry itself is broken (no sidecar, bad JSON, ...)


@dataclass(frozen=True)
class Lookup:
    """The result of looking a key up: a loadable engine, or why there is none."""

    path: Path
    fresh: bool
    reason: str  # "ok", "missing", or what makes the existing file unusable


class EngineCache:
    """Engines, sidecars, timing and calibration caches in one folder."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    # -- names ----------------------------------------------------------------------------
    def engine_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.stem}.engine"

    def sidecar_path(self, key_or_engine: EngineKey | Path) -> Path:
        engine = key_or_engine if isinstance(key_or_engine, Path) else self.engine_path(key_or_engine)
        return engine.with_suffix(".json")

    def lock_path(self, key: EngineKey) -> Path:
        return self.dir / f"{key.stem}.lock"

    def timing_cache_path(self, gpu_name: str, compute_capability: str, trt_version: str) -> Path:
        cc = compute_capability.replace(".", "")
        return self.dir / f"timing-{slug(gpu_name)}-sm{cc}-trt{trt_version}.cache"

    def calibration_cache_path(self, model: str, model_sha256: str) -> Path:
        return self.dir / f"calib-{slug(model)}-{model_sha256[:12]}.cache"

    # -- lookup / store -------------------------------------------------------------------
    def lookup(self, key: EngineKey) -> Lookup:
        """Whether a valid engine for `key` is here. Never trusts a file without its sidecar."""
        path = self.engine_path(key)
        if not path.exists():
            return Lookup(path, False, "missing")
        sidecar = self._read_sidecar(path)
        if sidecar is None:
            return Lookup(path, False, "no readable sidecar")
        try:
            recorded = EngineKey.from_json(sidecar["key"])
        except (KeyError, TypeError, ValueError):
            return Lookup(path, False, "sidecar has no valid key")
        if recorded != key:
            return Lookup(path, False, "built for a different " + ", ".join(key.differences(recorded)))
        if sidecar.get("engine_bytes") != path.stat().st_size:
            return Lookup(path, False, "engine file size differs from its sidecar (truncated?)")
        if sidecar.get("engine_sha256") != file_sha256(path):
            return Lookup(path, False, "engine file hash differs from its sidecar (corrupted)")
        return Lookup(path, True, "ok")

    def store(
        self, key: EngineKey, built: Path, *, build_seconds: float, extra: Mapping[str, Any] | None = None
    ) -> Path:
        """Move a freshly built engine file in, then write its sidecar (the sidecar last, so
        a crash in between leaves an engine without sidecar, which is never loaded)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.engine_path(key)
        with contextlib.suppress(FileNotFoundError):
            self.sidecar_path(path).unlink()
        os.replace(built, path)
        sidecar = {
            "format": SIDECAR_FORMAT,
            "key": key.to_json(),
            "engine_sha256": file_sha256(path),
            "engine_bytes": path.stat().st_size,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(build_seconds, 1),
            **dict(extra or {}),
        }
        _write_atomic(self.sidecar_path(path), json.dumps(sidecar, indent=2).encode())
        log.info("engine stored", extra=kv(engine=path.name, bytes=sidecar["engine_bytes"]))
        return path

    def _read_sidecar(self, engine: Path) -> dict[str, Any] | None:
        try:
            data = json.loads(self.sidecar_path(engine).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    # -- listing / clearing ---------------------------------------------------------------
    def entries(self) -> list[CacheEntry]:
        """Every engine file here, sorted by name, with its parsed sidecar."""
        if not self.dir.is_dir():
            return []
        out = []
        for path in sorted(self.dir.glob("*.engine")):
            sidecar = self._read_sidecar(path)
            if sidecar is None:
                out.append(CacheEntry(path, None, {}, "no readable sidecar"))
                continue
            try:
                key = EngineKey.from_json(sidecar["key"])
            except (KeyError, TypeError, ValueError):
                out.append(CacheEntry(path, None, sidecar, "sidecar has no valid key"))
                continue
            out.append(CacheEntry(path, key, sidecar))
        return out

    def other_files(self) -> list[Path]:
        """Timing and calibration caches, and sidecars whose engine is gone."""
        if not self.dir.is_dir():
            return []
        files = [*self.dir.glob("timing-*.cache"), *self.dir.glob("calib-*.cache")]
        files += [p for p in self.dir.glob("*.json") if not p.with_suffix(".engine").exists()]
        return sorted(files)

    def clear(self, *, keep_caches: bool = False) -> list[Path]:
        """Remove engines and sidecars (and timing/calibration caches unless `keep_caches`).
        Leaves anything else (README.md, lock files of builds in progress) alone."""
        removed = []
        targets = [p for e in self.entries() for p in (e.engine, self.sidecar_path(e.engine))]
        for path in self.other_files():
            if keep_caches and path.suffix == ".cache":
                continue
            targets.append(path)
        for path in targets:
            try:
                path.unlink()
                removed.append(path)
            except FileNotFoundError:
                pass
        return removed

    # -- locking --------------------------------------------------------------------------
    @contextlib.contextmanager
    def build_lock(self, key: EngineKey, timeout_s: float, waiting: "Any | None" = None) -> Iterator[None]:
        """Hold an exclusive lock for building `key` (across processes: fcntl.flock).

        While another process holds it, waits up to `timeout_s` (calling `waiting()` every
        few seconds so a service can keep systemd informed), then raises BackendUnavailable.
        """
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path(key), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BackendUnavailable(
                f"cannot write engines to {self.dir} ({exc.strerror}); set inference.engine_cache_dir "
                "to a writable folder"
            ) from None
        try:
            deadline = time.monotonic() + timeout_s
            pause = threading.Event()  # never set: wait() is an interruptible pause
            announced = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                        raise
                if not announced:
                    log.info("waiting for another build of this engine", extra=kv(engine=key.stem))
                    announced = True
                if time.monotonic() >= deadline:
                    raise BackendUnavailable(
                        f"another process has been building {key.stem} for over {timeout_s:.0f} s "
                        f"(lock {self.lock_path(key)}); wait for it or raise inference.build_timeout_s"
                    )
                if waiting is not None:
                    waiting()
                pause.wait(0.25)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            os.close(fd)  # closing releases the flock


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(path, data)


def resolve_cache_dir(configured: str | None) -> Path:
    """inference.engine_cache_dir, else ./engines when it is a writable folder, else the XDG cache."""
    if configured:
        return Path(configured).expanduser()
    local = Path.cwd() / "engines"
    if local.is_dir() and os.access(local, os.W_OK):
        return local
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamswap" / "engines"


def machine_match(
    key: EngineKey, trt_version: str | None, gpu_name: str | None, compute_capability: str | None
) -> tuple[bool, str]:
    """Whether an entry could run here (TRT version and GPU), with a short reason."""
    problems: list[str] = []
    if trt_version is None:
        problems.append("no TensorRT here")
    elif key.trt_version != trt_version:
        problems.append(f"TensorRT {key.trt_version} ≠ {trt_version}")
    if gpu_name is None:
        problems.append("no GPU here")
    else:
        if key.gpu_name != gpu_name:
            problems.append(f"GPU {key.gpu_name} ≠ {gpu_name}")
        if key.compute_capability != compute_capability:
            problems.append(f"sm{key.compute_capability} ≠ sm{compute_capability}")
    if key.recipe != RECIPE:
        problems.append(f"recipe {key.recipe} ≠ {RECIPE}")
    return (not problems, "matches this machine" if not problems else "; ".join(problems))


def profile_from_inputs(
    inputs: Sequence[tuple[str, Sequence[Any]]], max_batch: int, size: int | None = None
) -> tuple[InputProfile, ...]:
    """min/opt/max shapes for a model's inputs: a dynamic leading dim is the batch
    (1..max_batch, tuned for 1: one face is the common frame); other dynamic dims take
    `size` (the detector's configured side), fixed.

    `inputs` are (name, shape) with dims as int (fixed, > 0) or str/None/-1 (dynamic).
    """
    profiles = []
    for name, shape in inputs:
        lo, opt, hi = [], [], []
        for axis, dim in enumerate(shape):
            if isinstance(dim, int) and dim > 0:
                lo.append(dim)
                opt.append(dim)
                hi.append(dim)
            elif axis == 0:
                lo.append(1)
                opt.append(1)
                hi.append(max_batch)
            elif size is not None:
                lo.append(size)
                opt.append(size)
                hi.append(size)
            else:
                raise BackendUnavailable(
                    f"input {name!r} has a dynamic dimension {axis} ({dim!r}) that is not a batch; "
                    "give its size (for a detector: faces.detector.size)"
                )
        profiles.append(InputProfile(name, tuple(lo), tuple(opt), tuple(hi)))
    return tuple(profiles)
