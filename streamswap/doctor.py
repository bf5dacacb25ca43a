"""What is installed and usable on this machine, one check per line (`streamswap doctor`).

Every check returns a `Check` and never raises: a crashing probe is itself reported. The
essentials are what the CPU path needs (Python, numpy, OpenCV, PyAV, ONNX Runtime's CPU
provider, the bundled models or their sources); GPU, TensorRT, NVENC and v4l2loopback are
optional and reported as MISSING with what to install.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable

from streamswap.config import Config
from streamswap.errors import BackendUnavailable, StreamswapError
from streamswap.install import install_extra, install_packages, install_self
from streamswap.models.store import BUILTIN, MISMATCH, UNPINNED, VERIFIED, ModelStore, models_used_by
from streamswap.models.store import MISSING as MODEL_MISSING

log = logging.getLogger(__name__)

OK = "OK"
WARN = "WARN"  # works, but something the user probably wants is off
MISSING = "MISSING"  # an optional component is absent
FAIL = "FAIL"  # an essential is broken: the CPU path cannot run

_V4L2LOOPBACK_SETUP = (
    "sudo apt install v4l2loopback-dkms && sudo modprobe v4l2loopback devices=1 video_nr=10 "
    "card_label=streamswap exclusive_caps=1"
)


@dataclass(frozen=True)
class Check:
    """One line of the report: what was checked, how it went, and what to do about it."""

    name: str
    status: str
    detail: str
    fix: str | None = None


def essentials_ok(checks: Iterable[Check]) -> bool:
    return all(c.status != FAIL for c in checks)


def run_checks(
    config: Config,
    *,
    store: ModelStore | None = None,
    sys_root: Path = Path("/sys"),
    dev_root: Path = Path("/dev"),
    config_path: str | None = None,
) -> list[Check]:
    """Every check, in report order. `config_path` is named in fixes (`-c PATH`);
    `sys_root`/`dev_root` exist for tests."""
    store = store or ModelStore(config.models)
    probes: list[tuple[str, bool, Callable[[], list[Check]]]] = [
        ("python", True, _python),
        ("numpy", True, lambda: [_module_version("numpy", "numpy", essential=True)]),
        ("opencv", True, lambda: [_module_version("opencv", "cv2", essential=True)]),
        ("pyav", True, _pyav),
        ("encoders", False, _encoders),
        ("onnx", True, lambda: [_module_version("onnx", "onnx", essential=True)]),
        ("onnxruntime", True, lambda: _onnxruntime(config)),
        ("cuda", False, _cuda),
        ("tensorrt", False, _tensorrt),
        ("v4l2loopback", False, lambda: _v4l2loopback(sys_root, dev_root)),
        ("models", True, lambda: _models(config, store, config_path)),
        ("engine cache", False, lambda: [_engine_cache(config)]),
        ("backend", True, lambda: _backend(config)),
        ("config", True, lambda: _config_io(config, sys_root, dev_root)),
    ]
    if config.inference.backend == "triton":  # the models run there: it must answer
        probes.append(("triton", True, lambda: triton_checks(config)))
    checks: list[Check] = []
    for name, essential, probe in probes:
        try:
            checks.extend(probe())
        except Exception as exc:  # a probe must never take the report down
            log.debug("doctor probe failed", exc_info=True)
            checks.append(Check(name, FAIL if essential else WARN, f"check failed: {type(exc).__name__}: {exc}"))
    return checks


def _python() -> list[Check]:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 10):
        return [Check("python", FAIL, f"{version} ({sys.executable})", "streamswap needs Python 3.10+")]
    return [Check("python", OK, f"{version} ({sys.executable})")]


def _module_version(label: str, module: str, *, essential: bool, fix: str | None = None) -> Check:
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        return Check(
            label,
            FAIL if essential else MISSING,
            f"cannot import {module} ({exc})",
            fix or f"reinstall streamswap: {install_self()}",
        )
    return Check(label, OK, str(getattr(mod, "__version__", "installed")))


def _pyav() -> list[Check]:
    try:
        import av
    except ImportError as exc:
        return [Check("pyav", FAIL, f"cannot import av ({exc})", install_packages("av"))]
    ffmpeg = getattr(av, "ffmpeg_version_info", None)
    if not ffmpeg:
        major, minor, micro = av.library_versions.get("libavcodec", (0, 0, 0))
        ffmpeg = f"libavcodec {major}.{minor}.{micro}"
    return [Check("pyav", OK, f"PyAV {av.__version__}, FFmpeg {ffmpeg}")]


def _encoder_opens(name: str) -> str | None:
    """None if encoder `name` opens here, else why not (NVENC needs a GPU and driver)."""
    import av

    try:
        ctx = av.CodecContext.create(name, "w")
        if not isinstance(ctx, av.VideoCodecContext):
            return "not a video encoder"
        ctx.width, ctx.height, ctx.pix_fmt = 256, 144, "yuv420p"
        ctx.time_base = Fraction(1, 30)
        ctx.open()
    except Exception as exc:  # FFmpeg reports a missing device as EPERM, ENOSYS, ...
        return str(exc).split(";")[0]
    return None


def _encoders() -> list[Check]:
    import av

    have = set(av.codecs_available)
    checks: list[Check] = []
    software = [n for n in ("libx264", "libopenh264") if n in have and _encoder_opens(n) is None]
    hardware = [n for n in ("h264_v4l2m2m", "h264_vaapi", "h264_qsv", "h264_amf") if n in have]
    if software:
        checks.append(
            Check(
                "h264 encoder",
                OK,
                f"{', '.join(software)} (in this FFmpeg build also: "
                f"{', '.join(hardware) or 'no other hardware encoders'})",
            )
        )
    else:
        checks.append(
            Check(
                "h264 encoder",
                WARN,
                "no software H.264 encoder in PyAV's FFmpeg",
                f"file and RTMP outputs need one: {install_packages('av')} --force-reinstall",
            )
        )
    checks.append(
        Check("aac encoder", OK, "aac")
        if "aac" in have
        else Check(
            "aac encoder",
            WARN,
            "no AAC encoder: RTMP output will have no audio",
            f"{install_packages('av')} --force-reinstall",
        )
    )
    if "h264_nvenc" not in have:
        checks.append(
            Check(
                "h264_nvenc",
                MISSING,
                "not in PyAV's FFmpeg build",
                "use a PyAV/FFmpeg built with NVENC for GPU encoding (optional)",
            )
        )
    else:
        why = _encoder_opens("h264_nvenc")
        checks.append(
            Check("h264_nvenc", OK, "in the build and opens")
            if why is None
            else Check(
                "h264_nvenc",
                MISSING,
                f"in the build but unusable here ({why})",
                "needs an NVIDIA GPU with driver (optional; libx264 is used otherwise)",
            )
        )
    return checks


def _onnxruntime(config: Config) -> list[Check]:
    try:
        import onnxruntime
    except ImportError as exc:
        return [Check("onnxruntime", FAIL, f"cannot import onnxruntime ({exc})", install_packages("onnxruntime"))]
    from streamswap.inference.ort import GPU_BUILD_INSTALL, available_providers, probe_provider

    checks = _onnxruntime_builds()
    offered = available_providers()
    # An onnxruntime-gpu build offers CUDA/TensorRT even where they cannot start.
    why_not = {p: probe_provider(p) for p in offered}
    usable = [p for p in offered if why_not[p] is None]
    detail = f"{onnxruntime.__version__}, usable providers: {', '.join(usable) or 'none'}"
    broken = [f"{p} ({why_not[p]})" for p in offered if why_not[p] is not None]
    if broken:
        detail += f"; offered but not starting: {'; '.join(broken)}"
    if "cpu" not in usable:
        return checks + [
            Check(
                "onnxruntime",
                FAIL,
                detail,
                f"reinstall onnxruntime: {install_packages('onnxruntime')} --force-reinstall",
            )
        ]
    wanted = config.inference.provider
    if wanted != "auto" and wanted not in usable:
        fix = (
            f"for CUDA/TensorRT install the GPU build: {GPU_BUILD_INSTALL}; or set inference.provider: auto"
            if wanted not in offered
            else "check the NVIDIA driver and the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs, "
            "or set inference.provider: auto"
        )
        return checks + [Check("onnxruntime", FAIL, f"{detail}; inference.provider is {wanted!r}", fix)]
    if broken and wanted == "auto":
        return checks + [
            Check(
                "onnxruntime",
                WARN,
                detail,
                "check the NVIDIA driver and the CUDA/cuDNN/TensorRT libraries onnxruntime-gpu needs",
            )
        ]
    if not any(p in usable for p in ("tensorrt", "cuda")):
        detail += f" (CPU only; the GPU build: {GPU_BUILD_INSTALL})"
    return checks + [Check("onnxruntime", OK, detail)]


def _onnxruntime_builds(version: Callable[[str], str] | None = None) -> list[Check]:
    """Both builds installed is a trap: they share one folder, and whichever pip wrote last
    wins (often the CPU one, hiding CUDA). `version` is importlib.metadata.version (tests)."""
    from importlib import metadata

    lookup = version or metadata.version
    installed = []
    for dist in ("onnxruntime", "onnxruntime-gpu"):
        try:
            installed.append(f"{dist} {lookup(dist)}")
        except metadata.PackageNotFoundError:
            pass
    if len(installed) < 2:
        return []
    from streamswap.inference.ort import GPU_BUILD_INSTALL

    return [
        Check(
            "onnxruntime builds",
            WARN,
            f"both installed ({', '.join(installed)}); they overwrite each other's files",
            f"keep only the GPU build: {GPU_BUILD_INSTALL}",
        )
    ]


def _cuda() -> list[Check]:
    from streamswap.inference.cuda import import_cudart

    try:  # the import the TensorRT backend uses (cuda-python 12.0-12.5 has another module path)
        cudart = import_cudart()
    except BackendUnavailable:
        return [
            Check(
                "cuda",
                MISSING,
                "cuda-python not installed",
                f"for the TensorRT path: {install_extra('tensorrt')} (optional)",
            )
        ]
    err, count = cudart.cudaGetDeviceCount()
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        return [
            Check(
                "cuda",
                MISSING,
                f"cuda-python installed, no usable GPU ({name})",
                "install the NVIDIA driver if this machine has an NVIDIA GPU (optional)",
            )
        ]
    err, driver = cudart.cudaDriverGetVersion()
    devices = []
    for i in range(count):
        err, prop = cudart.cudaGetDeviceProperties(i)
        if int(err) != 0:
            continue
        name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
        devices.append(f"{i}: {name} (sm_{prop.major}{prop.minor}, {prop.totalGlobalMem / 2**30:.0f} GiB)")
    version = f"{driver // 1000}.{driver % 1000 // 10}" if driver else "?"
    return [Check("cuda", OK, f"driver CUDA {version}; {'; '.join(devices) or 'no devices'}")]


def _tensorrt() -> list[Check]:
    if importlib.util.find_spec("tensorrt") is None:
        return [
            Check(
                "tensorrt",
                MISSING,
                "not installed",
                f"{install_extra('tensorrt')} (desktop) or JetPack's python3-libnvinfer (Jetson); optional",
            )
        ]
    try:
        import tensorrt
    except Exception as exc:  # installed but its libraries do not load
        return [
            Check(
                "tensorrt",
                WARN,
                f"installed but cannot be imported ({exc})",
                "check the CUDA/TensorRT libraries match the driver",
            )
        ]
    return [Check("tensorrt", OK, str(tensorrt.__version__))]


def _v4l2loopback(sys_root: Path, dev_root: Path) -> list[Check]:
    found = []
    for name_file in sorted((sys_root / "class" / "video4linux").glob("*/name")):
        try:
            label = name_file.read_text(errors="replace").strip()
        except OSError:
            continue
        if "loopback" in label.lower() or "dummy" in label.lower() or "streamswap" in label.lower():
            found.append((dev_root / name_file.parent.name, label))
    if not found:
        loaded = (sys_root / "module" / "v4l2loopback").exists()
        detail = "module loaded but no loopback device" if loaded else "no loopback video device"
        return [Check("v4l2loopback", MISSING, f"{detail} (needed only for vcam:// output)", _V4L2LOOPBACK_SETUP)]
    unwritable = [str(d) for d, _ in found if d.exists() and not os.access(d, os.W_OK)]
    listing = ", ".join(f"{d} ({label})" for d, label in found)
    if unwritable:
        return [
            Check(
                "v4l2loopback",
                WARN,
                f"{listing}; not writable: {', '.join(unwritable)}",
                "add yourself to the video group: sudo usermod -aG video $USER (then log in again)",
            )
        ]
    return [Check("v4l2loopback", OK, listing)]


def _writable_dir(path: Path) -> bool:
    """True if `path` is, or could be created as, a directory this user can write into."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _models(config: Config, store: ModelStore, config_path: str | None = None) -> list[Check]:
    checks: list[Check] = []
    if _writable_dir(store.dir):
        checks.append(Check("models dir", OK, f"{store.dir} (writable)"))
    else:
        checks.append(
            Check(
                "models dir",
                WARN,
                f"{store.dir} is not writable",
                "set models.dir, --models-dir or $STREAMSWAP_MODELS_DIR to a writable folder",
            )
        )
    used = set(models_used_by(config.faces, store.catalogue))
    present: list[str] = []
    absent: list[str] = []
    for spec in store.specs():
        try:
            status = store.check(spec.name)
        except StreamswapError as exc:
            checks.append(Check(f"model {spec.name}", FAIL if spec.name in used else WARN, str(exc)))
            continue
        needed = " (used by this config)" if spec.name in used else ""
        if status.state == MODEL_MISSING:
            if spec.bundled:
                checks.append(_bundled_source(spec.name, needed))
            elif spec.name in used:  # run/serve would stop at once
                checks.append(
                    Check(
                        f"model {spec.name}",
                        FAIL,
                        f"not downloaded{needed}",
                        "streamswap models fetch --for-config" + (f" -c {config_path}" if config_path else ""),
                    )
                )
            else:
                absent.append(spec.name)
            continue
        if status.state == BUILTIN:
            checks.append(Check(f"model {spec.name}", OK, f"built in, no file needed{needed}"))
        elif status.state == VERIFIED:
            present.append(spec.name)
            checks.append(Check(f"model {spec.name}", OK, f"verified{needed}"))
        elif status.state == UNPINNED:
            present.append(spec.name)
            checks.append(
                Check(
                    f"model {spec.name}",
                    OK,
                    f"present, no published hash (recorded {(status.sha256 or '')[:12]}){needed}",
                )
            )
        elif status.state == MISMATCH:
            checks.append(
                Check(
                    f"model {spec.name}",
                    FAIL if spec.name in used else WARN,
                    f"{status.path} fails verification{needed}",
                    f"delete it and run: streamswap models fetch {spec.name}",
                )
            )
    if absent:
        checks.append(
            Check(
                "models (optional)",
                OK,
                f"{len(present)} present; not downloaded: {', '.join(absent)}",
                "fetch what you use: streamswap models fetch NAME",
            )
        )
    return checks


