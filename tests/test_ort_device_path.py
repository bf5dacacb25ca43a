"""ONNX Runtime's CUDA provider on the GPU frame path, over the recording fakes: an
onnxruntime-gpu build whose sessions compute for real on the CPU from the bound "device"
pointers (ort_fakes.CudaBuildOnFakeDevice) and the recording cudart, whose device memory is
host memory. The same frame path as TensorRT's: one upload and one download per frame, no
allocation after warm-up, one binding object per session, every run on its stage's stream
without a host wait, and the device swap gives the host path's pixels."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from ort_fakes import CudaBuildOnFakeDevice
from test_device_path import TinySwapper, _faces, _frame, tiny_swapper_model
from test_trt_fake import FakeCudart, _view

from streamswap.errors import BackendUnavailable
from streamswap.inference import ort as ort_backend
from streamswap.inference.base import DeviceSession, runs_on_device
from streamswap.inference.cuda import Cuda, GpuContext
from streamswap.inference.ort import SessionPool
from streamswap.inference.settings import InferenceSettings

HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize")


@pytest.fixture
def onnxruntime_gpu(monkeypatch: pytest.MonkeyPatch) -> CudaBuildOnFakeDevice:
    build = CudaBuildOnFakeDevice(FakeCudart())
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: build)
    return build


def _pool(
    build: CudaBuildOnFakeDevice, tmp_path: Path, device: int = 0, provider: str = "cuda", **settings: object
) -> SessionPool:
    gpu = GpuContext(Cuda(build._rt, device=device))
    return SessionPool(InferenceSettings(provider=provider, device=device, **settings), tmp_path, gpu=gpu)


def _runs_after_load(build: CudaBuildOnFakeDevice, session_index: int, warm_up: int = 2) -> list[dict]:
    return build.sessions[session_index].runs[warm_up:]


def test_an_ort_cuda_session_runs_on_its_own_device_buffers_on_its_stage_stream(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice
) -> None:
    build, rt = onnxruntime_gpu, onnxruntime_gpu._rt
    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    pool = _pool(build, tmp_path, device=1, max_batch=5)
    session = pool.get(model, stage="swap")
    swap = pool.gpu.stream("swap")
    fake = build.sessions[-1]
    assert fake.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    cuda_options = fake.options["CUDAExecutionProvider"]
    assert cuda_options["user_compute_stream"] == str(swap.handle) and cuda_options["device_id"] == 1
    assert isinstance(session, DeviceSession) and runs_on_device(session)
    assert not fake.runs and not fake.bindings  # nothing made until a device stage asks

    assert session.max_shape("target") == (5, 3, 16, 16) and session.max_shape("out") == (5, 3, 16, 16)
    assert [r["synchronised"] for r in fake.runs] == [True, True]  # two warm-ups, at load
    warm = pool.gpu.cuda.allocations
    target, source = session.device_input("target"), session.device_input("source")
    rng = np.random.default_rng(0)
    rt.sync.clear()
    batches = (1, 3, 5, 3, 3)
    for n in batches:
        x = rng.random((n, 3, 16, 16), dtype=np.float32)
        s = rng.random((n, 512), dtype=np.float32)
        _view(target.ptr, x.shape, np.dtype(np.float32))[...] = x  # what a stage's kernel writes
        _view(source.ptr, s.shape, np.dtype(np.float32))[...] = s
        session.enqueue({"target": x.shape, "source": s.shape}, swap)
        got = session.fetch(swap).result()["out"]
        want = fake.real.run(None, {"target": x, "source": s})[0]
        np.testing.assert_array_equal(got, want)
        assert session.device_output("out").shape == (n, 3, 16, 16)
    assert pool.gpu.cuda.allocations == warm  # batches 1 → 5 → 3: nothing allocated
    assert len(fake.bindings) == 1  # one binding object, rebound where a shape changed
    runs = _runs_after_load(build, -1)
    assert [r["stream"] for r in runs] == [swap.handle] * len(batches)
    assert not any(r["synchronised"] for r in runs)  # ORT does not wait for its stream
    assert [r["inputs"]["target"] for r in runs] == [((n, 3, 16, 16), target.ptr) for n in batches]
    assert [r["outputs"]["out"][1] for r in runs] == [session.device_output("out").ptr] * len(batches)
    binds = [c for c in fake.bindings[0].calls[-12:] if c[0] == "bind_input" and c[1] == "target"]
    assert all(c[2:4] == ("cuda", 1) and c[4] == np.float32 for c in binds)
    rebinds = [c[5][0] for c in fake.bindings[0].calls if c[0] == "bind_input" and c[1] == "target"]
    assert rebinds[-4:] == [1, 3, 5, 3]  # the repeated batch of 3 bound nothing again
    assert not [c for c in fake.bindings[0].calls if c[0].startswith("synchronize")]
    assert [n for n, _ in rt.sync if n in HOST_WAITS] == []  # the host waited on fetch events only
    assert {s for n, s in rt.sync if n == "cudaMemcpyAsync"} == {swap.handle}
    with pytest.raises(ValueError, match="user_compute_stream"):
        session.enqueue({"target": (1, 3, 16, 16)}, pool.gpu.stream("detect"))


def test_an_ort_session_on_the_cpu_has_no_device_path(tmp_path: Path) -> None:
    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    session = SessionPool(InferenceSettings(provider="cpu"), tmp_path).get(model, stage="swap")
    assert not runs_on_device(session)
    with pytest.raises(BackendUnavailable, match="no device buffers"):
        session.device_input("target")  # type: ignore[attr-defined]


def test_ort_cuda_swap_matches_the_host_swap_across_face_counts(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice
) -> None:
    from swap_fixtures import cpu_session

    from streamswap.faces.device import DeviceFrames, DeviceSwapper

    build, rt = onnxruntime_gpu, onnxruntime_gpu._rt
    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    host = TinySwapper(cpu_session(model), name="tiny")
    pool = _pool(build, tmp_path, max_batch=5)
    gpu = pool.gpu
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    session = pool.get(model, stage="swap")
    frames = DeviceFrames(gpu.cuda)
    slots = [frames.alloc((40, 48, 3), np.uint8) for _ in range(3)]
    device = DeviceSwapper(TinySwapper(session, name="tiny"), session, gpu.cuda, max_faces=5)
    identity = np.linspace(-1, 1, 512, dtype=np.float32)
    device.set_identity(identity)
    host.set_identity(identity)
    fake = build.sessions[-1]
    warm = None
    for index, count in enumerate((0, 5, 1, 3)):  # the face count goes 0 → 5 → 1 → 3
        slot = index % len(slots)
        original = _frame(index)
        slots[slot][...] = original
        faces = _faces(count)
        rt.sync.clear()
        frames.upload(slots[slot], detect_stream)
        device.swap(frames.frame(slots[slot], swap_stream), faces, swap_stream)
        frames.download(slots[slot], swap_stream)
        expected = original.copy()
        host.swap(expected, faces)
        diff = np.abs(slots[slot].astype(int) - expected.astype(int))
        assert diff.max() <= 2, f"frame {index}: device and host swaps differ by {diff.max()}"
        if count:
            assert not np.array_equal(slots[slot], original)
        waits = [args for name, args in rt.sync if name == "cudaStreamWaitEvent"]
        assert [stream for stream, _ in waits] == [swap_stream.handle]  # on the GPU, not the host
        copies = [s for n, s in rt.sync if n == "cudaMemcpyAsync"]
        assert copies[0] == detect_stream.handle and all(s == swap_stream.handle for s in copies[1:])
        assert [n for n, _ in rt.sync if n in HOST_WAITS] == []
        if warm is None:
            warm = gpu.cuda.allocations
    assert gpu.cuda.allocations == warm
    runs = _runs_after_load(build, build.sessions.index(fake))
    assert [r["inputs"]["target"][0][0] for r in runs] == [5, 1, 3]  # one generator call per frame with faces
    assert {r["stream"] for r in runs} == {swap_stream.handle} and not any(r["synchronised"] for r in runs)
    assert len(fake.bindings) == 1
    assert frames.bytes_up == frames.bytes_down == 4 * 40 * 48 * 3  # once each way per frame


def _scrfd(tmp_path: Path, size: int, faces: list[dict]) -> Path:
    from test_detectors import scrfd_model, scrfd_tensors

    return scrfd_model(tmp_path / "scrfd.onnx", size, scrfd_tensors(size, faces, True))


def test_ort_cuda_detect_and_swap_stages_run_the_frame_path(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice
) -> None:
    from test_detectors import face_at

    from streamswap.faces.detectors import make_detector
    from streamswap.faces.device import DeviceDetector, DeviceDetectStage, DeviceFrames, DeviceSwapper, DeviceSwapStage
    from streamswap.faces.settings import DetectorSettings, TrackingSettings
    from streamswap.faces.stages import PreparedIdentity
    from streamswap.io.base import FrameMeta
    from streamswap.pipeline.frame_queue import FrameItem

    build, rt = onnxruntime_gpu, onnxruntime_gpu._rt
    size = 32
    det_model = _scrfd(tmp_path, size, [face_at(8, (2, 2), 0.9, (6, 4, 26, 26))])
    sw_model = tiny_swapper_model(tmp_path / "tiny.onnx")
    pool = _pool(build, tmp_path, max_batch=2)
    gpu = pool.gpu
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    det_session = pool.get(det_model, size=size, stage="detect")
    sw_session = pool.get(sw_model, stage="swap")
    det_fake, sw_fake = build.sessions[-2:]
    frames = DeviceFrames(gpu.cuda)
    detector = DeviceDetector(
        make_detector("scrfd", det_session, DetectorSettings(model="scrfd_2.5g", size=size)), det_session
    )
    swapper = DeviceSwapper(TinySwapper(sw_session, name="tiny"), sw_session, gpu.cuda, max_faces=2)
    detect = DeviceDetectStage(detector, frames, detect_stream, tracking=TrackingSettings(detect_every=1))
    swap = DeviceSwapStage(swapper, frames, swap_stream)
    swap.offer(PreparedIdentity(np.linspace(-1, 1, 512, dtype=np.float32), ("me.jpg",)))
    slot = frames.alloc((40, 48, 3), np.uint8)
    slot[...] = _frame(5)
    original = slot.copy()
    item = FrameItem(0, FrameMeta(0, 0, 0.0))
    warm = gpu.cuda.allocations
    rt.sync.clear()
    detect.process(slot, item)
    assert len(item.faces) == 1
    swap.process(slot, item)
    assert frames.bytes_up == frames.bytes_down == slot.nbytes  # the frame crossed once each way
    assert [r["stream"] for r in det_fake.runs[1:]] == [detect_stream.handle]  # fixed batch: one warm-up
    assert [r["stream"] for r in sw_fake.runs[2:]] == [swap_stream.handle]
    assert not any(r["synchronised"] for r in [*det_fake.runs[1:], *sw_fake.runs[2:]])
    waits = [a for n, a in rt.sync if n == "cudaStreamWaitEvent"]
    assert [stream for stream, _ in waits] == [swap_stream.handle]
    assert [n for n, _ in rt.sync if n in HOST_WAITS] == []
    assert gpu.cuda.allocations == warm
    assert not np.array_equal(slot, original)  # swapped on the device, brought back


def test_wiring_takes_the_gpu_frame_path_with_ort_cuda_and_keeps_the_host_path_on_the_cpu(
    tmp_path: Path,
    onnxruntime_gpu: CudaBuildOnFakeDevice,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from streamswap.bench.synthetic import make_arcface_model, make_swapper_model
    from streamswap.config import load_config
    from streamswap.faces.device import DeviceDetectStage, DeviceSwapStage
    from streamswap.inference import cuda as cuda_mod
    from streamswap.wiring import build_face_stages

    opened: list[FakeCudart] = []

    def import_cudart() -> FakeCudart:
        opened.append(onnxruntime_gpu._rt)
        return onnxruntime_gpu._rt

    monkeypatch.setattr(cuda_mod, "import_cudart", import_cudart)
    overrides = {
        "models.dir": str(tmp_path / "models"),
        "faces.detector.model": str(_scrfd(tmp_path, 128, [])),
        "faces.detector.contract": "scrfd",
        "faces.detector.size": 128,
        "faces.detector.max_faces": 2,
        "faces.landmarker.model": None,
        "faces.swapper.model": str(make_swapper_model(tmp_path / "swap.onnx", size=128, batch_dynamic=True)),
        "faces.swapper.contract": "inswapper",
        "faces.recognizer.model": str(make_arcface_model(tmp_path / "arcface.onnx")),
        "faces.recognizer.contract": "arcface",
        "inference.max_batch": 2,
    }
    caplog.set_level(logging.INFO)
    stages = build_face_stages(load_config(None, {**overrides, "inference.provider": "cuda"}))
    assert isinstance(stages.detect, DeviceDetectStage) and isinstance(stages.swap, DeviceSwapStage)
    assert stages.detect.stream is not stages.swap.stream
    detect_session = stages.detect.detector.device.session
    assert detect_session.backend == "ort:CUDAExecutionProvider" and detect_session.stream is stages.detect.stream
    assert len(opened) == 1  # one CUDA context for the slots and every session
    assert "GPU frame path on" in caplog.text

    caplog.clear()  # a generator that takes one face per call (inswapper_128 as published): one call per face
    fixed = make_swapper_model(tmp_path / "fixed.onnx", size=128)
    stages = build_face_stages(
        load_config(None, {**overrides, "inference.provider": "cuda", "faces.swapper.model": str(fixed)})
    )
    assert isinstance(stages.detect, DeviceDetectStage) and isinstance(stages.swap, DeviceSwapStage)
    assert stages.swap.swapper.device.batch == 1
    calls = [r for r in caplog.records if r.msg.startswith("generator calls per frame")]
    assert [(r.kv["faces_per_call"], r.kv["hint"]) for r in calls] == [(1, None)]  # no rebuild can batch it

    opened.clear()
    stages = build_face_stages(load_config(None, {**overrides, "inference.provider": "cpu"}))
    assert type(stages.detect).__name__ == "DetectStage" and type(stages.swap).__name__ == "SwapStage"
    assert not opened  # ONNX Runtime on the CPU: CUDA is never opened


def test_provider_auto_opens_the_gpu_context_only_where_onnxruntime_offers_a_gpu_provider(
    onnxruntime_gpu: CudaBuildOnFakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onnxruntime

    from streamswap.config import load_config
    from streamswap.inference import cuda as cuda_mod
    from streamswap.wiring import open_gpu

    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: onnxruntime_gpu._rt)
    auto = load_config(None, {"inference.provider": "auto"})
    assert isinstance(open_gpu(auto), GpuContext)  # onnxruntime-gpu: its sessions get stage streams
    assert open_gpu(load_config(None, {"inference.provider": "cpu"})) is None
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: onnxruntime)  # the CPU build
    assert "cuda" not in ort_backend.available_providers()
    assert open_gpu(auto) is None


def test_the_device_landmarker_runs_on_ort_cuda_like_on_tensorrt(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice
) -> None:
    """FaceMesh's device twin over an ONNX Runtime session: the host FaceMesh's landmarks,
    one run per frame on the detect stream without a host wait, nothing allocated per frame."""
    from swap_fixtures import cpu_session
    from test_device_landmarker import FACES, H, TinyMesh, W, tiny_mesh_model
    from test_device_landmarker import _frame as mesh_frame

    from streamswap.faces.device import DeviceFrames, DeviceLandmarker

    build, rt = onnxruntime_gpu, onnxruntime_gpu._rt
    model = tiny_mesh_model(tmp_path / "tiny_mesh.onnx")
    host = TinyMesh(cpu_session(model))
    pool = _pool(build, tmp_path, max_batch=5)
    stream = pool.gpu.stream("detect")
    session = pool.get(model, stage="detect")
    device = DeviceLandmarker(TinyMesh(session), session, pool.gpu.cuda, max_faces=5)
    frames = DeviceFrames(pool.gpu.cuda)
    slot = frames.alloc((H, W, 3), np.uint8)
    loaded = pool.gpu.cuda.allocations
    rt.sync.clear()
    for index, count in enumerate((0, 5, 1, 3)):
        slot[...] = mesh_frame(index)
        faces = FACES[:count]
        got = device.landmarks_many(frames.upload(slot, stream), faces, stream)
        np.testing.assert_allclose(got, host.landmarks_many(slot, faces), atol=0.05)
    assert pool.gpu.cuda.allocations == loaded
    runs = _runs_after_load(build, -1)
    assert [r["inputs"]["input"][0][0] for r in runs] == [5, 1, 3]  # one call per frame with faces
    assert {r["stream"] for r in runs} == {stream.handle} and not any(r["synchronised"] for r in runs)
    assert [n for n, _ in rt.sync if n in HOST_WAITS] == []


def test_an_fp16_onnx_file_on_ort_cuda_keeps_the_host_path_with_the_reason(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice, caplog: pytest.LogCaptureFixture
) -> None:
    """An fp16 ONNX file keeps float16 I/O on ONNX Runtime (TensorRT engines have fp32 I/O):
    the frame stays on the host, logged, instead of a refusal at start."""
    import dataclasses

    from streamswap.config import Config
    from streamswap.faces.detectors import make_detector
    from streamswap.faces.settings import DetectorSettings
    from streamswap.wiring import _gpu_frame_path

    pool = _pool(onnxruntime_gpu, tmp_path, max_batch=8)
    det_session = pool.get(_scrfd(tmp_path, 32, []), size=32, stage="detect")
    detector = make_detector("scrfd", det_session, DetectorSettings(model="scrfd_2.5g", size=32))
    sw_session = pool.get(tiny_swapper_model(tmp_path / "tiny.onnx"), stage="swap")
    swapper = TinySwapper(sw_session, name="tiny")
    config = Config()
    config.inference = pool.settings
    assert _gpu_frame_path(config, pool, detector, swapper, None) is not None  # float32: on the device
    sw_session.inputs[0] = dataclasses.replace(sw_session.inputs[0], dtype=np.dtype(np.float16))  # as an fp16 file
    caplog.set_level(logging.INFO)
    assert _gpu_frame_path(config, pool, detector, swapper, None) is None
    assert "float16" in [r for r in caplog.records if r.msg.startswith("GPU frame path off")][0].kv["reason"]


def test_the_binding_calls_are_real_onnxruntime_api(tmp_path: Path) -> None:
    """The same OrtDeviceIO on the real onnxruntime, with ORT's "cpu" device standing in for
    "cuda" (the fake device memory is host memory): every binding call, the run option, the
    warm-ups' get_outputs().shape() and clear_binding_outputs exist and behave as used."""
    import onnxruntime

    from streamswap.inference.ort import _tensor_infos
    from streamswap.inference.ort_device import NO_SYNC, OrtDeviceIO

    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    real = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    gpu = GpuContext(Cuda(FakeCudart()))
    stream = gpu.stream("swap")
    io = OrtDeviceIO(
        onnxruntime,
        real,
        model,
        _tensor_infos(real.get_inputs()),
        _tensor_infos(real.get_outputs()),
        cuda=gpu.cuda,
        stream=stream,
        device_id=0,
        max_batch=4,
        size=None,
        device_type="cpu",
    )
    assert io._run_options.get_run_config_entry(NO_SYNC) == "1"
    assert io.max_shape("out") == (4, 3, 16, 16)
    warm = gpu.cuda.allocations
    rng = np.random.default_rng(3)
    for n in (2, 4, 1):
        x, s = rng.random((n, 3, 16, 16), dtype=np.float32), rng.random((n, 512), dtype=np.float32)
        _view(io.device_input("target").ptr, x.shape, np.dtype(np.float32))[...] = x
        _view(io.device_input("source").ptr, s.shape, np.dtype(np.float32))[...] = s
        io.enqueue({"target": x.shape, "source": s.shape}, stream)
        np.testing.assert_allclose(io.fetch(stream).result()["out"], real.run(None, {"target": x, "source": s})[0])
    assert gpu.cuda.allocations == warm


