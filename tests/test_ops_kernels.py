"""Every CUDA kernel of streamswap.ops against its CPU twin.

Without a GPU (CI) the kernels run under Numba's CUDA simulator (conftest sets
NUMBA_ENABLE_CUDASIM=1), so every kernel executes on every change; on a GPU machine the
same tests run the compiled kernels. Frames are small: the simulator runs each thread in
Python. Tolerances: uint8 results within 1 grey level of OpenCV (a different rounding of
the same bilinear weights), floats within 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamswap.ops import cpu
from streamswap.ops import cuda as cuda_ops  # noqa: E402  (numba: a dependency of the gpu path and of the tests)


def _frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A frame with smooth areas and hard edges (edges are where rounding differs most)."""
    rng = np.random.default_rng(seed)
    import cv2

    frame = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 1.2)
    frame[h // 4 : h // 2, w // 3 : w // 2] = (255, 30, 200)
    return frame


def _close_u8(got: np.ndarray, want: np.ndarray) -> None:
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 1, f"max diff {diff.max()} at {np.unravel_index(diff.argmax(), diff.shape)}"
    assert diff.mean() < 0.1  # rounding differences only, not a shifted image


def _similarity(scale: float, angle_deg: float, tx: float, ty: float) -> np.ndarray:
    a = np.radians(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


@pytest.mark.parametrize(
    "shape,size,rgb", [((30, 40), 32, True), ((40, 24), 32, False), ((32, 32), 32, True), ((12, 20), 32, True)]
)
def test_letterbox_kernel_matches_cpu(shape: tuple[int, int], size: int, rgb: bool) -> None:
    frame = _frame(*shape)
    want = np.empty((1, 3, size, size), np.float32)
    got = np.full_like(want, 7.0)
    s_want = cpu.letterbox(frame, want, 127.5, 1 / 128, rgb)
    s_got = cuda_ops.letterbox(frame, got, 127.5, 1 / 128, rgb)
    assert s_got == s_want
    assert np.abs(got - want).max() <= 1 / 128 + 1e-6  # one grey level after normalising
    nh, nw = cpu.letterbox_geometry(*shape, size)
    assert np.all(got[:, :, nh:, :] == np.float32(-127.5 / 128))  # padding: normalised black


def _crop_case(frame: np.ndarray, matrix: np.ndarray, size: int):
    from streamswap.faces.align import invert_affine, source_roi

    inverse = invert_affine(matrix)
    return inverse, source_roi(inverse, size, size, frame.shape)


@pytest.mark.parametrize(
    "matrix",
    [
        _similarity(1.3, 12.0, -2.0, 5.0),  # inside the frame
        _similarity(0.8, -30.0, 10.0, 18.0),  # over the top-left border
        _similarity(0.9, 5.0, -30.0, -20.0),  # over the bottom-right border
        _similarity(0.3, 0.0, 4.0, 4.0),  # a crop larger than the frame
        _similarity(1.0, 0.0, 500.0, 500.0),  # entirely outside: all zero
    ],
)
def test_warp_crops_kernel_matches_cpu(matrix: np.ndarray) -> None:
    frame = _frame(36, 44, seed=1)
    size = 24
    inverse, box = _crop_case(frame, matrix, size)
    inverse2, box2 = _crop_case(frame, _similarity(1.1, -8.0, -6.0, -3.0), size)
    want = np.empty((2, size, size, 3), np.uint8)
    got = np.full_like(want, 99)
    cpu.warp_crops(frame, [inverse, inverse2], [box, box2], want)
    params = cuda_ops.CropParams(max_faces=5)
    cuda_ops.warp_crops(frame, [inverse, inverse2], [box, box2], got, params=params)
    _close_u8(got, want)


def test_crops_to_tensor_and_back_match_cpu() -> None:
    rng = np.random.default_rng(3)
    crops = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    std = np.array([0.229, 0.224, 0.225], np.float32)
    scale = 1.0 / (255.0 * std)
    bias = -np.array([0.485, 0.456, 0.406], np.float32) / std
    for rgb in (True, False):
        want = np.empty((2, 3, 8, 8), np.float32)
        got = np.empty_like(want)
        cpu.crops_to_tensor(crops, want, scale, bias, rgb)
        cuda_ops.crops_to_tensor(crops, got, scale, bias, rgb)
        np.testing.assert_allclose(got, want, atol=1e-5)
        tensor = rng.uniform(-1.2, 1.2, (2, 3, 8, 8)).astype(np.float32)
        back_want = np.empty((2, 8, 8, 3), np.uint8)
        back_got = np.empty_like(back_want)
        cpu.tensor_to_crops(tensor, back_want, 0.5, 0.5, rgb)
        cuda_ops.tensor_to_crops(tensor, back_got, 0.5, 0.5, rgb)
        _close_u8(back_got, back_want)


def test_tensor_blend_crops_kernel_matches_cpu_in_place() -> None:
    """An enhancer's output mixed into its own input crops, written over them."""
    rng = np.random.default_rng(4)
    crops = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    tensor = rng.uniform(-1.3, 1.3, (2, 3, 8, 8)).astype(np.float32)  # past [-1, 1]: clipped first
    for rgb in (True, False):
        want, got = crops.copy(), crops.copy()
        cpu.tensor_blend_crops(tensor, want, want, 0.5, 0.5, 0.8, rgb)
        cuda_ops.tensor_blend_crops(tensor, got, got, 0.5, 0.5, 0.8, rgb)
        _close_u8(got, want)
        assert not np.array_equal(want, crops)
    full = np.empty_like(crops)  # weight 1: exactly the output, rounded
    cpu.tensor_blend_crops(tensor, crops, full, 0.5, 0.5, 1.0, True)
    expected = np.clip((np.clip(tensor, -1, 1) + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(full, expected.transpose(0, 2, 3, 1)[..., ::-1])


@pytest.mark.parametrize(
    "matrix",
    [
        _similarity(1.4, 10.0, -8.0, -6.0),  # face inside the frame
        _similarity(1.2, -20.0, 12.0, 4.0),  # face over the left/top border
        _similarity(2.5, 0.0, -70.0, -50.0),  # face over the bottom-right border
        _similarity(0.25, 0.0, 2.0, 2.0),  # crop footprint larger than the frame
    ],
)
def test_paste_kernel_matches_cpu(matrix: np.ndarray) -> None:
    from streamswap.faces.align import invert_affine, source_roi
    from streamswap.faces.paste import box_mask

    size = 20
    frame = _frame(32, 40, seed=2)
    crop = _frame(size, size, seed=5)
    mask = box_mask(size, 0.3, 0.05)
    box = source_roi(invert_affine(matrix), size, size, frame.shape, margin=1)
    want = frame.copy()
    got = frame.copy()
    cpu.paste(want, crop, mask, matrix, box)
    cuda_ops.paste(got, crop, mask, matrix, box)
    _close_u8(got, want)
    x0, y0, x1, y1 = box
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(got[outside], frame[outside])  # only the box is written


def test_kernels_run_on_the_given_stream() -> None:
    """A raw cudaStream_t handle (what streamswap.inference.cuda.Stream holds) is accepted."""
    from numba import cuda

    stream = cuda.stream()
    assert cuda_ops.as_stream(stream) is stream
    assert cuda_ops.as_stream(None) is not None
    frame = _frame(16, 16)
    out = np.empty((1, 3, 16, 16), np.float32)
    want = np.empty_like(out)
    cuda_ops.letterbox(frame, out, 0.0, 1.0, False, stream=stream)
    stream.synchronize()
    cpu.letterbox(frame, want, 0.0, 1.0, False)
    assert np.abs(out - want).max() <= 1.0


# --- LAB colour transfer and the mouth mask ----------------------------------------------
# Tolerances (measured, see ops/cuda.py): BGR → LAB is OpenCV's fixed-point scheme,
# bit-exact; LAB → BGR is float32 math equal to cv2 for 97 % of LAB values (at most 3
# off), so a transferred crop is within 2 grey levels of the CPU twin (mean < 0.2).
# The filled mouth polygon differs from cv2.fillPoly on ~1 % of its pixels, all on the
# outline; the Gaussian blur matches cv2 within 1e-5.


def _photo_crops(count: int, size: int) -> np.ndarray:
    """`count` real-photo crops (the astronaut, shifted and scaled per crop)."""
    import cv2
    from conftest import require
    from swap_fixtures import astronaut

    photo = astronaut()
    require(photo is not None, "scikit-image's astronaut.png")
    out = np.empty((count, size, size, 3), np.uint8)
    for i in range(count):
        x, y, side = 140 + 9 * i, 80 + 5 * i, 120 - 10 * i
        out[i] = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    return out


def test_bgr_to_lab_tables_are_opencvs_8_bit_conversion() -> None:
    """The device's integer BGR → LAB (its tables and arithmetic, replayed with numpy) equals
    cv2.cvtColor for every one of the 2^24 colours (sampled with a stride here)."""
    import cv2

    levels = np.arange(0, 256, 3)
    b, g, r = np.meshgrid(levels, levels, levels, indexing="ij")
    image = np.stack([b, g, r], -1).reshape(-1, 1, 3).astype(np.uint8)
    want = cv2.cvtColor(image, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.int64)
    gamma, cbrt, c = cuda_ops._GAMMA_TAB.astype(np.int64), cuda_ops._CBRT_TAB.astype(np.int64), cuda_ops._LAB_COEFFS
    lin = gamma[image.reshape(-1, 3)[:, ::-1]]  # R, G, B
    xyz = (lin @ c.T + (1 << 11)) >> 12
    f = cbrt[xyz]
    half = 1 << 14
    lum = (cuda_ops._L_SCALE * f[:, 1] + cuda_ops._L_SHIFT + half) >> 15
    a = (500 * (f[:, 0] - f[:, 1]) + (128 << 15) + half) >> 15
    bb = (200 * (f[:, 1] - f[:, 2]) + (128 << 15) + half) >> 15
    got = np.clip(np.stack([lum, a, bb], -1), 0, 255)
    assert np.array_equal(got, want)


def test_lab_transfer_kernel_matches_cpu() -> None:
    from streamswap.faces.paste import box_mask

    size = 20
    crops = _photo_crops(3, size)
    crops[1] = crops[1] // 2 + 100  # a washed-out generated face: a strong transfer
    references = _photo_crops(3, size)[::-1].copy()
    references[0, :, size // 2 :] = 0  # a face at the frame border: half of its target crop is black
    mask = box_mask(size, 0.3, 0.05)
    weights = np.stack([mask, mask[::-1], np.zeros_like(mask)])
    weights[2, 3:6, 3:8] = 1.0  # 15 pixels > 0.5: too few to measure, the crop stays as it is
    want = np.empty_like(crops)
    cpu.transfer_color_lab(crops, references, weights, want)
    got = crops.copy()
    cuda_ops.transfer_color_lab(got, references, weights, got, stats=cuda_ops.LabStats(5))  # in place
    diff = np.abs(got.astype(np.int16) - want.astype(np.int16))
    assert diff.max() <= 2 and diff.mean() < 0.2, (diff.max(), diff.mean())
    assert not np.array_equal(want[1], crops[1])  # the transfer did something
    assert np.array_equal(got[2], crops[2]) and np.array_equal(want[2], crops[2])
    shared = np.full_like(crops[:1], 9)  # one (S, S) mask for every face
    cpu.transfer_color_lab(crops[:1], references[:1], mask, want[:1])
    cuda_ops.transfer_color_lab(crops[:1], references[:1], mask, shared)
    assert np.abs(shared.astype(np.int16) - want[:1]).max() <= 2


def _outline_only(got: np.ndarray, want: np.ndarray) -> None:
    """Filled masks differ only on cv2's outline (a pixel next to both a filled and an empty one)."""
    import cv2

    wrong = got != want
    filled = want.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    edge = (cv2.dilate(filled, kernel) != cv2.erode(filled, kernel)).astype(bool)
    assert not (wrong & ~edge).any()
    assert wrong.sum() <= max(3, 0.05 * want.sum()), (wrong.sum(), want.sum())


def _mouths(size: int) -> list[np.ndarray | None]:
    import cv2

    lips = np.array([[6, 10], [9, 8.7], [13, 7.8], [16.5, 8.2], [19.5, 10], [16.5, 12.6], [13, 11.5], [9.3, 12.8]])
    return [
        cv2.ellipse2Poly((12, 15), (7, 3), 12, 0, 360, 15).astype(np.float32),  # the key-point ellipse
        lips.astype(np.float32),  # a concave inner-lip contour (FaceMesh-like)
        None,  # no mouth found: nothing cut
        cv2.ellipse2Poly((size - 3, 4), (6, 4), -20, 0, 360, 15).astype(np.float32),  # partly outside the crop
    ]


def test_fill_polygons_kernel_matches_fillpoly() -> None:
    size = 24
    huge = np.array([[-1e7, -1e7], [1e7, -1e7], [1e7, 1e7], [-1e7, 1e7]], np.float32)  # far beyond the crop
    polygons = [*_mouths(size), huge]
    want = np.empty((5, size, size), np.float32)
    got = np.full_like(want, 0.5)
    cpu.fill_polygons(polygons, want)
    cuda_ops.fill_polygons(polygons, got, params=cuda_ops.MouthParams(5, 1.0))
    assert set(np.unique(got)) <= {0.0, 1.0}
    for i in range(5):
        _outline_only(got[i], want[i])
    assert not got[2].any() and got[3].any() and got[4].all()


@pytest.mark.parametrize("sigma", [1, 2])
def test_blur_masks_kernel_matches_cv2(sigma: int) -> None:
    masks = np.zeros((2, 16, 20), np.float32)
    masks[0, 5:12, 3:14] = 1.0
    masks[1, 0:6, 15:] = 1.0  # at the corner: the reflect-101 border
    want = np.empty_like(masks)
    got = np.empty_like(masks)
    cpu.blur_masks(masks, want, sigma)
    cuda_ops.blur_masks(masks, got, sigma, np.empty_like(masks))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_mouth_masks_kernel_matches_cpu() -> None:
    """The paste masks without the mouth: the outline differences of the fill, blurred, stay
    below 0.2 of weight and average < 0.01."""
    from streamswap.faces.paste import box_mask

    size = 24
    base = box_mask(size, 0.3, 0.05)
    polygons = [_mouths(size)[i] for i in (0, 2, 3)]
    want = np.empty((3, size, size), np.float32)
    got = np.empty_like(want)
    sigma = cpu.blur_sigma(size)
    cpu.mouth_masks(base, polygons, want, sigma, np.empty_like(want))
    cuda_ops.mouth_masks(base, polygons, got, sigma, np.empty_like(want), params=cuda_ops.MouthParams(5, sigma))
    diff = np.abs(got - want)
    assert diff.max() < 0.2 and diff.mean() < 0.01, (diff.max(), diff.mean())
    np.testing.assert_allclose(got[1], base, atol=1e-6)  # no polygon: the box mask itself
    assert (got[0] < base - 0.5).any()  # the mouth is cut out


def test_warm_up_launches_every_kernel_once_on_arrays_like_the_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every kernel of ops.cuda is compiled (launched once) by warm_up, on the given stream,
    over our own device buffers; what it allocated is freed."""
    from test_trt_fake import FakeCudart

    from streamswap.inference.cuda import Cuda

    kernels = {name for name in dir(cuda_ops) if name.startswith("_") and name.endswith("_kernel")}
    launched: set[str] = set()
    for name in kernels:
        kernel = getattr(cuda_ops, name)

        class Recording:
            def __init__(self, name: str, kernel: object) -> None:
                self.name, self.kernel = name, kernel

            def __getitem__(self, config: object) -> object:
                launched.add(self.name)
                return self.kernel[config]  # type: ignore[index]

        monkeypatch.setattr(cuda_ops, name, Recording(name, kernel))
    rt = FakeCudart()
    cuda = Cuda(rt)
    before = rt.freed
    cuda_ops.warm_up(cuda, None)
    assert launched == kernels, sorted(kernels - launched)
    assert rt.freed - before == cuda.allocations > 0  # every buffer it made is freed
