"""The model store: where model files live, whether they are the catalogue's files, and
turning a config value (catalogue name or the user's own path) into a file that may load.

Files up to 64 MiB (the bundled models, detectors) are hashed on every check. For larger
ones verification is cached in a small stamp per file under `<models dir>/.stamps/`, so a
500 MB swapper is hashed once, not on every start; a stamp counts only while it matches the
file's identity (size, mtime, inode, device, ctime), so a replaced file or a stamp copied
or written for another file means hashing again. `verify()` (`streamswap models verify`)
always re-hashes. Bundled models are checked against their pinned conversion
(models.bundled.expected_sha256); files without a published hash must be ONNX graphs with
their contract's inputs and outputs (models.contracts). A built-in entry (the mesh swapper)
has no file: its state is always BUILTIN, it resolves to no path, and there is nothing to
fetch or verify.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from streamswap.errors import ModelError, StreamswapError
from streamswap.files import kind_of, read_regular
from streamswap.inference.engine_cache import file_sha256
from streamswap.logs import kv
from streamswap.models.catalogue import CATALOGUE, ModelSpec, lookup
from streamswap.models.contracts import check_onnx_contract
from streamswap.models.fetch import FetchResult, fetch, part_path
from streamswap.models.progress import Progress
from streamswap.models.settings import ModelsSettings

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "STREAMSWAP_MODELS_DIR"
# The mirror when models.mirror (or `models fetch --mirror`) does not name one.
MIRROR_ENV = "STREAMSWAP_MODELS_MIRROR"
STAMPS = ".stamps"
# Files up to this size are hashed on every check (milliseconds); only larger ones (the
# 100-500 MB swappers) rely on a stamp, and only while it matches the file's identity.
HASH_ALWAYS_BELOW = 64 << 20

# ModelStatus.state values
MISSING = "missing"
VERIFIED = "verified"  # matches the catalogue's SHA-256 (a bundled one: its pinned conversion)
MISMATCH = "mismatch"  # present but not the catalogue's file: refused at load
UNPINNED = "unpinned"  # present; the catalogue publishes no hash (hash recorded on first use)
UNCHECKED = "unchecked"  # present, not hashed since it last changed (`models verify`)
BUILTIN = "builtin"  # code, not a file: always available, nothing on disk


def default_models_dir(settings: ModelsSettings, environ: Mapping[str, str] | None = None) -> Path:
    """models.dir (or --models-dir) > $STREAMSWAP_MODELS_DIR > $XDG_CACHE_HOME/streamswap/models."""
    env = os.environ if environ is None else environ
    if settings.dir:
        return Path(settings.dir).expanduser()
    if env.get(MODELS_DIR_ENV):
        return Path(env[MODELS_DIR_ENV]).expanduser()
    cache = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(cache).expanduser() / "streamswap" / "models"


@dataclass(frozen=True)
class ResolvedModel:
    """A model cleared for loading: its file, or no file for a built-in entry."""

    path: Path | None  # None: built in (the adapter needs no session)
    spec: ModelSpec
    sha256: str  # "" when built in
    verified: bool  # False for a user's own file or a catalogue file without a published hash

    def file(self, needs: str) -> Path:
        """The model file; ModelError for a built-in entry, saying what `needs` a file."""
        if self.path is None:
            raise ModelError(f"{self.spec.name} is built in (code, no model file), but {needs} needs a model file")
        return self.path


@dataclass(frozen=True)
class ModelStatus:
    """What is on disk for one catalogue entry (for `models list`, `verify`, `doctor`)."""

    spec: ModelSpec
    path: Path | None  # None for a built-in entry (it has no file)
    state: str
    sha256: str | None = None
    size: int | None = None
    reason: str | None = None  # why a bundled model's graph fails its check (MISMATCH)

    @property
    def present(self) -> bool:
        return self.state != MISSING

    @property
    def usable(self) -> bool:
        """Would `resolve` accept it (ignoring the commercial switch)?"""
        return self.state in (VERIFIED, UNPINNED, BUILTIN)

    @property
    def builtin(self) -> bool:
        return self.state == BUILTIN


class ModelStore:
    """Catalogue + models dir: status, fetch, verify, and resolving what the config names."""

    def __init__(
        self,
        settings: ModelsSettings,
        catalogue: Mapping[str, ModelSpec] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        if not settings.mirror and env.get(MIRROR_ENV):
            settings = replace(settings, mirror=env[MIRROR_ENV])
        self.settings = settings
        self.catalogue = CATALOGUE if catalogue is None else catalogue
        self._dir = default_models_dir(settings, env)

    @property
    def dir(self) -> Path:
        return self._dir

    # --- catalogue -------------------------------------------------------------------------

    def spec(self, name: str) -> ModelSpec:
        return lookup(self.catalogue, name)

    def specs(self) -> list[ModelSpec]:
        return list(self.catalogue.values())

    def path_of(self, name: str) -> Path:
        """Where catalogue model `name` lives (whether or not it is there yet); ModelError
        for a built-in entry, which has no file."""
        spec = self.spec(name)
        if spec.builtin:
            raise ModelError(f"{name} is built in (code, not a model file): it has no file in {self._dir}")
        return self._dir / spec.file

    def missing(self, names: Iterable[str]) -> list[ModelSpec]:
        """The downloadable catalogue models among `names` (and their companions) whose
        file is not there; bundled ones are converted on first use and built-in ones have no
        file, so neither is ever missing."""
        known = [n for n in names if n in self.catalogue]
        return [
            spec
            for spec in self.with_companions(known)
            if not spec.bundled and not spec.builtin and self.check(spec.name).state == MISSING
        ]

    def require(self, names: Iterable[str]) -> None:
        """ModelError naming every missing model among `names` at once, with the command
        that fetches them all (loading would otherwise stop at the first)."""
        missing = self.missing(names)
        if not missing:
            return
        listed = " ".join(spec.name for spec in missing)
        files = ", ".join(spec.file for spec in missing)
        what = "model file is" if len(missing) == 1 else f"{len(missing)} model files are"
        raise ModelError(
            f"{what} missing from {self._dir}: {listed}; run `streamswap models fetch {listed}` "
            f"(air-gapped: fetch from a mirror with --mirror DIR, $STREAMSWAP_MODELS_MIRROR or models.mirror, or copy {files} there)"
        )

    def with_companions(self, names: list[str]) -> list[ModelSpec]:
        """The specs for `names` plus the models they need (e.g. simswap's converter), once each."""
        out: list[ModelSpec] = []
        for name in names:
            spec = self.spec(name)
            for s in (spec, self.spec(spec.companion) if spec.companion else None):
                if s is not None and s not in out:
                    out.append(s)
        return out

    # --- status / verify -------------------------------------------------------------------

    def status(self, name: str, *, rehash: bool = False) -> ModelStatus:
        """The on-disk state of `name`: uses the stamp when current; hashes only if `rehash`."""
        spec = self.spec(name)
        if spec.builtin:
            return ModelStatus(spec, None, BUILTIN)
        path = self._dir / spec.file
        try:
            st = path.stat()
        except FileNotFoundError:
            return ModelStatus(spec, path, MISSING)
        if not stat.S_ISREG(st.st_mode):  # a FIFO or device would hang or never end hashing
            return ModelStatus(
                spec,
                path,
                MISMATCH,
                None,
                None,
                reason=(
                    f"{path}: is {kind_of(st.st_mode)}, not a model file; delete it and run "
                    f"`streamswap models fetch {spec.name}`"
                ),
            )
        if spec.size is not None and st.st_size != spec.size:
            return ModelStatus(spec, path, MISMATCH, None, st.st_size)
        if spec.bundled:
            # A few MB: hashed every time, against the pinned conversion (bundled.expected_sha256).
            sha = file_sha256(path)
            try:
                expected = self._bundled_sha256(spec)
            except ModelError as exc:
                return ModelStatus(spec, path, MISMATCH, sha, st.st_size, reason=str(exc))
            if sha != expected and self._migrate_bundled(spec, path, expected):
                sha = expected  # an older streamswap's conversion of the same graph
            if sha != expected:
                return ModelStatus(
                    spec,
                    path,
                    MISMATCH,
                    sha,
                    st.st_size,
                    reason=(
                        f"{path}: bundled model {spec.name} is not the pinned conversion (SHA-256 "
                        f"{sha[:16]}…, expected {expected[:16]}…: damaged or replaced); convert it again: "
                        f"streamswap models fetch {spec.name}"
                    ),
                )
            return ModelStatus(spec, path, VERIFIED, sha, st.st_size)
        stamp = self._read_stamp(path, st)
        if stamp is None and st.st_size <= HASH_ALWAYS_BELOW:
            rehash = True  # small enough to hash on every check: no stamp to trust or forge
        if rehash or stamp is None:
            if not rehash:
                return ModelStatus(spec, path, UNCHECKED, None, st.st_size)
            stamp = self._write_stamp(path, file_sha256(path))
        sha = stamp["sha256"]
        if spec.sha256 is None:
            # Nothing to compare the bytes with: at least they must be an ONNX graph with the
            # inputs and outputs of the model's contract.
            if not stamp.get("contract_ok"):
                try:
                    check_onnx_contract(
                        path, spec.contract, spec.name, f"delete it and run `streamswap models fetch {spec.name}`"
                    )
                except ModelError as exc:
                    return ModelStatus(spec, path, MISMATCH, sha, st.st_size, reason=str(exc))
                self._write_stamp(path, sha, contract_ok=True)
            return ModelStatus(spec, path, UNPINNED, sha, st.st_size)
        return ModelStatus(spec, path, VERIFIED if sha == spec.sha256 else MISMATCH, sha, st.st_size)

    def check(self, name: str) -> ModelStatus:
        """Like loading would: trust a current stamp, hash the file when it changed."""
        status = self.status(name)
        return self.status(name, rehash=True) if status.state == UNCHECKED else status

    def verify(self, name: str) -> ModelStatus:
        """Re-hash `name` now, ignoring any stamp (`streamswap models verify`)."""
        return self.status(name, rehash=True)

    # --- fetch -----------------------------------------------------------------------------

    def fetch(
        self,
        name: str,
        *,
        progress: Progress | None = None,
        force: bool = False,
        backoff_s: float = 1.0,
    ) -> tuple[ModelStatus, FetchResult | None]:
        """Make catalogue model `name` present and verified: download it (or convert a
        bundled one) unless it already is. Returns its status and the download, if any."""
        spec = self.spec(name)
        self._check_commercial(spec)
        if spec.builtin:  # code, not a file: nothing to fetch
            return self.status(name), None
        if spec.bundled:
            path = self._dir / spec.file
            # A converted file is derived data: one that fails its check is simply made again.
            if path.exists() and (force or self.check(name).state != VERIFIED):
                path.unlink()
            self._ensure_bundled(spec)
            return self.status(name, rehash=True), None
        if not force:
            current = self.check(name)
            if current.usable:
                return current, None
        result = fetch(spec, self._dir, self.settings, progress=progress, backoff_s=backoff_s)
        self._write_stamp(result.path, result.sha256)
        return self.status(name), result

    # --- resolve (what loading uses) ---------------------------------------------------------

    def resolve(self, model: str, contract: str | None = None) -> ResolvedModel:
        """The file to load for `model`: a catalogue name, or a path to the user's own file.

        A catalogue file must be present and match its SHA-256 (bundled ones are converted
        on first use; a built-in entry resolves to no file); a user's file needs `contract` (catalogue name or contract name it
        follows) and is loaded after a one-line "unverified" warning. Non-commercial
        models are refused when models.commercial is true.
        """
        if model in self.catalogue:
            return self._resolve_catalogue(self.spec(model), contract)
        if _looks_like_path(model):
            return self._resolve_user_file(Path(model).expanduser(), contract)
        self.spec(model)  # raises, naming the known models
        raise AssertionError("unreachable")

    def _resolve_catalogue(self, spec: ModelSpec, contract: str | None) -> ResolvedModel:
        if contract is not None and contract not in (spec.name, spec.contract):
            raise ModelError(
                f"model {spec.name} follows the {spec.contract!r} contract, not {contract!r}; "
                f"pick a model for that role (`streamswap models list`)"
            )
        self._check_commercial(spec)
        if spec.builtin:
            return ResolvedModel(None, spec, "", True)
        path = self._dir / spec.file
        if spec.bundled:
            self._ensure_bundled(spec)
            status = self.check(spec.name)
            if status.state != VERIFIED:  # the reason names the file and the fix
                raise ModelError(
                    status.reason
                    or f"{path}: bundled model {spec.name} cannot be verified; "
                    f"convert it again: streamswap models fetch {spec.name}"
                )
            assert status.sha256 is not None
            return ResolvedModel(path, spec, status.sha256, True)
        status = self.check(spec.name)
        if status.state == MISSING:
            raise ModelError(
                f"{path}: model file for {spec.name} is missing; run `streamswap models fetch "
                f"{spec.name}` (air-gapped: fetch from a mirror with --mirror DIR, $STREAMSWAP_MODELS_MIRROR or models.mirror, or copy {spec.file} "
                f"into {self._dir})"
            )
        if status.state == MISMATCH and status.reason:
            raise ModelError(f"refusing to load {spec.name}: {status.reason}")
        if status.state == MISMATCH:
            found = f"SHA-256 {status.sha256}" if status.sha256 else f"{status.size} bytes"
            pinned = f"SHA-256 {spec.sha256}" if status.sha256 else f"{spec.size} bytes"
            raise ModelError(
                f"{path}: refusing to load {spec.name}: the file fails verification ({found}, "
                f"the catalogue pins {pinned}); delete it and run `streamswap models fetch "
                f"{spec.name}`, or use your own export as a path with its contract"
            )
        assert status.sha256 is not None
        if status.state == UNPINNED:
            log.warning(
                "no published SHA-256 for this catalogue model; loading the file recorded at fetch time",
                extra=kv(model=spec.name, path=path, sha256=status.sha256[:16]),
            )
        return ResolvedModel(path, spec, status.sha256, status.state == VERIFIED)

    def _resolve_user_file(self, path: Path, contract: str | None) -> ResolvedModel:
        if contract is None:
            raise ModelError(
                f"{path}: a model given as a file path needs the contract it follows: set the "
                f"role's `contract` to a catalogue model or contract name "
                f"({', '.join(sorted({s.contract for s in self.catalogue.values()}))})"
            )
        base = self._spec_for_contract(contract)
        if base.builtin:
            named = [s.name for s in self.catalogue.values() if s.builtin and s.contract == base.contract]
            raise ModelError(
                f"{path}: the {base.contract!r} contract is built in (code, no model file); "
                f"name it instead of a file: {' or '.join(named)}"
            )
        try:
            st = path.stat()
        except OSError as exc:
            raise ModelError(f"{path}: cannot read model file ({exc.strerror}); check the path") from None
        if not stat.S_ISREG(st.st_mode):
            raise ModelError(f"{path}: is {kind_of(st.st_mode)}, not a file; give the path of an .onnx model file")
        stamp = self._read_stamp(path, st)
        if stamp is None or st.st_size <= HASH_ALWAYS_BELOW:
            stamp = self._write_stamp(path, file_sha256(path))
        if not stamp.get("contract_ok"):
            check_onnx_contract(
                path, base.contract, "your model file", "give an export that follows it, or set the matching `contract`"
            )
            stamp = self._write_stamp(path, stamp["sha256"], contract_ok=True)
        sha = stamp["sha256"]
        log.warning(
            "unverified model: your own file, not checked against the catalogue",
            extra=kv(path=path, contract=base.contract, sha256=sha[:16]),
        )
        spec = replace(
            base,
            file=path.name,
            urls=(),
            sha256=None,
            size=None,
            bundled=False,
            license=f"user-supplied (follows {base.name})",
        )
        return ResolvedModel(path.resolve(), spec, sha, False)

    def _spec_for_contract(self, contract: str) -> ModelSpec:
        spec = contract_spec(contract, self.catalogue)
        if spec is not None:
            return spec
        known = sorted(set(self.catalogue) | {s.contract for s in self.catalogue.values()})
        raise ModelError(f"unknown contract {contract!r}; use one of: {', '.join(known)}")

    # --- helpers ---------------------------------------------------------------------------

    def _check_commercial(self, spec: ModelSpec) -> None:
        if not self.settings.commercial or spec.commercial:
            return
        alternatives = [s.name for s in self.catalogue.values() if s.role == spec.role and s.commercial]
        hint = f" (commercially usable {spec.role}s: {', '.join(alternatives)})" if alternatives else ""
        raise ModelError(
            f"{spec.name} is licensed {spec.license!r}, which does not allow commercial use, "
            f"and models.commercial is true; choose another model{hint}, or set "
            "models.commercial: false if your use is non-commercial"
        )

    def _ensure_bundled(self, spec: ModelSpec) -> None:
        path = self._dir / spec.file
        if path.exists():
            return
        from streamswap.models.bundled import convert_bundled  # its converter is heavy to import

        try:
            self._dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(
                f"cannot create the models dir {self._dir} ({exc.strerror}) to convert {spec.name}; "
                "set models.dir, --models-dir or $STREAMSWAP_MODELS_DIR to a writable folder"
            ) from None
        made = convert_bundled(spec.name, self._dir)
        if Path(made).resolve() != path.resolve():
            raise ModelError(f"bundled model {spec.name} was written to {made}, expected {path}")

    def _migrate_bundled(self, spec: ModelSpec, path: Path, expected: str) -> bool:
        from streamswap.models.bundled import migrate_legacy

        return migrate_legacy(spec.name, path, expected)

    def _bundled_sha256(self, spec: ModelSpec) -> str:
        from streamswap.models.bundled import expected_sha256

        return expected_sha256(spec.name)

    def _stamp_path(self, path: Path) -> Path:
        path = path.absolute()
        if path.parent == self._dir.absolute():
            name = path.name
        else:  # a user's file elsewhere: key by its full path
            name = f"{hashlib.sha1(str(path).encode()).hexdigest()[:16]}-{path.name}"
        return self._dir / STAMPS / f"{name}.json"

    def _read_stamp(self, path: Path, st: os.stat_result) -> dict | None:
        """The stamp for `path` if it describes this very file as it is now: same size,
        mtime, inode, device and ctime (a copied, replaced or rewritten file, or a stamp
        written for another file, does not match and the file is hashed again)."""
        try:
            stamp = json.loads(read_regular(self._stamp_path(path), 4096, what="stamp").decode("utf-8"))
        except (StreamswapError, ValueError):
            return None
        if (
            isinstance(stamp, dict)
            and isinstance(stamp.get("sha256"), str)
            and all(stamp.get(k) == v for k, v in _identity(st).items())
        ):
            return stamp
        return None

    def _write_stamp(self, path: Path, sha256: str, *, contract_ok: bool = False) -> dict:
        st = path.stat()
        stamp: dict[str, Any] = {**_identity(st), "sha256": sha256}
        if contract_ok:
            stamp["contract_ok"] = True
        target = self._stamp_path(path)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(stamp), encoding="utf-8")
            os.replace(tmp, target)
        except OSError as exc:  # a read-only models dir still works, it just re-hashes
            log.debug("cannot write verification stamp", extra=kv(path=target, error=exc))
            with contextlib.suppress(OSError):
                tmp.unlink()
        return stamp

    def partial_download(self, name: str) -> Path | None:
        """The resumable part of an interrupted download of `name`, if any."""
        spec = self.spec(name)
        if spec.builtin:
            return None
        part = part_path(self._dir / spec.file)
        return part if part.exists() else None


