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


def tiny_swapper_model(path: Path, crop: int = CROP) -> Path:
    """target N×3×C×C, source N×512 → output N×3×C×C = 0.8·target + mean(source)."""
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
            helper.make_tensor_value_info("target", TensorProto.FLOAT, ["n", 3, crop, crop]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, ["n", 512]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", 3, crop, crop])],
        [
            helper.make_tensor("k", TensorProto.FLOAT, [], [0.8]),
            helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def tiny_engine(tmp_path: Path, max_batch: int, crop: int = CROP) -> tuple[Path, Path]:
    model = tiny_swapper_model(tmp_path / "tiny.onnx", crop)
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
        frames.upload(slots[slot], detect_stream)  # detect stage: the one upload
        on_device = frames.frame(slots[slot], swap_stream)  # swap stage: waits on the upload event
        device.swap(on_device, faces, swap_stream)
        frames.download(slots[slot], swap_stream)
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
    frame = frames.upload(slot, stream)
    assert not [n for n, _ in rt.sync if n == "cudaMemcpyAsync"]  # zero-copy
    assert frame.array.ptr == slot.ctypes.data
    frames.download(slot, stream)
    assert frames.bytes_up == frames.bytes_down == 0


@pytest.mark.parametrize("engine_batch", [1, 2])
def test_a_generator_taking_fewer_faces_is_called_per_chunk_on_the_device(
    tmp_path: Path, engine_batch: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A network that takes fewer faces per call than the detector finds (inswapper_128 as
    published has a fixed batch of one; an engine built for fewer faces) keeps the frame on
    the device: one call per chunk of faces, all on the swap stream, the host swap's pixels."""
    import logging

    from swap_fixtures import cpu_session

    model, engine = tiny_engine(tmp_path, max_batch=engine_batch)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((40, 48, 3), np.uint8)
    trt = make_fake_trt(VERSION)
    session = TrtSession(engine, trt, gpu.cuda, swap_stream)
    caplog.set_level(logging.INFO, logger="streamswap.faces.device")
    device = DeviceSwapper(TinySwapper(session, name="tiny"), session, gpu.cuda, max_faces=5)
    assert device.batch == engine_batch
    hint = [r.kv.get("hint") for r in caplog.records if r.getMessage().startswith("generator calls per frame")]
    assert hint == ["rebuild with `streamswap engines build --max-faces 5` for one call"]  # its ONNX batches
    host = TinySwapper(cpu_session(model), name="tiny")
    identity = np.linspace(-1, 1, 512, dtype=np.float32)
    device.set_identity(identity)
    host.set_identity(identity)
    original = _frame(4)
    slot[...] = original
    faces = _faces(5)
    warm_up = gpu.cuda.allocations
    frames.upload(slot, detect_stream)
    device.swap(frames.frame(slot, swap_stream), faces, swap_stream)
    frames.download(slot, swap_stream)
    expected = original.copy()
    host.swap(expected, faces)
    assert np.abs(slot.astype(int) - expected.astype(int)).max() <= 2
    runs = [handle for name, handle in trt.calls if name == "execute_async_v3"]
    assert runs == [swap_stream.handle] * -(-5 // engine_batch)  # ceil(5 / batch) calls, all on the swap stream
    assert gpu.cuda.allocations == warm_up


def _photo_faces(count: int) -> tuple[np.ndarray, list[Face]]:
    """A 64×120 frame with `count` real faces (the Tom Hanks photo, ~34 px, turned a little;
    the fourth over the top border, the fifth over the right one); the first has FaceMesh
    landmarks (its inner lips give the mouth polygon), the others only key points."""
    import cv2
    from conftest import require
    from swap_fixtures import face_at, similarity, tom_hanks

    from streamswap.faces.mesh_topology import LIPS_INNER, NUM_LANDMARKS

    photo = tom_hanks()
    require(photo is not None, "insightface's Tom_Hanks_54745.png")
    frame = np.empty((32, 60, 3), np.uint8)
    frame[:] = np.linspace(30, 220, 60, dtype=np.uint8)[None, :, None]
    frame[..., 0] //= 2
    faces = []
    for i in range(count):
        scale, angle, tx, ty = [
            (0.3, 8, 0, 20),
            (0.28, -10, 30, 24),
            (0.32, 0, 58, 18),
            (0.3, 5, 12, -10),
            (0.3, -6, 96, 22),
        ][i]
        scale, tx, ty = scale / 2, tx / 2, ty / 2
        cv2.warpAffine(photo, similarity(scale, angle, tx, ty), (60, 32), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
        face = face_at(scale, angle, tx, ty)
        if i == 0:
            landmarks = np.zeros((NUM_LANDMARKS, 2), np.float32)
            centre = face.kps[3:5].mean(axis=0)
            t = np.linspace(0, 2 * np.pi, len(LIPS_INNER), endpoint=False)
            landmarks[list(LIPS_INNER)] = centre + np.stack([2.5 * np.cos(t), 1.0 * np.sin(t)], -1)
            face.landmarks = landmarks
        faces.append(face)
    return frame, faces


def test_device_mouth_mask_and_colour_transfer_match_the_host_swap(tmp_path: Path, monkeypatch) -> None:
    """faces.paste.mouth_mask and color_correction on the device, on a real face photo: the
    host swap's pixels within the stated tolerance, every launch and copy on the swap
    stream, one upload and one download per frame, nothing allocated after warm-up while
    the face count goes 0 → 5 → 1."""
    from swap_fixtures import cpu_session

    from streamswap.faces.settings import PasteSettings
    from streamswap.ops import cuda as cuda_ops

    model, engine = tiny_engine(tmp_path, max_batch=5)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((32, 60, 3), np.uint8)
    paste = PasteSettings(color_correction=True, mouth_mask=True)
    session = TrtSession(engine, make_fake_trt(VERSION), gpu.cuda, swap_stream)
    device = DeviceSwapper(TinySwapper(session, name="tiny", paste=paste), session, gpu.cuda, max_faces=5)
    host = TinySwapper(cpu_session(model), name="tiny", paste=paste)
    fewer = [  # without both options; with the colour transfer alone
        TinySwapper(cpu_session(model), name="tiny", paste=settings)
        for settings in (PasteSettings(), PasteSettings(color_correction=True))
    ]
    identity = np.linspace(-1, 1, 512, dtype=np.float32)
    for swapper in (device, host, *fewer):
        swapper.set_identity(identity)
    launches: list = []
    as_stream = cuda_ops.as_stream
    monkeypatch.setattr(cuda_ops, "as_stream", lambda stream: launches.append(stream) or as_stream(stream))
    warm = None
    for index, count in enumerate((0, 5, 1)):
        original, faces = _photo_faces(count)
        slot[...] = original
        rt.sync.clear()
        launches.clear()
        frames.upload(slot, detect_stream)
        device.swap(frames.frame(slot, swap_stream), faces, swap_stream)
        frames.download(slot, swap_stream)
        expected = original.copy()
        host.swap(expected, faces)
        diff = np.abs(slot.astype(int) - expected.astype(int))
        # Tolerance: the transfer's LAB → BGR is float32 math within a grey level or two of
        # cv2's 8-bit conversion, and the mouth's filled outline may differ from cv2.fillPoly
        # on a pixel or two; measured here: at most 1 grey level, on < 5 % of the pixels.
        assert diff.max() <= 2 and (diff > 0).mean() < 0.1, f"frame {index}: {diff.max()}, {(diff > 0).mean()}"
        if count:  # both options changed the swap
            for swapper in fewer:
                other = original.copy()
                swapper.swap(other, faces)
                assert np.abs(other.astype(int) - expected.astype(int)).max() > 10
        assert bool(launches) == bool(count) and all(stream is swap_stream for stream in launches)  # every launch
        copies = [s for n, s in rt.sync if n == "cudaMemcpyAsync"]
        assert copies[0] == detect_stream.handle and all(s == swap_stream.handle for s in copies[1:])
        if warm is None:
            warm = gpu.cuda.allocations
    assert gpu.cuda.allocations == warm  # 0 → 5 → 1 faces: nothing allocated after the first frame
    assert frames.bytes_up == frames.bytes_down == 3 * slot.nbytes  # once each way per frame


def test_device_swaps_of_several_identities_in_one_frame_do_not_overwrite_queued_uploads(tmp_path: Path) -> None:
    """faces.map swaps each identity's faces in its own call, all queued on the swap stream:
    the second call rewrites the pinned matrices and mouth polygons only after the first
    call's copies ran (its staging event), and the frame equals the host's two calls."""
    from swap_fixtures import cpu_session

    from streamswap.faces.settings import PasteSettings

    model, engine = tiny_engine(tmp_path, max_batch=2)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    stream = gpu.stream("swap")
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((32, 60, 3), np.uint8)
    paste = PasteSettings(mouth_mask=True)
    session = TrtSession(engine, make_fake_trt(VERSION), gpu.cuda, stream)
    device = DeviceSwapper(TinySwapper(session, name="tiny", paste=paste), session, gpu.cuda, max_faces=2)
    host = TinySwapper(cpu_session(model), name="tiny", paste=paste)
    original, faces = _photo_faces(3)
    slot[...] = original
    expected = original.copy()
    frames.upload(slot, stream)
    on_device = frames.frame(slot, stream)
    rt.sync.clear()
    for group, identity in ((faces[:2], np.linspace(-1, 1, 512)), (faces[2:], np.linspace(1, -0.5, 512))):
        identity = identity.astype(np.float32)
        device.set_identity(identity)
        device.swap(on_device, group, stream)
        host.set_identity(identity)
        host.swap(expected, group)
    frames.download(slot, stream)
    staged = int(device._faces._staged.raw)
    marks = [name for name, args in rt.sync if args == staged or (isinstance(args, tuple) and args[0] == staged)]
    assert marks == ["cudaEventRecord", "cudaEventSynchronize", "cudaEventRecord"]
    assert np.abs(slot.astype(int) - expected.astype(int)).max() <= 2


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
    found = device.detect(frames.upload(slot, stream), stream)
    want = host.detect(slot)
    assert len(found) == len(want) == 1
    np.testing.assert_allclose(found[0].box, want[0].box, atol=1e-4)
    from streamswap.ops.cuda import as_device

    engine_input = as_device(session.device_input("input.1"))
    assert np.abs(engine_input - host.input.buffer).max() <= 1 / 128 + 1e-6  # the device letterbox
    assert [n for n, s in rt.sync if n == "cudaMemcpyAsync"].count("cudaMemcpyAsync") == 1 + len(session.outputs)


class TinyArcfaceSwapper(TinySwapper):
    """TinySwapper whose latent comes from a prepared source identity (its embedding)."""

    def latent(self, identity):
        embedding = getattr(identity, "embedding", identity)
        return super().latent(embedding)


def test_gpu_bench_runs_the_real_stages_in_the_real_pipeline_over_the_fakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`bench gpu` runs the face stages the wiring builds for a GPU (the device detect and
    swap stages, their streams, DeviceFrames slots) in a Pipeline, with stand-in networks:
    tiny frames and a 16-px swapper so the simulated kernels stay cheap; the timings only
    mean something on a GPU, but the bytes per frame are exact anywhere."""
    import dataclasses

    from test_detectors import face_at, scrfd_model, scrfd_tensors

    from streamswap.bench import synthetic
    from streamswap.bench.gpu import BenchScene, StandInNetwork, _overlap, run_frame_path, scene_config
    from streamswap.faces import adapters
    from streamswap.models.catalogue import CATALOGUE
    from streamswap.models.store import ModelStore

    monkeypatch.setitem(
        adapters._REGISTRY,
        ("swapper", "tiny"),
        lambda parts: TinyArcfaceSwapper(parts.session, name=parts.name, recognizer=parts.recognizer),
    )
    size = 32
    box = (6, 4, 26, 26)  # input pixels of a 32² letterbox: frame 48×40 → scale 32/48
    detector = scrfd_model(tmp_path / "scrfd.onnx", size, scrfd_tensors(size, [face_at(8, (2, 2), 0.9, box)], True))
    overrides = {
        "faces.detector.model": str(detector),
        "faces.detector.contract": "scrfd",
        "faces.detector.max_faces": 2,
        "faces.recognizer.model": str(synthetic.make_arcface_model(tmp_path / "arcface.onnx")),
        "faces.recognizer.contract": "arcface",
        "faces.swapper.model": str(tiny_swapper_model(tmp_path / "tiny.onnx")),
        "faces.swapper.contract": "tiny",
        "inference.max_batch": 2,
        "models.dir": str(tmp_path),
    }
    made: list[int] = []  # the stream of each stand-in network, when it is made
    init = StandInNetwork.__init__

    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self.stream.handle)

    monkeypatch.setattr(StandInNetwork, "__init__", record)
    rt = FakeCudart()
    config = scene_config(overrides)
    # a 32² detector input (below what a user may configure) keeps the simulated letterbox cheap
    faces = dataclasses.replace(config.faces, detector=dataclasses.replace(config.faces.detector, size=size))
    scene = BenchScene(_frame(1), _frame(2), dataclasses.replace(config, faces=faces))
    # the 16-px test contract, as a catalogue entry (a user's file names a known contract)
    spec = dataclasses.replace(CATALOGUE["inswapper_128"], name="tiny", contract="tiny")
    store = ModelStore(config.models, {**CATALOGUE, "tiny": spec})
    report = run_frame_path(scene, Cuda(rt), frames=3, iterations=1, store=store)
    assert report.frames == 3 and report.faces == 1
    assert report.h2d_bytes == report.d2h_bytes == 48 * 40 * 3  # one frame each way per frame
    assert len(made) == len(set(made)) == 2  # detector and generator, each on its stage's stream
    assert _overlap([(0, 10)], [(5, 20)]) == 0.5 and _overlap([(0, 10)], [(10, 20)]) == 0.0


def test_device_stages_run_the_frame_path_and_serve_tools_on_the_host(tmp_path: Path) -> None:
    """The detect and swap stages of the GPU path, as the pipeline drives them: a frame slot
    is uploaded once by the detect stage, swapped on the device by the swap stage (one
    generator call), downloaded once; an image that is not a slot (swap-image, tools) runs
    the host adapters. Identities arrive through the stage's next-identity slot."""
    from test_detectors import face_at, scrfd_model, scrfd_tensors

    from streamswap.faces.detectors import make_detector
    from streamswap.faces.device import DeviceDetector, DeviceDetectStage, DeviceSwapStage
    from streamswap.faces.settings import DetectorSettings, TrackingSettings
    from streamswap.faces.stages import PreparedIdentity
    from streamswap.io.base import FrameMeta
    from streamswap.pipeline.frame_queue import FrameItem

    size = 32
    box = (6, 4, 26, 26)  # input pixels of a 32² letterbox: frame 48×40 → scale 32/48
    det_model = scrfd_model(tmp_path / "scrfd.onnx", size, scrfd_tensors(size, [face_at(8, (2, 2), 0.9, box)], True))
    request = BuildRequest(
        "scrfd",
        str(det_model),
        str(tmp_path / "d.plan"),
        "fp32",
        [p.to_json() for p in profile_from_inputs(onnx_inputs(det_model), 1)],
        str(tmp_path),
    )
    det_engine = tmp_path / "scrfd.engine"
    det_engine.write_bytes(build_serialized(make_fake_trt(VERSION), request, lambda *a: None))
    _, sw_engine = tiny_engine(tmp_path, max_batch=2)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    trt = make_fake_trt(VERSION)
    det_session = TrtSession(det_engine, trt, gpu.cuda, detect_stream)
    sw_session = TrtSession(sw_engine, trt, gpu.cuda, swap_stream)
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
    rt.sync.clear()
    detect.process(slot, item)
    assert len(item.faces) == 1
    swap.process(slot, item)
    copies = [s for n, s in rt.sync if n == "cudaMemcpyAsync"]
    assert frames.bytes_up == frames.bytes_down == slot.nbytes  # the frame crossed once each way
    assert copies[0] == detect_stream.handle and copies[-1] == swap_stream.handle
    assert ("cudaStreamWaitEvent", swap_stream.handle) in [(n, a[0]) for n, a in rt.sync if n == "cudaStreamWaitEvent"]
    assert not np.array_equal(slot, original)  # swapped on the device, brought back
    assert swap.source_names == ("me.jpg",)

    still = _frame(5)  # not a frame slot: the host adapters, no copy
    before = frames.bytes_up
    faces = detect.detect(still, 0)
    swap.swap(still, faces)
    assert frames.bytes_up == before and len(faces) == 1
    assert not np.array_equal(still, _frame(5))


def _device_wiring_parts(tmp_path: Path):
    """(config, pool, detector, swapper, gpu) for `_gpu_frame_path`: a tiny swapper engine and
    a detector engine on a GPU context over the recording fakes, a TensorRT config."""
    import types

    from test_detectors import scrfd_model, scrfd_tensors

    from streamswap.config import Config
    from streamswap.inference.ort import SessionPool
    from streamswap.inference.settings import InferenceSettings

    _, engine = tiny_engine(tmp_path, max_batch=8)
    gpu = GpuContext(Cuda(FakeCudart()))
    session = TrtSession(engine, make_fake_trt(VERSION), gpu.cuda)
    swapper = TinySwapper(session, name="tiny")
    det_model = scrfd_model(tmp_path / "scrfd.onnx", 32, scrfd_tensors(32, [], True))
    request = BuildRequest(
        "scrfd",
        str(det_model),
        str(tmp_path / "d.plan"),
        "fp32",
        [p.to_json() for p in profile_from_inputs(onnx_inputs(det_model), 1)],
        str(tmp_path),
    )
    det_engine = tmp_path / "scrfd.engine"
    det_engine.write_bytes(build_serialized(make_fake_trt(VERSION), request, lambda *a: None))
    detector = types.SimpleNamespace(
        session=TrtSession(det_engine, make_fake_trt(VERSION), gpu.cuda),
        decode_outputs=lambda outputs, scale, shape: [],  # the host adapter's decoder (unused here)
        detect=lambda bgr: [],
        input_name="input.1",
        label="scrfd",
        input=types.SimpleNamespace(size=32),
    )
    config = Config()
    config.inference = InferenceSettings(backend="tensorrt")
    pool = SessionPool(config.inference, gpu=gpu)
    return config, pool, detector, swapper, gpu


def test_wiring_takes_the_gpu_frame_path_only_where_nothing_needs_the_host_frame(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from streamswap.inference.ort import SessionPool
    from streamswap.wiring import _gpu_frame_path

    config, pool, detector, swapper, gpu = _device_wiring_parts(tmp_path)
    session = swapper.session
    caplog.set_level(logging.INFO)
    assert _gpu_frame_path(config, pool, detector, swapper, enhancer=object()) is None
    assert [r.kv["reason"] for r in caplog.records] == ["faces.enhancer: object has no device twin (GFPGAN has)"]
    assert _gpu_frame_path(config, SessionPool(config.inference), detector, swapper, None) is None  # no GPU
    path = _gpu_frame_path(config, pool, detector, swapper, None)
    assert path is not None and path.detect_stream is gpu.stream("detect") and path.swap_stream is gpu.stream("swap")
    # The mouth mask and the colour transfer run on the device; occluder/parser masks do not.
    from streamswap.faces.settings import PasteSettings

    config.faces.paste = PasteSettings(color_correction=True, mouth_mask=True)
    with_options = TinySwapper(session, name="tiny", paste=config.faces.paste)
    assert _gpu_frame_path(config, pool, detector, with_options, None) is not None
    caplog.clear()
    with_options.masks = object()  # type: ignore[assignment]
    assert _gpu_frame_path(config, pool, detector, with_options, None) is None
    assert [r.kv["reason"] for r in caplog.records] == [
        "faces.mask (occluder, parser, regions) works on the host frame"
    ]


def test_gpu_bench_scene_detector_finds_exactly_the_faces_drawn(tmp_path: Path) -> None:
    """`bench gpu`'s generated scene: its detector (constant outputs) finds the faces drawn in
    the frame, at their places, through the real wiring and host adapters."""
    from streamswap.bench.gpu import default_scene
    from streamswap.wiring import build_face_stages

    scene = default_scene(tmp_path, 1920, 1080, 3, paste=("mouth_mask", "color_correction"))
    assert scene.config.faces.paste.mouth_mask and scene.config.faces.paste.color_correction  # bench gpu's flags
    stages = build_face_stages(scene.config)
    try:
        found = sorted(stages.detect_still(scene.frame), key=lambda f: f.box[0])
    finally:
        stages.close()
    assert len(found) == 3
    for i, face in enumerate(found):
        cx = (face.box[0] + face.box[2]) / 2
        assert abs(cx - 1920 * (i + 1) / 4) < 4 and abs((face.box[1] + face.box[3]) / 2 - 540) < 4
        skin = scene.frame[int(face.kps[2][1]), int(face.kps[2][0])]  # the nose point is on the face
        assert abs(int(skin[2]) - 225) < 40 and abs(int(skin[0]) - 140) < 40, skin
