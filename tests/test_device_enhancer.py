"""The face enhancer on the GPU frame path (recording CUDA/TensorRT fakes, kernels under
Numba's simulator): its crops, network, blend and paste-back on the device after the swap,
on the swap stream, with the host enhancer's pixels; the swap stage still downloads the
frame once; what keeps the enhancer on the host is said in the log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_device_path import VERSION, TinySwapper, _faces, _frame, tiny_engine
from test_trt_fake import FakeCudart, make_fake_trt

from streamswap.bench import synthetic
from streamswap.faces.device import DeviceEnhancer, DeviceFrames, DeviceSwapper, DeviceSwapStage
from streamswap.faces.enhancer import GfpganEnhancer
from streamswap.inference.cuda import Cuda, GpuContext
from streamswap.inference.engine_cache import profile_from_inputs
from streamswap.inference.tensorrt import TrtSession, onnx_inputs
from streamswap.inference.trt_build import BuildRequest, build_serialized

SIZE = 16  # a tiny enhancer crop: the simulator runs every kernel thread in Python


class TinyEnhancer(GfpganEnhancer):
    """The GFPGAN contract at a 16-px crop (test only)."""

    size = SIZE


def enhancer_engine(tmp_path: Path, max_batch: int) -> tuple[Path, Path]:
    """A 16-px enhancer whose output is its input negated (generated), and its fake engine."""
    model = synthetic.make_enhancer_model(tmp_path / "enh.onnx", size=SIZE, batch_dynamic=True)
    profile = profile_from_inputs(onnx_inputs(model), max_batch)
    request = BuildRequest(
        "enh", str(model), str(tmp_path / "enh.plan"), "fp32", [p.to_json() for p in profile], str(tmp_path)
    )
    engine = tmp_path / "enh.engine"
    engine.write_bytes(build_serialized(make_fake_trt(VERSION), request, lambda *a: None))
    return model, engine


@pytest.mark.parametrize("engine_batch,paste_options", [(1, False), (5, True)])
def test_device_enhancer_matches_the_host_enhancer(tmp_path: Path, engine_batch: int, paste_options: bool) -> None:
    """Also with faces.paste.mouth_mask and color_correction, which the enhancer's paste
    applies as the swap's does (the enhanced crops take the swapped crops' colours)."""
    from swap_fixtures import cpu_session

    from streamswap.faces.settings import PasteSettings

    model, engine = enhancer_engine(tmp_path, engine_batch)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    trt = make_fake_trt(VERSION)
    session = TrtSession(engine, trt, gpu.cuda, swap_stream)
    paste = PasteSettings(mouth_mask=paste_options, color_correction=paste_options)
    device = DeviceEnhancer(TinyEnhancer(session, name="tiny-gfpgan", paste=paste), session, gpu.cuda, max_faces=5)
    host = TinyEnhancer(cpu_session(model), name="tiny-gfpgan", paste=paste)
    plain = TinyEnhancer(cpu_session(model), name="tiny-gfpgan")
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((40, 48, 3), np.uint8)
    warm = None
    for index, count in enumerate((0, 5, 1)):
        original = _frame(index + 7)
        slot[...] = original
        faces = _faces(count)
        frames.upload(slot, detect_stream)
        device.enhance(frames.frame(slot, swap_stream), faces, swap_stream)
        frames.download(slot, swap_stream)
        expected = original.copy()
        host.enhance(expected, faces)
        diff = np.abs(slot.astype(int) - expected.astype(int))
        assert diff.max() <= 2, f"{count} faces: device and host enhancers differ by {diff.max()}"
        if count:
            assert not np.array_equal(slot, original)
            without = original.copy()
            plain.enhance(without, faces)
            assert np.array_equal(without, expected) != paste_options  # the options change the paste
        if warm is None:
            warm = gpu.cuda.allocations
    assert gpu.cuda.allocations == warm  # nothing allocated after the first frame
    runs = [handle for name, handle in trt.calls if name == "execute_async_v3"]
    calls = sum(-(-count // engine_batch) for count in (5, 1))  # per frame: ceil(faces / faces per call)
    assert runs == [swap_stream.handle] * calls


def test_swap_stage_enhances_on_the_device_and_downloads_once(tmp_path: Path) -> None:
    from streamswap.faces.stages import PreparedIdentity
    from streamswap.io.base import FrameMeta
    from streamswap.pipeline.frame_queue import FrameItem

    _, swap_engine = tiny_engine(tmp_path, max_batch=5)
    _, enh_engine = enhancer_engine(tmp_path, 5)
    rt = FakeCudart()
    gpu = GpuContext(Cuda(rt))
    detect_stream, swap_stream = gpu.stream("detect"), gpu.stream("swap")
    swap_session = TrtSession(swap_engine, make_fake_trt(VERSION), gpu.cuda, swap_stream)
    enh_session = TrtSession(enh_engine, make_fake_trt(VERSION), gpu.cuda, swap_stream)
    swapper = DeviceSwapper(TinySwapper(swap_session, name="tiny"), swap_session, gpu.cuda, max_faces=5)
    enhancer = DeviceEnhancer(TinyEnhancer(enh_session, name="tiny-gfpgan"), enh_session, gpu.cuda, 5)
    frames = DeviceFrames(gpu.cuda)
    stage = DeviceSwapStage(swapper, frames, swap_stream, enhancer=enhancer)
    identity = PreparedIdentity(np.linspace(-1, 1, 512, dtype=np.float32), ("me.jpg",))
    stage.offer(identity)
    slot = frames.alloc((40, 48, 3), np.uint8)
    original = _frame(3)
    slot[...] = original
    frames.upload(slot, detect_stream)  # what the detect stage did
    item = FrameItem(0, FrameMeta(0, 0, 0.0))
    item.faces = _faces(2)
    frames.bytes_down = 0
    stage.process(slot, item)
    assert frames.bytes_down == slot.nbytes  # swap and enhance, then one download
    assert not np.array_equal(slot, original)
    plain = DeviceSwapStage(swapper, DeviceFrames(gpu.cuda), swap_stream)  # the same swap, no enhancer
    plain.offer(identity)
    other = plain.frames.alloc((40, 48, 3), np.uint8)
    other[...] = original
    plain.frames.upload(other, detect_stream)
    plain.process(other, item)
    assert not np.array_equal(slot, other)  # the enhancer changed the swapped faces
    # a plain image (tools: swap-image) takes the host enhancer
    image = original.copy()
    stage.enhancer.enhance(image, _faces(1))  # type: ignore[union-attr]
    assert not np.array_equal(image, original)


def test_wiring_takes_the_device_enhancer_with_the_paste_options(tmp_path: Path) -> None:
    from test_device_path import _device_wiring_parts

    config, pool, detector, swapper, gpu = _device_wiring_parts(tmp_path)
    _, enh_engine = enhancer_engine(tmp_path, 5)
    session = TrtSession(enh_engine, make_fake_trt(VERSION), gpu.cuda, gpu.stream("swap"))
    enhancer = TinyEnhancer(session, name="tiny-gfpgan")
    from streamswap.wiring import _gpu_frame_path

    path = _gpu_frame_path(config, pool, detector, swapper, enhancer)
    assert path is not None and isinstance(path.enhancer, DeviceEnhancer)
    config.faces.paste.mouth_mask = config.faces.paste.color_correction = True
    path = _gpu_frame_path(config, pool, detector, swapper, enhancer)
    assert path is not None and isinstance(path.enhancer, DeviceEnhancer)
