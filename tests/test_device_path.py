"""The GPU frame path over the recording fakes (cuda-python, TensorRT) with the image kernels
under Numba's CUDA simulator: one upload and one download per frame, the swap stream waits
on the detect stream's upload event, no allocation after the first frame, and the device
swap gives the host path's pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_trt_fake import FakeCudart, make_fake_trt

from streamswap.faces.device import DeviceFrames, DeviceSwapper
from streamswap.faces.swappers.base import CropFormat, NeuralSwapper
from streamswap.faces.types import Face
from streamswap.inference.cuda import Cuda, GpuContext
from streamswap.inference.engine_cache import profile_from_inputs
from streamswap.inference.tensorrt import TrtSession, onnx_inputs
from streamswap.inference.trt_build import BuildRequest, build_serialized

VERSION = "10.3.0.30"
CROP = 16  # a tiny crop: the simulator runs every kernel thread in Python


class TinySwapper(NeuralSwapper):
    """A swapper adapter of a 16-px contract (test only), so kernels stay cheap to simulate."""

    contract = "tiny"
    crop = CropFormat(
        template="arcface_128",
        size=CROP,
        rgb=True,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        out_scale=0.5,
        out_offset=0.5,
    )

    def latent(self, identity):
        vector = np.asarray(identity, np.float32).reshape(1, -1)
        return vector / np.linalg.norm(vector)


def tiny_swapper_model(path: Path) -> Path:
    """target N×3×16×16, source N×512 → output N×3×16×16 = 0.8·target + mean(source)."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["source"], ["m"], axes=[1], keepdims=1),
        helper.make_node("Unsqueeze", ["m", "axes"], ["m4"]),
        helper.make_node("Mul", ["target", "k"], ["scaled"]),
        helper.make_node("Add", ["scaled", "m4"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [
            helper.make_tensor_value_info("target", TensorProto.FLOAT, ["n", 3, CROP, CROP]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, ["n", 512]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3, CROP, CROP])],
        [
            helper.make_tensor("k", TensorProto.FLOAT, [], [0.8]),
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def tiny_engine(tmp_path: Path, max_batch: int) -> tuple[Path, Path]:
    model = tiny_swapper_model(tmp_path / "tiny.onnx")
    profile = profile_from_inputs(onnx_inputs(model), max_batch)
    request = BuildRequest(
        "tiny", str(model), str(tmp_path / "e.plan"), "fp32", [p.to_json() for p in profile], str(tmp_path)
    )
    engine = tmp_path / "tiny.engine"
    engine.write_bytes(build_serialized(make_fake_trt(VERSION), request, lambda *a: None))
    return model, engine


def _faces(count: int) -> list[Face]:
    """`count` faces of about 14 px in a 40×48 frame (one over the right border)."""
    out = []
    for i in range(count):
        x, y = 4.0 + 11.0 * i, 6.0 + 3.0 * (i % 3)
        kps = np.array([[x + 3, y + 4], [x + 9, y + 4], [x + 6, y + 7], [x + 4, y + 10], [x + 8, y + 10]], np.float32)
        out.append(Face(box=np.array([x, y, x + 12, y + 13], np.float32), score=0.9, kps=kps))
    return out


def _frame(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    import cv2

    return cv2.GaussianBlur(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8), (0, 0), 1.0)


def test_device_swap_matches_the_host_swap_and_allocates_nothing_after_warm_up(tmp_path: Path) -> None:
    from swap_fixtures import cpu_session

    model, engine = tiny_engine(tmp_path, max_batch=5)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    frames = DeviceFrames(gpu.cuda)
    slots = [frames.alloc((40, 48, 3), np.uint8) for _ in range(3)]  # the pipeline's slot pool
    session = TrtSession(engine, make_fake_trt(VERSION), gpu.cuda, swap_stream)
    device = DeviceSwapper(TinySwapper(session, name="tiny"), session, gpu.cuda, max_faces=5)
    host = TinySwapper(cpu_session(model), name="tiny")
    identity = np.linspace(-1, 1, 512, dtype=np.float32)
    device.set_identity(identity)
    host.set_identity(identity)
    warm = None
    for index, count in enumerate((0, 5, 1, 3)):  # the face count goes 0 → 5 → 1 → 3
        slot = index % len(slots)
        original = _frame(index)
        slots[slot][...] = original
        faces = _faces(count)
        rt.sync.clear()
        frames.upload(slot, detect_stream)  # detect stage: the one upload
        on_device = frames.frame(slot, swap_stream)  # swap stage: waits on the upload event
        device.swap(on_device, faces, swap_stream)
        frames.download(slot, swap_stream)
        expected = original.copy()
        host.swap(expected, faces)
        diff = np.abs(slots[slot].astype(int) - expected.astype(int))
        assert diff.max() <= 2, f"frame {index}: device and host swaps differ by {diff.max()}"
        if count:
            assert not np.array_equal(slots[slot], original)  # the faces really changed
        waits = [args for name, args in rt.sync if name == "cudaStreamWaitEvent"]
        assert [stream for stream, _ in waits] == [swap_stream.handle]  # GPU-side, not the host
        copies = [s for n, s in rt.sync if n == "cudaMemcpyAsync"]
        assert all(s == swap_stream.handle for s in copies[1:])  # after the upload: swap stream
        assert copies[0] == detect_stream.handle
        if warm is None:
            warm = gpu.cuda.allocations  # after the first frame
    assert gpu.cuda.allocations == warm  # 0 → 5 → 1 → 3 faces: nothing allocated after warm-up
    frame_bytes = 40 * 48 * 3
    assert frames.bytes_up == 4 * frame_bytes and frames.bytes_down == 4 * frame_bytes  # once each way


def test_mapped_slots_are_read_in_place(tmp_path: Path) -> None:
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt), mapped_slots=True)
    frames = DeviceFrames(gpu.cuda, mapped=True)
    slot = frames.alloc((8, 8, 3), np.uint8)
    slot[...] = 7
    stream = gpu.stream("detect")
    frame = frames.upload(0, stream)
    assert not [n for n, _ in rt.sync if n == "cudaMemcpyAsync"]  # zero-copy
    assert frame.array.ptr == slot.ctypes.data
    frames.download(0, stream)
    assert frames.bytes_up == frames.bytes_down == 0


