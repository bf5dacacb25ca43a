"""Choosing the backend for one model: our TensorRT engines or ONNX Runtime, with the
configured fallback. Asking for TensorRT never ends in a silent CPU run: the fallback
chain is explicit (`inference.fallback`), each step is logged as a warning, and an empty
chain turns the reason TensorRT is unavailable into the error."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from streamswap.errors import BackendUnavailable
from streamswap.inference.base import Session
from streamswap.inference.engine_cache import EngineCache, profile_from_inputs, resolve_cache_dir
from streamswap.inference.ort import PROVIDERS, OrtSession, open_ort_session
from streamswap.inference.settings import InferenceSettings
from streamswap.inference.trt_build import ProgressFn
from streamswap.logs import kv

log = logging.getLogger(__name__)


class SharedTrtEnvironment:
    """TensorRT detected once and shared by every session of a `SessionPool`, on the
    process's one GPU context (`gpu`, opened by the build place; opened here when None), so
    CUDA is opened once and the engines get their stages' named streams from it. Calling it
    returns the environment, or raises the same BackendUnavailable every time."""

    def __init__(self, detect: Callable[[], Any] | None = None, gpu: Any = None) -> None:
        self._detect = detect
        self._gpu = gpu
        self._env: Any = None
        self._failure: str | None = None

    def __call__(self) -> Any:
        if self._env is None and self._failure is None:
            from streamswap.inference.tensorrt import TrtEnvironment

            try:
                self._env = self._detect() if self._detect else TrtEnvironment.detect(gpu=self._gpu)
            except BackendUnavailable as exc:
                self._failure = str(exc)
        if self._failure is not None:
            raise BackendUnavailable(self._failure)
        return self._env


def open_session(
    path: Path,
    settings: InferenceSettings,
    cache_dir: Path | None = None,
    *,
    max_batch: int | None = None,
    size: int | None = None,
    model_sha256: str | None = None,
    progress: ProgressFn | None = None,
    trt_env: Any = None,
    stage: str | None = None,
    gpu: Any = None,
    role: str | None = None,
    triton_conn: Any = None,
) -> Session:
    """Open `path` with `settings.backend`, falling back as configured.

    For TensorRT, a dynamic leading input dim is the batch (1..`max_batch`, default
    `settings.max_batch`) and other dynamic dims take `size` (a detector's input side).
    `trt_env` is a `TrtEnvironment`, or a callable returning one (`SharedTrtEnvironment`);
    by default TensorRT and CUDA are detected for this session alone. `stage` names the
    pipeline stage that owns the session: its engine (or ONNX Runtime's CUDA provider) runs
    on that stage's stream from `gpu`, the process's `cuda.GpuContext` when one is open.
    With `triton` the model runs on the server (`role` picks inference.triton.models[role]);
    `triton_conn` is a `TritonConnection` shared by the sessions of one pool.
    """
    stream = gpu.stream(stage) if gpu is not None and stage else None

    def ort(chosen: InferenceSettings) -> OrtSession:
        # On the GPU its device buffers (the GPU frame path) come from the same context.
        cuda = gpu.cuda if stream is not None else None
        return open_ort_session(path, chosen, cache_dir, stream, cuda=cuda, max_batch=max_batch, size=size)

    if settings.backend == "ort":
        return ort(settings)
    if settings.backend == "triton":
        from streamswap.inference.triton import open_triton_session

        return open_triton_session(path, settings.triton, role, triton_conn)
    try:
        return _open_trt(path, settings, cache_dir, max_batch, size, model_sha256, progress, trt_env, stage)
    except BackendUnavailable as exc:
        reason = str(exc)
    if not settings.fallback:
        raise BackendUnavailable(
            f"inference.backend is tensorrt but TensorRT cannot run {path.name}: {reason} "
            "(no fallback configured: set inference.fallback: [cuda] to use ONNX Runtime instead)"
        )
    failures = [f"tensorrt: {reason}"]
    for provider in settings.fallback:
        log.warning(
            "TensorRT unavailable, falling back to ONNX Runtime",
            extra=kv(model=path.name, provider=provider, reason=reason),
        )
        try:
            session = ort(replace(settings, provider=provider))
        except BackendUnavailable as exc:
            failures.append(f"ort {provider}: {exc}")
            continue
        # ORT quietly puts a failing CUDA EP aside and runs on the CPU: that is not "cuda".
        if session.backend != "ort:" + PROVIDERS[provider]:
            failures.append(f"ort {provider}: ONNX Runtime ended up on {session.backend}")
            continue
        return session
    raise BackendUnavailable(f"{path.name}: no configured backend can run it — " + "; ".join(failures))


def _open_trt(
    path: Path,
    settings: InferenceSettings,
    cache_dir: Path | None,
    max_batch: int | None,
    size: int | None,
    model_sha256: str | None,
    progress: ProgressFn | None,
    trt_env: Any,
    stage: str | None,
) -> Session:
    from streamswap.inference.tensorrt import TrtEnvironment, onnx_inputs, open_trt_session

    env = trt_env() if callable(trt_env) else (trt_env or TrtEnvironment.detect())
    cache = EngineCache(cache_dir or resolve_cache_dir(settings.engine_cache_dir))
    profile = profile_from_inputs(onnx_inputs(path), max_batch or settings.max_batch, size)
    return open_trt_session(
        path, settings, cache, profile=profile, model_sha256=model_sha256, progress=progress, env=env, stage=stage
    )