def test_a_fixed_batch_generator_on_ort_cuda_swaps_on_the_device_one_call_per_face(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice
) -> None:
    """A model file whose batch is fixed at one (as the public inswapper_128's): the crops
    are still warped, generated and pasted on the device, one generator call per face."""
    import onnx
    from swap_fixtures import cpu_session

    from streamswap.faces.device import DeviceFrames, DeviceSwapper

    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    graph = onnx.load(model)
    for value in [*graph.graph.input, *graph.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_value = 1  # "n" → 1
    onnx.save(graph, model)
    pool = _pool(onnxruntime_gpu, tmp_path, max_batch=8)
    stream = pool.gpu.stream("swap")
    session = pool.get(model, stage="swap")
    fake = onnxruntime_gpu.sessions[-1]
    device = DeviceSwapper(TinySwapper(session, name="tiny"), session, pool.gpu.cuda, max_faces=4)
    host = TinySwapper(cpu_session(model), name="tiny")
    assert device.batch == 1 and not host.batched
    identity = np.linspace(-1, 1, 512, dtype=np.float32)
    device.set_identity(identity)
    host.set_identity(identity)
    frames = DeviceFrames(pool.gpu.cuda)
    slot = frames.alloc((40, 48, 3), np.uint8)
    slot[...] = _frame(6)
    expected = slot.copy()
    faces = _faces(3)
    warm = pool.gpu.cuda.allocations
    device.swap(frames.upload(slot, stream), faces, stream)
    frames.download(slot, stream)
    host.swap(expected, faces)
    assert np.abs(slot.astype(int) - expected.astype(int)).max() <= 2
    assert not np.array_equal(slot, _frame(6))
    assert [r["inputs"]["target"][0] for r in fake.runs[1:]] == [(1, 3, 16, 16)] * 3  # after one warm-up
    assert pool.gpu.cuda.allocations == warm


def test_orts_tensorrt_provider_gets_one_profile_for_the_whole_batch_range(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORT's TensorRT provider is told the range (batch 1..max_batch) up front, so it builds
    one engine instead of rebuilding mid-stream when a frame brings more faces; its session
    computes on the stage's stream and takes the device path like the CUDA provider's."""
    offered = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime_gpu, "get_available_providers", lambda: offered)
    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    pool = _pool(onnxruntime_gpu, tmp_path, provider="tensorrt", max_batch=5)
    session = pool.get(model, stage="swap")
    fake = onnxruntime_gpu.sessions[-1]
    trt = fake.options["TensorrtExecutionProvider"]
    assert trt["trt_profile_min_shapes"] == "target:1x3x16x16,source:1x512"
    assert trt["trt_profile_opt_shapes"] == "target:1x3x16x16,source:1x512"
    assert trt["trt_profile_max_shapes"] == "target:5x3x16x16,source:5x512"
    assert trt["user_compute_stream"] == str(pool.gpu.stream("swap").handle)
    assert "trt_profile_min_shapes" not in fake.options["CUDAExecutionProvider"]
    assert session.backend == "ort:TensorrtExecutionProvider" and runs_on_device(session)
    assert session.max_shape("target") == (5, 3, 16, 16)
    fixed = _scrfd(tmp_path, 32, [])  # no dynamic input: nothing to profile
    pool.get(fixed, size=32, stage="detect")
    assert "trt_profile_min_shapes" not in onnxruntime_gpu.sessions[-1].options["TensorrtExecutionProvider"]


def test_tensorrts_fallback_to_ort_cuda_keeps_the_device_path(
    tmp_path: Path, onnxruntime_gpu: CudaBuildOnFakeDevice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """configs/desktop-gpu.yaml's case: backend tensorrt where TensorRT cannot run, fallback
    [cuda]: the ONNX Runtime session that takes over computes on the stage's stream and
    still runs on device buffers (the frame path does not fall back to the host)."""
    import sys

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as without it
    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    pool = _pool(onnxruntime_gpu, tmp_path, backend="tensorrt", fallback=["cuda"], max_batch=3)
    session = pool.get(model, stage="swap")
    assert session.backend == "ort:CUDAExecutionProvider" and runs_on_device(session)
    assert onnxruntime_gpu.sessions[-1].stream == pool.gpu.stream("swap").handle
    assert session.max_shape("target") == (3, 3, 16, 16)