def test_device_path_refuses_host_only_paste_options(tmp_path: Path) -> None:
    from streamswap.errors import ConfigError
    from streamswap.faces.settings import PasteSettings

    _, engine = tiny_engine(tmp_path, max_batch=2)
    gpu = GpuContext(Cuda(FakeCudart()))
    session = TrtSession(engine, make_fake_trt(VERSION), gpu.cuda)
    swapper = TinySwapper(session, name="tiny", paste=PasteSettings(color_correction=True))
    with pytest.raises(ConfigError, match="color_correction"):
        DeviceSwapper(swapper, session, gpu.cuda, max_faces=2)
    with pytest.raises(Exception, match="--max-faces 4"):
        DeviceSwapper(TinySwapper(session, name="tiny"), session, gpu.cuda, max_faces=4)


def test_device_detector_feeds_the_engine_the_host_letterbox_and_decodes_the_same_faces(tmp_path: Path) -> None:
    from swap_fixtures import cpu_session
    from test_detectors import face_at, scrfd_model, scrfd_tensors

    from streamswap.faces.detectors import make_detector
    from streamswap.faces.device import DeviceDetector
    from streamswap.faces.settings import DetectorSettings

    size = 32
    model = scrfd_model(
        tmp_path / "scrfd.onnx", size, scrfd_tensors(size, [face_at(8, (1, 1), 0.9, (4, 5, 20, 22))], True)
    )
    request = BuildRequest(
        "scrfd",
        str(model),
        str(tmp_path / "d.plan"),
        "fp32",
        [p.to_json() for p in profile_from_inputs(onnx_inputs(model), 1)],
        str(tmp_path),
    )
    engine = tmp_path / "scrfd.engine"
    engine.write_bytes(build_serialized(make_fake_trt(VERSION), request, lambda *a: None))
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    stream = gpu.stream("detect")
    settings = DetectorSettings(model="scrfd_2.5g", size=size)
    session = TrtSession(engine, make_fake_trt(VERSION), gpu.cuda, stream)
    device = DeviceDetector(make_detector("scrfd", session, settings), session)
    host = make_detector("scrfd", cpu_session(model), settings)
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((40, 48, 3), np.uint8)
    slot[...] = _frame(3)
    found = device.detect(frames.upload(0, stream), stream)
    want = host.detect(slot)
    assert len(found) == len(want) == 1
    np.testing.assert_allclose(found[0].box, want[0].box, atol=1e-4)
    from streamswap.ops.cuda import as_device

    engine_input = as_device(session.device_input("input.1"))
    assert np.abs(engine_input - host.input.buffer).max() <= 1 / 128 + 1e-6  # the device letterbox
    assert [n for n, s in rt.sync if n == "cudaMemcpyAsync"].count("cudaMemcpyAsync") == 1 + len(session.outputs)


def test_gpu_bench_runs_the_frame_path_over_the_fakes() -> None:
    """`bench gpu`'s frame path executes end to end (tiny frames, kernels simulated); the
    numbers are only meaningful on a GPU, but the bytes per frame are exact anywhere."""
    from streamswap.bench.gpu import _overlap, run_frame_path

    report = run_frame_path(
        Cuda(FakeCudart()), frames=3, width=24, height=16, faces=1, iterations=1, detector_size=16, crop=8
    )
    assert report.frames == 3
    assert report.h2d_bytes == report.d2h_bytes == 24 * 16 * 3  # one frame each way per frame
    assert _overlap([(0, 10)], [(5, 20)]) == 0.5 and _overlap([(0, 10)], [(10, 20)]) == 0.0
