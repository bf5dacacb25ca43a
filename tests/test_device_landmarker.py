"""FaceMesh on the GPU frame path (`faces.device.DeviceLandmarker`) over the recording fakes
(cuda-python, TensorRT), its kernels under Numba's CUDA simulator: the engine gets the host
FaceMesh's input within one grey level, the landmarks decode to the host's, nothing is
allocated per frame, everything runs on the detect stream, and the frame still crosses
the bus once. A 16-px FaceMesh stand-in keeps the simulated kernels cheap; the crop
geometry, ops and decoder are the real ones (the 192-px contract on a real device is in
tests/test_gpu_device.py)."""

from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_trt_fake import FakeCudart, make_fake_trt

from streamswap.faces.device import DeviceFrames, DeviceLandmarker
from streamswap.faces.landmarks import FaceMesh
from streamswap.faces.types import Face
from streamswap.inference.base import TensorInfo
from streamswap.inference.cuda import Cuda, GpuContext
from streamswap.inference.engine_cache import profile_from_inputs
from streamswap.inference.tensorrt import TrtSession, onnx_inputs
from streamswap.inference.trt_build import BuildRequest, build_serialized
from streamswap.ops.cuda import as_device

VERSION = "10.3.0.30"
CROP = 16
H, W = 40, 48
H2D = 1  # cudaMemcpyHostToDevice


class TinyMesh(FaceMesh):
    """The FaceMesh adapter with a 16-px crop (test only): the simulator runs every kernel
    thread in Python, and a 192-px crop takes seconds per face there."""

    input_size = CROP