def triton_checks(config: Config) -> list[Check]:
    """inference.backend: triton: the server answers, and serves every model the config's
    face stages load (by role, under the configured or exported name). Never raises."""
    from streamswap.inference.triton import TritonConnection, model_not_ready, triton_model_name
    from streamswap.models.store import builtin_models, role_models

    settings = config.inference.triton
    try:
        conn = TritonConnection(settings)
    except BackendUnavailable as exc:
        return [Check("triton", FAIL, str(exc))]
    try:
        meta = conn.call("get_server_metadata", **({"as_json": True} if settings.protocol == "grpc" else {}))
        ready = conn.call("is_server_ready")
    except Exception as exc:
        why = model_not_ready(conn, "", with_fix=False) or f"{type(exc).__name__}: {exc}"
        return [
            Check(
                "triton server",
                FAIL,
                why,
                "start Triton with the repository from `streamswap triton export --repo DIR` "
                "(docs/scale-out.md), or set inference.triton.url",
            )
        ]
    version = meta.get("version", "?")
    if not ready:
        return [
            Check(
                "triton server",
                FAIL,
                f"{conn.where} (Triton {version}) answers but is not ready",
                "wait for it to load its models; see the server's log",
            )
        ]
    checks = [Check("triton server", OK, f"{conn.where}, Triton {version}")]
    for used in role_models(config.faces):
        ref = settings.models.get(used.role)
        name = (ref.name if ref and ref.name else "") or triton_model_name(Path(used.file_name))
        version = ref.version if ref else ""
        not_ready = model_not_ready(conn, name, version, with_fix=False)
        label = f"triton {used.role}"
        if not_ready is None:
            checks.append(Check(label, OK, f"model {name} ready" + (f" (version {version})" if version else "")))
        else:
            checks.append(
                Check(
                    label,
                    FAIL,
                    not_ready,
                    f"streamswap triton export --repo DIR, load {name} on the server "
                    f"(or set inference.triton.models.{used.role}.name)",
                )
            )
    for spec in builtin_models(config.faces):  # code, not a graph: nothing for the server to serve
        checks.append(Check(f"triton {spec.role}", OK, f"{spec.name} is built in: it runs in this daemon"))
    return checks