def _identity(st: os.stat_result) -> dict[str, int]:
    """What makes a stamp belong to one file as it is now."""
    return {
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "ino": st.st_ino,
        "dev": st.st_dev,
        "ctime_ns": st.st_ctime_ns,
    }


def _looks_like_path(model: str) -> bool:
    return "/" in model or os.sep in model or model.startswith("~") or model.lower().endswith(".onnx")


def model_spec(model: str, contract: str | None, catalogue: Mapping[str, ModelSpec] = CATALOGUE) -> ModelSpec | None:
    """The catalogue entry a config value stands for: the entry called `model`, or for the
    user's own file the entry of its declared contract (catalogue name or contract name);
    None when neither is known (resolving then says what is wrong)."""
    if not _looks_like_path(model):
        return catalogue.get(model)
    return None if contract is None else contract_spec(contract, catalogue)


def contract_spec(contract: str, catalogue: Mapping[str, ModelSpec] = CATALOGUE) -> ModelSpec | None:
    """The entry a declared contract names: a catalogue name, else the first entry that
    follows that contract."""
    if contract in catalogue:
        return catalogue[contract]
    return next((s for s in catalogue.values() if s.contract == contract), None)


def swapper_needs_recognizer(faces: Any, catalogue: Mapping[str, ModelSpec] = CATALOGUE) -> bool:
    """Whether the configured swapper's identities are recognizer embeddings (the neural
    swappers; an unknown one is taken to be neural), as its catalogue entry says."""
    spec = model_spec(faces.swapper.model, faces.swapper.contract, catalogue)
    return spec is None or spec.needs_recognizer


