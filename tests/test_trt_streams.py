"""Per-stage CUDA streams over the fake cudart: the engines one pipeline stage (one host
thread) runs share that stage's stream, the detect and swap stages get different ones,
each run waits on its own event only, and a SessionPool opens CUDA once for all engines."""

from __future__ import annotations

import gc
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from streamswap.inference import cuda as cuda_mod
from streamswap.inference.cuda import Cuda, DeviceInfo, StageStreams
from streamswap.inference.engine_cache import EngineCache, profile_from_inputs
from streamswap.inference.ort import SessionPool
from streamswap.inference.settings import InferenceSettings
from streamswap.inference.tensorrt import EngineRequest, TrtEnvironment, TrtSession, onnx_inputs
from test_trt_fake import FakeCudart, make_fake_trt
from test_trt_session import engine_file

X = {"input.1": np.ones((1, 3, 112, 112), np.float32)}


def _env(rt: FakeCudart, version: str = "10.3.0.30") -> TrtEnvironment:
    return TrtEnvironment(make_fake_trt(version), version, Cuda(rt), DeviceInfo(0, "Fake Orin", "8.7"))


def _stream_of_each_run(rt: FakeCudart) -> list[tuple[int, int]]:
    """(event, stream) of every cudaEventRecord, i.e. one per run."""
    return [args for name, args in rt.sync if name == "cudaEventRecord"]


def test_each_stage_thread_has_one_stream_shared_by_its_engines(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "10.3.0.30")
    rt = FakeCudart()
    env = _env(rt)
    detector, mesh, swapper = (TrtSession(path, env.trt, env.cuda, env.streams) for _ in range(3))
    both_running = threading.Barrier(2)
    used: dict[str, list[int]] = {"detect": [], "swap": []}

    def stage(name: str, sessions: list[TrtSession]) -> None:
        for _ in range(3):  # three frames
            for session in sessions:
                session.run(X)
                used[name].append(env.streams.current().handle)
        both_running.wait()  # both stage threads alive at once: no stream handed over

    threads = [threading.Thread(target=stage, args=("detect", [detector, mesh])),
               threading.Thread(target=stage, args=("swap", [swapper]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    detect_streams, swap_streams = set(used["detect"]), set(used["swap"])
    assert len(detect_streams) == 1 and len(swap_streams) == 1  # detector + FaceMesh share one
    assert detect_streams != swap_streams  # the two stages never serialise on one stream
    assert env.streams.created == 2  # made once per stage, not per run or per engine
    executed = [h for n, h in env.trt.calls if n == "execute_async_v3"]
    assert sorted(executed) == sorted(used["detect"] + used["swap"])
    # every run's copies and its completion event are on the stream its engine ran on
    runs = _stream_of_each_run(rt)
    assert sorted(stream for _, stream in runs) == sorted(executed)
    copies = {h for n, h in rt.sync if n == "cudaMemcpyAsync"}
    assert copies == detect_streams | swap_streams
    # the host waits on each run's event only: never the whole device or a whole stream
    waits = [n for n, _ in rt.sync if "Synchronize" in n]
    assert waits == ["cudaEventSynchronize"] * 9


def test_a_finished_stage_thread_hands_its_stream_to_the_next(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "10.3.0.30")
    rt = FakeCudart()
    env = _env(rt)
    session = TrtSession(path, env.trt, env.cuda, env.streams)
    handles: list[int] = []
    for _ in range(2):  # a pipeline restarted: new stage threads
        t = threading.Thread(target=lambda: (session.run(X), handles.append(env.streams.current().handle)))
        t.start()
        t.join()
        gc.collect()
    assert handles[0] == handles[1] and env.streams.created == 1  # no stream leaked per restart
    session.close()  # a session does not destroy the shared stage streams
    assert not [n for n, _ in rt.sync if n == "cudaStreamDestroy"]
    env.streams.close()
    assert [n for n, _ in rt.sync].count("cudaStreamDestroy") == 1


def test_a_caller_given_stream_wins_over_the_stage_stream(tmp_path: Path) -> None:
    _, path = engine_file(tmp_path, "8.5.2.2")
    rt = FakeCudart()
    env = _env(rt, "8.5.2.2")
    session = TrtSession(path, env.trt, env.cuda, env.streams)
    own = env.cuda.stream()
    session.run(X, stream=own)
    session.run(X, stream=own.handle)
    assert [s for _, s in _stream_of_each_run(rt)] == [own.handle, own.handle]
    assert env.streams.created == 0


def test_streams_cannot_be_used_after_close() -> None:
    streams = StageStreams(Cuda(FakeCudart()))
    streams.close()
    with pytest.raises(cuda_mod.CudaError, match="after close"):
        streams.current()


def test_session_pool_opens_cuda_once_and_its_engines_share_the_stage_streams(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    version = "10.3.0.30"
    models = []
    cache = EngineCache(tmp_path / "engines")
    settings = InferenceSettings(backend="tensorrt", build_engines=False)
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        model, plan = engine_file(folder, version, settings.engine_precision, settings.max_batch)
        profile = profile_from_inputs(onnx_inputs(model), settings.max_batch)
        key = EngineRequest(model, settings.engine_precision, profile).key(version, DeviceInfo(0, "Fake Orin", "8.7"))
        cache.store(key, plan, build_seconds=0.1)
        models.append(model)
    opened: list[FakeCudart] = []

    def import_cudart() -> FakeCudart:
        opened.append(FakeCudart())
        return opened[-1]

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt(version))
    monkeypatch.setattr(cuda_mod, "import_cudart", import_cudart)
    pool = SessionPool(settings, cache.dir)
    first, second = pool.get(models[0]), pool.get(models[1])
    assert first.backend == second.backend == "tensorrt"
    assert len(opened) == 1  # one CUDA device opened for every engine of the pipeline
    assert first._streams is second._streams
    first.run(X)
    second.run(X)
    assert len({s for _, s in _stream_of_each_run(opened[0])}) == 1  # same thread, same stream


def test_session_pool_reports_the_same_missing_piece_for_every_model(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamswap.errors import BackendUnavailable
    from test_trt_build import recognizer_model

    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_trt("10.3.0.30"))
    calls: list[int] = []

    def no_driver() -> FakeCudart:
        calls.append(1)
        return FakeCudart(error=35)

    monkeypatch.setattr(cuda_mod, "import_cudart", no_driver)
    pool = SessionPool(InferenceSettings(backend="tensorrt"), tmp_path)
    for name in ("a.onnx", "b.onnx"):
        with pytest.raises(BackendUnavailable, match=f"cannot run {name}: no usable NVIDIA driver"):
            pool.get(recognizer_model(tmp_path / name))
    assert len(calls) == 1  # detected once, not once per model