def _backend(config: Config) -> list[Check]:
    """What inference.backend needs here: TensorRT with cuda-python and a usable GPU."""
    inference = config.inference
    if inference.backend in ("ort", "triton"):
        return []  # ONNX Runtime and its provider: the onnxruntime check; Triton: triton_checks

    if inference.backend == "tensorrt":
        from streamswap.inference.cuda import open_cuda
        from streamswap.inference.trt_build import import_tensorrt

        problems = []
        for probe in (import_tensorrt, open_cuda):
            try:
                probe()
            except BackendUnavailable as exc:
                problems.append(str(exc).split(";")[0])
        if not problems:
            return [Check("backend", OK, "inference.backend: tensorrt (TensorRT and a CUDA GPU are usable)")]
        why = "; ".join(problems)
        if inference.fallback:
            return [
                Check(
                    "backend",
                    WARN,
                    f"inference.backend: tensorrt cannot run here ({why}); the config "
                    f"falls back to ONNX Runtime {' then '.join(inference.fallback)}",
                    f"for TensorRT: {install_extra('tensorrt')} on a machine with an NVIDIA GPU and driver",
                )
            ]
        return [
            Check(
                "backend",
                FAIL,
                f"inference.backend: tensorrt cannot run here: {why}",
                f"install TensorRT and cuda-python: {install_extra('tensorrt')} (Jetson: sudo apt install "
                "python3-libnvinfer), with the NVIDIA driver; or set inference.backend: ort "
                "(or inference.fallback: [cuda, cpu])",
            )
        ]
    return [
        Check(
            "backend",
            FAIL,
            f"inference.backend: {inference.backend} is not known to this doctor",
            "set inference.backend: ort, tensorrt or triton",
        )
    ]