def models_used_by(faces: Any, catalogue: Mapping[str, ModelSpec] = CATALOGUE) -> list[str]:
    """Catalogue names the face stages of a config use (`faces` is config.faces); paths to
    the user's own files are not catalogue models. The recognizer comes with a swapper
    whose catalogue entry needs it (the built-in mesh swapper does not)."""
    wanted = [faces.detector.model, faces.landmarker.model, faces.enhancer, faces.swapper.model]
    if swapper_needs_recognizer(faces, catalogue):
        wanted.append(faces.recognizer.model)
    return [m for m in dict.fromkeys(wanted) if m and not _looks_like_path(m)]


@dataclass(frozen=True)
class RoleModel:
    """One model a config's face stages load, by the role it plays."""

    role: str  # detector, landmarker, recognizer, swapper, embedding_converter, enhancer, occluder, parser
    model: str  # catalogue name or the user's path
    contract: str | None
    file_name: str  # the file's name in the models dir (or the user's file)


def role_models(faces: Any, catalogue: Mapping[str, ModelSpec] = CATALOGUE) -> list[RoleModel]:
    """The model files the face stages of a config load (`faces` is config.faces), with
    their roles: what a model server must serve. A built-in entry (the mesh swapper) has
    no file and runs in the daemon: see `builtin_models`."""
    wanted: list[tuple[str, str | None, str | None]] = [
        ("detector", faces.detector.model, faces.detector.contract),
        ("landmarker", faces.landmarker.model, faces.landmarker.contract),
        ("swapper", faces.swapper.model, faces.swapper.contract),
    ]
    if swapper_needs_recognizer(faces, catalogue):
        wanted.append(("recognizer", faces.recognizer.model, faces.recognizer.contract))
    spec = catalogue.get(faces.swapper.model)
    if spec is not None and spec.companion:
        wanted.append(("embedding_converter", spec.companion, None))
    wanted.append(("enhancer", faces.enhancer, None))
    wanted += [("occluder", faces.mask.occluder, "xseg"), ("parser", faces.mask.parser, "bisenet")]
    out = []
    for role, model, contract in wanted:
        if not model:
            continue
        spec = catalogue.get(model) if not _looks_like_path(model) else None
        if spec is not None and spec.builtin:
            continue
        file_name = spec.file if spec is not None else Path(model).name
        out.append(RoleModel(role, model, contract, file_name))
    return out


def builtin_models(faces: Any, catalogue: Mapping[str, ModelSpec] = CATALOGUE) -> list[ModelSpec]:
    """The built-in entries (code, no file) the face stages of a config use: nothing to
    fetch, export or build for them."""
    specs = (catalogue.get(name) for name in models_used_by(faces, catalogue))
    return [spec for spec in specs if spec is not None and spec.builtin]