def tiny_mesh_model(path: Path) -> Path:
    """input N×3×16×16 → mesh N×1404×1×1 = points spread over the crop moved by a fixed
    random linear map of the pixels (so every input pixel shows in the points), presence
    logits N×1×1×1 = 4 + 2·mean(input)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(11)
    pixels = 3 * CROP * CROP
    weights = rng.uniform(-0.05, 0.05, (pixels, 1404)).astype(np.float32)
    base = rng.uniform(2.0, CROP - 2.0, (468, 3)).astype(np.float32)
    base[:, 2] -= CROP / 2  # z around 0
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["moved"]),
        helper.make_node("Add", ["moved", "b"], ["points"]),
        helper.make_node("Reshape", ["points", "mesh_shape"], ["mesh"]),
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "two"], ["twice"]),
        helper.make_node("Add", ["twice", "four"], ["flag"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny_mesh",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, CROP, CROP])],
        [
            helper.make_tensor_value_info("mesh", TensorProto.FLOAT, ["n", 1404, 1, 1]),
            helper.make_tensor_value_info("flag", TensorProto.FLOAT, ["n", 1, 1, 1]),
        ],
        [
            helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.reshape(-1)),
            helper.make_tensor("b", TensorProto.FLOAT, [1404], base.reshape(-1)),
            helper.make_tensor("mesh_shape", TensorProto.INT64, [4], [-1, 1404, 1, 1]),
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("four", TensorProto.FLOAT, [], [4.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def pooled_mesh_model(path: Path, size: int) -> Path:
    """A FaceMesh-contract model for the real 192-px crop (tests/test_gpu_device.py): the
    points move with a fixed random linear map of the crop's 4×4 grid of per-channel
    means (colour order and placement both show), presence logits = 4 + 2·mean(input)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(12)
    cell = size // 4
    weights = rng.uniform(-size / 8, size / 8, (48, 1404)).astype(np.float32)
    base = rng.uniform(0.2 * size, 0.8 * size, (468, 3)).astype(np.float32)
    base[:, 2] -= size / 2
    nodes = [
        helper.make_node("AveragePool", ["input"], ["grid"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Flatten", ["grid"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "w"], ["moved"]),
        helper.make_node("Add", ["moved", "b"], ["points"]),
        helper.make_node("Reshape", ["points", "mesh_shape"], ["mesh"]),
        helper.make_node("ReduceMean", ["input"], ["mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Mul", ["mean", "two"], ["twice"]),
        helper.make_node("Add", ["twice", "four"], ["flag"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pooled_mesh",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3, size, size])],
        [
            helper.make_tensor_value_info("mesh", TensorProto.FLOAT, ["n", 1404, 1, 1]),
            helper.make_tensor_value_info("flag", TensorProto.FLOAT, ["n", 1, 1, 1]),
        ],
        [
            helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.reshape(-1)),
            helper.make_tensor("b", TensorProto.FLOAT, [1404], base.reshape(-1)),
            helper.make_tensor("mesh_shape", TensorProto.INT64, [4], [-1, 1404, 1, 1]),
            helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
            helper.make_tensor("four", TensorProto.FLOAT, [], [4.0]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def engine_of(model: Path, tmp_path: Path, max_batch: int) -> Path:
    """A fake TensorRT engine of `model` with a batch profile of 1..max_batch."""
    profile = profile_from_inputs(onnx_inputs(model), max_batch)
    request = BuildRequest(
        model.stem,
        str(model),
        str(tmp_path / f"{model.stem}.plan"),
        "fp32",
        [p.to_json() for p in profile],
        str(tmp_path),
    )
    engine = tmp_path / f"{model.stem}-{max_batch}.engine"
    engine.write_bytes(build_serialized(make_fake_trt(VERSION), request, lambda *a: None))
    return engine


def _face(x: float, y: float, side: float, tilt_deg: float = 0.0) -> Face:
    """A face with box (x, y, side) and eyes tilted by `tilt_deg` (what crop_transform levels)."""
    cx, cy = x + side / 2, y + side / 2
    a = np.radians(tilt_deg)
    dx, dy = 0.25 * side * np.cos(a), 0.25 * side * np.sin(a)
    kps = np.array(
        [
            [cx - dx, cy - 0.1 * side - dy],
            [cx + dx, cy - 0.1 * side + dy],
            [cx, cy],
            [cx - 3, cy + 4],
            [cx + 3, cy + 4],
        ],
        np.float32,
    )
    return Face(box=np.array([x, y, x + side, y + side], np.float32), score=0.9, kps=kps)


# Inside, rotated, over the left/top and right/bottom borders, and one whose ROI (1.5× the
# box) is larger than the whole frame.
FACES = [
    _face(14.0, 10.0, 14.0),
    _face(18.0, 12.0, 15.0, tilt_deg=35.0),
    _face(-5.0, -4.0, 13.0, tilt_deg=-20.0),
    _face(38.0, 30.0, 14.0),
    _face(-2.0, -3.0, 46.0, tilt_deg=10.0),
]


def _frame(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (H, W, 3), dtype=np.uint8), (0, 0), 1.0)
    frame[10:20, 20:30] = (250, 20, 120)  # a hard edge: where rounding differs most
    return frame


@pytest.fixture()
def mesh_model(tmp_path: Path) -> Path:
    return tiny_mesh_model(tmp_path / "tiny_mesh.onnx")


def test_device_landmarker_feeds_the_host_input_and_decodes_the_host_landmarks(
    tmp_path: Path, mesh_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from swap_fixtures import cpu_session

    from streamswap.ops import cuda as ops

    launched: list[object] = []
    as_stream = ops.as_stream
    monkeypatch.setattr(ops, "as_stream", lambda stream: launched.append(stream) or as_stream(stream))
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    stream = gpu.stream("detect")
    trt = make_fake_trt(VERSION)
    session = TrtSession(engine_of(mesh_model, tmp_path, 5), trt, gpu.cuda, stream)
    device = DeviceLandmarker(TinyMesh(session), session, gpu.cuda, max_faces=5)
    host = TinyMesh(cpu_session(mesh_model))
    frames = DeviceFrames(gpu.cuda)
    slots = [frames.alloc((H, W, 3), np.uint8) for _ in range(2)]
    loaded = gpu.cuda.allocations  # everything is sized at load
    for index, count in enumerate((0, 5, 1, 3)):  # the face count goes 0 → 5 → 1 → 3
        slot = slots[index % 2]
        slot[...] = _frame(index)
        faces = FACES[:count] if count != 1 else FACES[1:2]  # one rotated face alone
        rt.sync.clear(), rt.copies.clear(), trt.calls.clear(), launched.clear()
        on_device = frames.upload(slot, stream)  # the detect stage's one upload
        got = device.landmarks_many(on_device, faces, stream)
        want = host.landmarks_many(slot, faces)
        assert got.shape == want.shape == (count, 468, 3)
        if count:
            fed = as_device(session.device_input("input"))[:count]
            diff = np.abs(fed - host._buffer[:count])
            assert diff.max() <= 1 / 255 + 1e-6, f"frame {index}: engine input off by {diff.max() * 255:.2f} levels"
            assert diff.mean() < 0.1 / 255  # rounding only, not a shifted crop
            # 1 grey level through the model's pixel weights (|w| ≤ 0.05) moves a point by
            # well under 0.05 crop px; the largest face maps 1 crop px to 4.3 frame px.
            np.testing.assert_allclose(got, want, atol=0.05)
            np.testing.assert_allclose(device.last_presence, host.last_presence, atol=1e-5)
            assert (device.last_presence > 0.9).all()
        assert len(device.last_presence) == count
        copies = [s for n, s in rt.sync if n == "cudaMemcpyAsync"]
        assert set(copies) == {stream.handle}  # the upload and the small outputs: detect stream
        assert [c for c in rt.copies if c[0] == H2D] == [(H2D, H * W * 3)]  # the frame, nothing else
        runs = [s for name, s in trt.calls if name == "execute_async_v3"]
        assert runs == ([stream.handle] if count else [])  # one engine call for all faces
        assert launched == ([stream] * 2 if count else [])  # the warp and the normalise launch
        records = [a for n, a in rt.sync if n == "cudaEventRecord"]
        assert all(s == stream.handle for _, s in records)
        assert not [n for n, _ in rt.sync if n in ("cudaStreamSynchronize", "cudaDeviceSynchronize")]
    assert gpu.cuda.allocations == loaded  # nothing allocated after load, whatever the face count
    assert frames.bytes_up == 4 * H * W * 3  # one upload per frame


def test_device_landmarker_chunks_by_the_engines_batch(tmp_path: Path, mesh_model: Path) -> None:
    from swap_fixtures import cpu_session

    gpu = GpuContext(Cuda(FakeCudart()))
    stream = gpu.stream("detect")
    trt = make_fake_trt(VERSION)
    session = TrtSession(engine_of(mesh_model, tmp_path, 2), trt, gpu.cuda, stream)
    device = DeviceLandmarker(TinyMesh(session), session, gpu.cuda, max_faces=8)
    assert device.batch == 2  # the engine takes 2 faces per call: 5 faces are 3 calls
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((H, W, 3), np.uint8)
    slot[...] = _frame(7)
    got = device.landmarks_many(frames.upload(slot, stream), FACES, stream)
    want = TinyMesh(cpu_session(mesh_model), max_batch=8).landmarks_many(slot, FACES)
    np.testing.assert_allclose(got, want, atol=0.05)
    assert [name for name, _ in trt.calls].count("execute_async_v3") == 3


def test_device_landmarker_refuses_float16_io() -> None:
    from streamswap.errors import ModelError

    session = types.SimpleNamespace(
        path="facemesh_fp16.engine",
        inputs=[TensorInfo("input", (None, 3, CROP, CROP), np.dtype(np.float16))],
        outputs=[
            TensorInfo("mesh", (None, 1404, 1, 1), np.dtype(np.float16)),
            TensorInfo("flag", (None, 1, 1, 1), np.dtype(np.float16)),
        ],
    )
    with pytest.raises(ModelError, match=r"facemesh_fp16.engine \(facemesh\): the GPU frame path feeds float32"):
        DeviceLandmarker(TinyMesh(session), session, GpuContext(Cuda(FakeCudart())).cuda, max_faces=4)


def test_detect_stage_landmarks_frame_slots_on_the_device_and_stills_on_the_host(
    tmp_path: Path, mesh_model: Path
) -> None:
    """The detect stage of the GPU path with a device landmarker, as the pipeline drives it
    (detector every 2nd frame, faces tracked by their landmarks in between): the same faces
    as the host stage on the same frames, one upload per frame and no other host → device
    copy; an image that is not a slot (tools, source photos) runs the host adapters."""
    from swap_fixtures import cpu_session
    from test_detectors import face_at, scrfd_model, scrfd_tensors

    from streamswap.faces.detectors import make_detector
    from streamswap.faces.device import DeviceDetector, DeviceDetectStage
    from streamswap.faces.settings import DetectorSettings, TrackingSettings
    from streamswap.faces.stages import DetectStage
    from streamswap.io.base import FrameMeta
    from streamswap.pipeline.frame_queue import FrameItem

    size = 32
    found = [face_at(8, (2, 2), 0.9, (6, 4, 20, 18)), face_at(16, (1, 0), 0.8, (17, 2, 31, 16))]
    det_model = scrfd_model(tmp_path / "scrfd.onnx", size, scrfd_tensors(size, found, True))
    settings = DetectorSettings(model="scrfd_2.5g", size=size)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    stream = gpu.stream("detect")
    trt = make_fake_trt(VERSION)
    det_session = TrtSession(engine_of(det_model, tmp_path, 1), trt, gpu.cuda, stream)
    mesh_session = TrtSession(engine_of(mesh_model, tmp_path, 4), trt, gpu.cuda, stream)
    frames = DeviceFrames(gpu.cuda)
    tracking = TrackingSettings(detect_every=2)
    device_stage = DeviceDetectStage(
        DeviceDetector(make_detector("scrfd", det_session, settings), det_session),
        frames,
        stream,
        landmarker=DeviceLandmarker(TinyMesh(mesh_session), mesh_session, gpu.cuda, max_faces=4),
        tracking=tracking,
    )
    host_stage = DetectStage(
        make_detector("scrfd", cpu_session(det_model), settings),
        landmarker=TinyMesh(cpu_session(mesh_model)),
        tracking=tracking,
    )
    slot = frames.alloc((H, W, 3), np.uint8)
    loaded = gpu.cuda.allocations
    for index in range(4):  # detect, track, detect, track
        slot[...] = _frame(20 + index)
        item = FrameItem(0, FrameMeta(index, index, 0.0))
        rt.copies.clear()
        device_stage.process(slot, item)
        want = host_stage.faces(slot.copy(), index)
        assert len(item.faces) == len(want) == 2
        for got_face, want_face in zip(item.faces, want):
            np.testing.assert_allclose(got_face.landmarks, want_face.landmarks, atol=0.05)
            np.testing.assert_allclose(got_face.kps, want_face.kps, atol=0.05)
            assert got_face.track_id == want_face.track_id
        assert [c for c in rt.copies if c[0] == H2D] == [(H2D, H * W * 3)]  # the frame, once
    assert device_stage.detector_calls == host_stage.detector_calls == 2
    assert gpu.cuda.allocations == loaded

    still = _frame(30)  # not a frame slot: the host adapters (host tensors into the engines)
    uploaded = frames.bytes_up
    device_stage.reset()
    faces = device_stage.detect(still, 0)
    assert len(faces) == 2 and frames.bytes_up == uploaded
    host_stage.reset()
    np.testing.assert_allclose(faces[0].landmarks, host_stage.detect(still, 0)[0].landmarks, atol=1e-4)
    assert len(device_stage.landmarker.last_presence) == 2  # type: ignore[union-attr]


def test_wiring_puts_a_device_facemesh_on_the_device_and_keeps_any_other_on_the_host(
    tmp_path: Path, mesh_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from swap_fixtures import cpu_session
    from test_detectors import scrfd_model, scrfd_tensors
    from test_device_path import TinySwapper, tiny_engine

    from streamswap.config import Config
    from streamswap.inference.ort import SessionPool
    from streamswap.inference.settings import InferenceSettings
    from streamswap.wiring import _gpu_frame_path

    _, sw_engine = tiny_engine(tmp_path, max_batch=8)
    gpu = GpuContext(Cuda(FakeCudart()))
    trt = make_fake_trt(VERSION)
    swapper = TinySwapper(TrtSession(sw_engine, trt, gpu.cuda), name="tiny")
    det_model = scrfd_model(tmp_path / "scrfd.onnx", 32, scrfd_tensors(32, [], True))
    detector = types.SimpleNamespace(
        session=TrtSession(engine_of(det_model, tmp_path, 1), trt, gpu.cuda),
        decode_outputs=lambda outputs, scale, shape: [],  # the host adapter's decoder (unused here)
        detect=lambda bgr: [],
        input_name="input.1",
        label="scrfd",
        input=types.SimpleNamespace(size=32),
    )
    config = Config()
    config.inference = InferenceSettings(backend="tensorrt")
    pool = SessionPool(config.inference, gpu=gpu)
    on_engine = TinyMesh(TrtSession(engine_of(mesh_model, tmp_path, 8), trt, gpu.cuda, gpu.stream("detect")))
    path = _gpu_frame_path(config, pool, detector, swapper, None, on_engine)
    assert isinstance(path.landmarker, DeviceLandmarker) and path.landmarker.landmarker is on_engine
    assert path.landmarker.batch == config.faces.detector.max_faces
    caplog.set_level(logging.INFO, logger="streamswap.wiring")
    path = _gpu_frame_path(config, pool, detector, swapper, None, TinyMesh(cpu_session(mesh_model)))
    assert path is not None and path.landmarker is None  # the frame path stays on; FaceMesh on the host
    reasons = [r.kv["reason"] for r in caplog.records if "landmarker" in r.getMessage()]
    assert len(reasons) == 1 and reasons[0].startswith("the landmarker runs on ort:CPUExecutionProvider, not as")


def test_device_landmarker_runs_on_onnx_runtimes_cuda_provider(
    tmp_path: Path, mesh_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same device landmarker over an ONNX Runtime CUDA session (I/O binding on its
    device buffers; the recording onnxruntime-gpu fake computes real results): the host's
    landmarks, every run on the detect stream, nothing allocated after load."""
    from ort_fakes import CudaBuildOnFakeDevice
    from swap_fixtures import cpu_session

    from streamswap.inference import ort as ort_backend
    from streamswap.inference.ort import SessionPool
    from streamswap.inference.settings import InferenceSettings

    rt = FakeCudart()
    build = CudaBuildOnFakeDevice(rt)
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: build)
    gpu = GpuContext(Cuda(rt))
    pool = SessionPool(InferenceSettings(provider="cuda", max_batch=4), tmp_path, gpu=gpu)
    session = pool.get(mesh_model, role="landmarker", stage="detect")
    fake = build.sessions[-1]
    stream = gpu.stream("detect")
    device = DeviceLandmarker(TinyMesh(session), session, gpu.cuda, max_faces=4)
    host = TinyMesh(cpu_session(mesh_model))
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((H, W, 3), np.uint8)
    loaded, warm_ups = gpu.cuda.allocations, len(fake.runs)
    for index, faces in enumerate((FACES[:4], [], FACES[4:])):
        slot[...] = _frame(40 + index)
        got = device.landmarks_many(frames.upload(slot, stream), faces, stream)
        np.testing.assert_allclose(got, host.landmarks_many(slot, faces), atol=0.05)
    assert gpu.cuda.allocations == loaded
    assert fake.providers[0] == "CUDAExecutionProvider"
    assert [r["stream"] for r in fake.runs[warm_ups:]] == [stream.handle] * 2  # 4 faces, 0, 1: two runs


def test_build_face_stages_puts_the_bundled_facemesh_on_the_device(
    tmp_path: Path, bundled_models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole wiring with the real 192-px FaceMesh graph on ONNX Runtime's CUDA provider
    (the recording onnxruntime-gpu fake): the detect stage's landmarker is the device twin
    for frame slots, with the host FaceMesh behind it for other images."""
    from ort_fakes import CudaBuildOnFakeDevice
    from test_detectors import scrfd_model, scrfd_tensors

    from streamswap.bench.synthetic import make_arcface_model, make_swapper_model
    from streamswap.config import load_config
    from streamswap.faces.device import DeviceDetectStage, _SlotLandmarker
    from streamswap.inference import cuda as cuda_mod
    from streamswap.inference import ort as ort_backend
    from streamswap.models.bundled import BUNDLED
    from streamswap.wiring import build_face_stages

    build = CudaBuildOnFakeDevice(FakeCudart())
    monkeypatch.setattr(ort_backend, "_import_ort", lambda: build)
    monkeypatch.setattr(cuda_mod, "import_cudart", lambda: build._rt)
    overrides = {
        "models.dir": str(tmp_path / "models"),
        "faces.detector.model": str(scrfd_model(tmp_path / "scrfd.onnx", 128, scrfd_tensors(128, [], True))),
        "faces.detector.contract": "scrfd",
        "faces.detector.size": 128,
        "faces.detector.max_faces": 2,
        "faces.landmarker.model": str(bundled_models_dir / BUNDLED["facemesh"].file),
        "faces.landmarker.contract": "facemesh",
        "faces.swapper.model": str(make_swapper_model(tmp_path / "swap.onnx", size=128, batch_dynamic=True)),
        "faces.swapper.contract": "inswapper",
        "faces.recognizer.model": str(make_arcface_model(tmp_path / "arcface.onnx")),
        "faces.recognizer.contract": "arcface",
        "inference.max_batch": 2,
        "inference.provider": "cuda",
    }
    stages = build_face_stages(load_config(None, overrides))
    try:
        assert isinstance(stages.detect, DeviceDetectStage)
        slot_landmarker = stages.detect.landmarker
        assert isinstance(slot_landmarker, _SlotLandmarker) and slot_landmarker.stage is stages.detect
        device = slot_landmarker.device
        assert device.size == 192 and device.batch == 2
        assert device.session.backend == "ort:CUDAExecutionProvider" and device.session.stream is stages.detect.stream
        assert isinstance(stages.identities.detector.landmarker, FaceMesh)  # source photos: the host's own
    finally:
        stages.close()


def test_gpu_bench_scene_with_a_landmarker_meshes_the_faces_drawn(tmp_path: Path) -> None:
    """`bench gpu --landmarker`'s scene (a generated FaceMesh-shaped model, the detector every
    2nd frame) through the real wiring and host adapters: every face drawn gets a mesh whose
    five points sit on that face, in order, with a presence that keeps its track."""
    from streamswap.bench.gpu import default_scene
    from streamswap.wiring import build_face_stages

    scene = default_scene(tmp_path, 1280, 720, 2, landmarker=True)
    assert scene.config.faces.tracking.detect_every == 2
    stages = build_face_stages(scene.config)
    try:
        assert isinstance(stages.detect.landmarker, FaceMesh)
        found = sorted(stages.detect_still(scene.frame), key=lambda f: f.box[0])
        presence = stages.detect.landmarker.last_presence
    finally:
        stages.close()
    assert len(found) == 2 and (presence > 0.9).all()
    for face in found:
        assert face.landmarks is not None and face.landmarks.shape == (468, 3)
        x0, y0, x1, y1 = face.box
        (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.kps
        assert x0 < lx < nx < rx < x1 and mlx < mrx and y0 < ly < ny < mly < y1


def test_gpu_bench_with_a_landmarker_runs_it_on_the_detect_stream_over_the_fakes(
    tmp_path: Path, mesh_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench gpu` with a landmarker, as `run` builds it on a GPU, through the real Pipeline
    (stand-in networks, kernels simulated, a 16-px FaceMesh contract so they stay cheap): the
    detect stage's landmarker is the device twin, its network a stand-in on the detect
    stream, and the frame still crosses once each way."""
    import dataclasses

    from test_detectors import face_at, scrfd_model, scrfd_tensors
    from test_device_path import TinyArcfaceSwapper, tiny_swapper_model

    from streamswap.bench import synthetic
    from streamswap.bench.gpu import BenchScene, StandInNetwork, run_frame_path, scene_config
    from streamswap.faces import adapters
    from streamswap.models.catalogue import CATALOGUE
    from streamswap.models.store import ModelStore

    monkeypatch.setitem(
        adapters._REGISTRY,
        ("swapper", "tiny"),
        lambda parts: TinyArcfaceSwapper(parts.session, name=parts.name, recognizer=parts.recognizer),
    )
    monkeypatch.setitem(adapters._REGISTRY, ("landmarker", "tinymesh"), lambda parts: TinyMesh(parts.session))
    made: dict[str, int] = {}
    init = StandInNetwork.__init__

    def record(self, host, *args, **kwargs):
        init(self, host, *args, **kwargs)
        made[Path(host.path).stem] = self.stream.handle

    monkeypatch.setattr(StandInNetwork, "__init__", record)
    runs: list[str] = []
    enqueue = StandInNetwork.enqueue

    def count(self, shapes, stream=None):
        runs.append(Path(self.host.path).stem)
        enqueue(self, shapes, stream)

    monkeypatch.setattr(StandInNetwork, "enqueue", count)
    size = 32
    box = (6, 4, 26, 26)
    detector = scrfd_model(tmp_path / "scrfd.onnx", size, scrfd_tensors(size, [face_at(8, (2, 2), 0.9, box)], True))
    overrides = {
        "faces.detector.model": str(detector),
        "faces.detector.contract": "scrfd",
        "faces.detector.max_faces": 2,
        "faces.landmarker.model": str(mesh_model),
        "faces.landmarker.contract": "tinymesh",
        "faces.tracking.detect_every": 2,
        "faces.recognizer.model": str(synthetic.make_arcface_model(tmp_path / "arcface.onnx")),
        "faces.recognizer.contract": "arcface",
        "faces.swapper.model": str(tiny_swapper_model(tmp_path / "tiny.onnx")),
        "faces.swapper.contract": "tiny",
        "inference.max_batch": 2,
        "models.dir": str(tmp_path),
    }
    config = scene_config(overrides)
    faces = dataclasses.replace(config.faces, detector=dataclasses.replace(config.faces.detector, size=size))
    scene = BenchScene(_frame(1), _frame(2), dataclasses.replace(config, faces=faces))
    # the 16-px test contracts, as catalogue entries (a user's file names a known contract)
    tiny = dataclasses.replace(CATALOGUE["inswapper_128"], name="tiny", contract="tiny")
    mesh = dataclasses.replace(CATALOGUE["facemesh"], name="tinymesh", contract="tinymesh")
    store = ModelStore(config.models, {**CATALOGUE, "tiny": tiny, "tinymesh": mesh})
    rt = FakeCudart()
    report = run_frame_path(scene, Cuda(rt), frames=3, iterations=1, store=store)
    assert report.frames == 3 and report.faces == 1
    assert report.h2d_bytes == report.d2h_bytes == H * W * 3  # one frame each way per frame
    assert made["tiny_mesh"] == made["scrfd"] != made["tiny"]  # the landmarker on the detect stream
    # the detector every 2nd frame (the still before the run was the first), the mesh on the
    # device on every frame: after a detection, or following the track (a track the
    # detection missed is followed too)
    assert runs.count("scrfd") == 1 and runs.count("tiny_mesh") >= 3 and runs.count("tiny") == 3
