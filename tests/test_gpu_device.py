"""The GPU frame path on a real device (marked `gpu`: skipped with the reason where there is
no CUDA driver; `scripts/gpu-check.sh` runs them): device frames from real cudaMalloc'd
memory, wrapped for Numba through __cuda_array_interface__, kernels launched on our own
streams (external streams), one upload and one download, results equal to the CPU twins."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture()
def gpu():
    from streamswap.inference.cuda import GpuContext

    context = GpuContext.open(0)
    yield context
    context.close()


def _frame(h: int, w: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(7)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.5)


@pytest.mark.parametrize("mapped", [False, True])
def test_device_frames_letterbox_and_paste_match_the_cpu_twins(gpu, mapped: bool) -> None:
    from streamswap.faces.align import invert_affine, source_roi
    from streamswap.faces.device import DeviceFrames
    from streamswap.faces.paste import box_mask
    from streamswap.ops import cpu
    from streamswap.ops import cuda as ops

    frames = DeviceFrames(gpu.cuda, mapped=mapped)
    slot = frames.alloc((270, 480, 3), np.uint8)  # a height that is 2 mod 4
    original = _frame(270, 480)
    slot[...] = original
    detect, swap = gpu.stream("detect"), gpu.stream("swap")
    frame = frames.upload(slot, detect)
    size = 160
    det = gpu.cuda.device_buffer(3 * size * size * 4).array((1, 3, size, size), np.float32)
    ops.letterbox(frame.array, det, 127.5, 1 / 128, True, stream=detect)
    host_det = gpu.cuda.pinned_buffer(det.nbytes).array(det.shape, np.float32)
    gpu.cuda.copy_dtoh_async(host_det, det.ptr, detect)
    detect.synchronize()
    want = np.empty_like(host_det)
    cpu.letterbox(original, want, 127.5, 1 / 128, True)
    assert np.abs(host_det - want).max() <= 1 / 128 + 1e-6

    crop = _frame(96, 96)
    mask = box_mask(96, 0.3, 0.05)
    crop_dev = gpu.cuda.device_buffer(crop.nbytes).array(crop.shape, np.uint8)
    mask_dev = gpu.cuda.device_buffer(mask.nbytes).array(mask.shape, np.float32)
    staging = gpu.cuda.pinned_buffer(crop.nbytes + mask.nbytes)
    view = staging.array((crop.nbytes + mask.nbytes,), np.uint8)
    view[: crop.nbytes] = crop.reshape(-1)
    view[crop.nbytes :] = mask.view(np.uint8).reshape(-1)
    gpu.cuda.copy_htod_async(crop_dev.ptr, view[: crop.nbytes], swap)
    gpu.cuda.copy_htod_async(mask_dev.ptr, view[crop.nbytes :], swap)
    matrix = np.array([[0.9, 0.1, -150.0], [-0.1, 0.9, -60.0]])
    box = source_roi(invert_affine(matrix), 96, 96, original.shape, margin=1)
    on_swap = frames.frame(slot, swap)  # the swap stream waits on the upload event
    ops.paste(on_swap.array, crop_dev, mask_dev, matrix, box, stream=swap)
    frames.download(slot, swap)
    expected = original.copy()
    cpu.paste(expected, crop, mask, matrix, box)
    diff = np.abs(slot.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05
    copied = 0 if mapped else original.nbytes
    assert frames.bytes_up == frames.bytes_down == copied
    frames.close()


@pytest.mark.parametrize(
    ("paste", "landmarker"), [((), False), (("mouth_mask", "color_correction"), False), ((), True)]
)
def test_gpu_bench_frame_path_runs_on_the_device(gpu, tmp_path, paste, landmarker: bool) -> None:
    from streamswap.bench.gpu import default_scene, run_frame_path

    scene = default_scene(tmp_path, 640, 360, 2, paste, landmarker=landmarker)
    report = run_frame_path(scene, gpu.cuda, frames=20, iterations=50)
    assert report.frames == 20 and report.faces == 2
    assert report.h2d_bytes == report.d2h_bytes == 640 * 360 * 3
    assert report.detect_ms > 0 and report.swap_ms > 0


class _CpuNetworkOnDeviceBuffers:
    """A `DeviceSession` whose input buffer is real device memory and whose network runs on
    the CPU at `fetch` (ONNX Runtime): the device landmarker's kernels write the buffer on
    the real GPU; TensorRT is not needed (tests/test_trt_gpu.py covers the engines)."""

    backend = "test:cpu-network"
    device_io = True

    def __init__(self, model, cuda, max_batch: int, size: int) -> None:
        from swap_fixtures import cpu_session

        self.path = model
        self._ort = cpu_session(model)
        self.inputs, self.outputs = self._ort.inputs, self._ort.outputs
        self._cuda = cuda
        self._shape = (max_batch, 3, size, size)
        nbytes = int(np.prod(self._shape)) * 4
        self._input = cuda.device_buffer(nbytes).array(self._shape, np.float32)
        self._staging = cuda.pinned_buffer(nbytes).array(self._shape, np.float32)
        self.fed = np.zeros((0, 3, size, size), np.float32)  # what the last run saw
        self._batch = 0

    def max_shape(self, name: str) -> tuple[int, ...]:
        return self._shape

    def run(self, feeds, stream=None):
        return self._ort.run(feeds)

    def device_output(self, name, shape=None):
        raise NotImplementedError("the landmarker fetches its outputs to the host")

    def device_input(self, name: str):
        return self._input

    def enqueue(self, shapes, stream=None) -> None:
        self._batch = int(shapes["input"][0])

    def fetch(self, stream=None):
        import types

        host = self._staging[: self._batch]
        self._cuda.copy_dtoh_async(host, self._input.ptr, stream)
        stream.synchronize()
        self.fed = host.copy()
        outputs = self._ort.run({"input": self.fed})
        return types.SimpleNamespace(result=lambda: outputs, done=lambda: True)


def test_device_landmarker_crops_the_192_px_facemesh_input_on_the_device(gpu, tmp_path) -> None:
    """FaceMesh's real crop size on the real device: faces inside, rotated, over the border
    and one whose ROI is larger than the frame; the network input equals the host
    FaceMesh's within one grey level and the landmarks decode to the host's."""
    from swap_fixtures import cpu_session
    from test_device_landmarker import pooled_mesh_model

    from streamswap.faces.device import DeviceFrames, DeviceLandmarker
    from streamswap.faces.landmarks import INPUT_SIZE, FaceMesh
    from streamswap.faces.types import Face

    def face(x: float, y: float, side: float, tilt: float) -> Face:
        cx, cy, a = x + side / 2, y + side / 2, np.radians(tilt)
        dx, dy = 0.25 * side * np.cos(a), 0.25 * side * np.sin(a)
        kps = [[cx - dx, cy - dy], [cx + dx, cy + dy], [cx, cy + 0.1 * side], [cx - 9, cy + 30], [cx + 9, cy + 30]]
        return Face(box=np.array([x, y, x + side, y + side], np.float32), score=0.9, kps=np.array(kps, np.float32))

    faces = [face(200, 80, 120, 0), face(330, 60, 90, 30), face(-30, 150, 110, -15), face(-20, -40, 300, 5)]
    model = pooled_mesh_model(tmp_path / "mesh192.onnx", INPUT_SIZE)
    session = _CpuNetworkOnDeviceBuffers(model, gpu.cuda, 4, INPUT_SIZE)
    device = DeviceLandmarker(FaceMesh(session), session, gpu.cuda, max_faces=4)
    host = FaceMesh(cpu_session(model))
    frames = DeviceFrames(gpu.cuda)
    slot = frames.alloc((270, 480, 3), np.uint8)
    slot[...] = _frame(270, 480)
    stream = gpu.stream("detect")
    got = device.landmarks_many(frames.upload(slot, stream), faces, stream)
    want = host.landmarks_many(slot, faces)
    diff = np.abs(session.fed - host._buffer[: len(faces)])
    assert diff.max() <= 1 / 255 + 1e-6 and diff.mean() < 0.1 / 255
    np.testing.assert_allclose(got, want, atol=0.05)
    np.testing.assert_allclose(device.last_presence, host.last_presence, atol=1e-5)
    assert frames.bytes_up == slot.nbytes
    frames.close()


def _on_device(gpu, array: np.ndarray, stream):
    """`array` copied to a new device buffer on `stream` (through pinned staging)."""
    device = gpu.cuda.device_buffer(array.nbytes).array(array.shape, array.dtype)
    staging = gpu.cuda.pinned_buffer(array.nbytes).array(array.shape, array.dtype)
    staging[...] = array
    gpu.cuda.copy_htod_async(device.ptr, staging, stream)
    return device, staging


def test_mouth_masks_and_lab_transfer_match_the_cpu_twins_on_the_device(gpu) -> None:
    """The compiled mouth-mask and colour-transfer kernels at a real crop size (128), on the
    swap stream, with a per-face mask batch as DeviceSwapper runs them."""
    import cv2

    from streamswap.faces.paste import box_mask
    from streamswap.ops import cpu
    from streamswap.ops import cuda as ops

    size, n = 128, 3
    stream = gpu.stream("swap")
    crops = np.stack([_frame(size, size) for _ in range(n)])
    crops[1] = crops[1] // 2 + 90
    references = np.stack([cv2.flip(c, 1) for c in crops])[::-1].copy()
    base = box_mask(size, 0.3, 0.05)
    polygons = [
        np.asarray(cv2.ellipse2Poly((64, 92), (20, 8), 6, 0, 360, 15), np.float32),
        None,
        np.asarray(cv2.ellipse2Poly((120, 10), (18, 9), -12, 0, 360, 15), np.float32),  # partly outside
    ]
    sigma = cpu.blur_sigma(size)
    crops_dev, _ = _on_device(gpu, crops, stream)
    refs_dev, _ = _on_device(gpu, references, stream)
    base_dev, _ = _on_device(gpu, base, stream)
    masks_dev = gpu.cuda.device_buffer(n * size * size * 4).array((n, size, size), np.float32)
    scratch = gpu.cuda.device_buffer(n * size * size * 4).array((n, size, size), np.float32)
    params, stats = ops.MouthParams(n, sigma), ops.LabStats(n)
    ops.mouth_masks(base_dev, polygons, masks_dev, sigma, scratch, stream=stream, params=params)
    ops.transfer_color_lab(crops_dev, refs_dev, masks_dev, crops_dev, stream=stream, stats=stats)
    masks = gpu.cuda.pinned_buffer(n * size * size * 4).array((n, size, size), np.float32)
    out = gpu.cuda.pinned_buffer(crops.nbytes).array(crops.shape, np.uint8)
    gpu.cuda.copy_dtoh_async(masks, masks_dev.ptr, stream)
    gpu.cuda.copy_dtoh_async(out, crops_dev.ptr, stream)
    stream.synchronize()
    want_masks = np.empty_like(masks)
    cpu.mouth_masks(base, polygons, want_masks, sigma, np.empty_like(masks))
    assert np.abs(masks - want_masks).max() < 0.2 and np.abs(masks - want_masks).mean() < 0.01
    want = np.empty_like(crops)
    cpu.transfer_color_lab(crops, references, want_masks, want)
    diff = np.abs(out.astype(int) - want.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.2, (diff.max(), diff.mean())