def _config_io(config: Config, sys_root: Path, dev_root: Path) -> list[Check]:
    """The source faces, input, outputs and encoder the config names: what `run` would
    refuse at once (a missing file, an unknown scheme, vcam:// without a loopback device)."""
    from streamswap.io.uri import open_sink, open_source, output_kind

    checks: list[Check] = []
    missing = [p for p in config.source if not Path(p).expanduser().is_file()]
    if missing:
        checks.append(
            Check(
                "source faces",
                FAIL,
                f"not found: {', '.join(missing)}",
                "fix the `source` paths (or pass --source FACE.jpg)",
            )
        )
    try:
        open_source(config.input, config.io)  # builds it (checks the URI), opens nothing
        checks.append(Check("input", OK, config.input))
    except StreamswapError as exc:
        checks.append(Check("input", FAIL, str(exc), "fix `input` or pass -i URI; `streamswap cameras` lists cameras"))
    for uri in config.outputs:
        try:
            open_sink(uri, config.io)
        except StreamswapError as exc:
            checks.append(Check(f"output {uri}", FAIL, str(exc), "fix `outputs` or pass -o URI"))
            continue
        if output_kind(uri) == "vcam" and _v4l2loopback(sys_root, dev_root)[0].status != OK:
            checks.append(
                Check(f"output {uri}", FAIL, "no writable v4l2loopback device for vcam://", _V4L2LOOPBACK_SETUP)
            )
            continue
        checks.append(Check(f"output {uri}", OK, output_kind(uri)))
    encoder = config.io.encoder
    wants_encoder = any(output_kind(uri) in ("file", "network") for uri in config.outputs)
    if wants_encoder and encoder not in ("auto", None):
        why = _encoder_opens(encoder) if _has_codec(encoder) else "not in PyAV's FFmpeg build"
        if why is not None:
            checks.append(
                Check(
                    "io.encoder",
                    FAIL,
                    f"{encoder} cannot be used here ({why})",
                    "set io.encoder: auto (or pass --encoder libx264)",
                )
            )
    return checks


def _has_codec(name: str) -> bool:
    import av

    return name in av.codecs_available


def _bundled_source(name: str, needed: str) -> Check:
    """A bundled model not converted yet is fine if its source and converter are installed."""
    from streamswap.models.bundled import tflite_source

    try:
        source = tflite_source(name)
    except StreamswapError as exc:
        return Check(f"model {name}", FAIL if needed else WARN, str(exc))
    if importlib.util.find_spec("tflite2onnx") is None:
        return Check(
            f"model {name}", FAIL if needed else WARN, "tflite2onnx is not installed", install_packages("tflite2onnx")
        )
    return Check(f"model {name}", OK, f"bundled, converted from {source.name} on first use{needed}")


def _engine_cache(config: Config) -> Check:
    from streamswap.inference.engine_cache import resolve_cache_dir

    path = resolve_cache_dir(config.inference.engine_cache_dir)
    if _writable_dir(path):
        return Check("engine cache", OK, f"{path} (writable)")
    return Check(
        "engine cache",
        WARN,
        f"{path} is not writable (TensorRT engines cannot be cached)",
        "set inference.engine_cache_dir to a writable folder",
    )
