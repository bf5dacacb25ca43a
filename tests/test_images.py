"""Still-image input: every bad file is a one-line InputError naming it; odd but valid
formats come out as BGR uint8 H×W×3; huge images are refused from their header."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from streamswap.errors import InputError, OutputError
from streamswap.io.images import decode_image, read_header, read_image, write_image


def _png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    """A PNG whose header claims width×height, with one tiny (compressed) data chunk:
    what a decompression bomb looks like from the outside."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _gradient(h: int = 64, w: int = 80) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 3 % 256, y * 4 % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jpg"
    with pytest.raises(InputError, match="nope.jpg: image file not found"):
        read_image(path)


def test_folder_is_not_an_image(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=r"empty.png: empty file \(0 bytes\)"):
        read_image(path)


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(InputError) as info:
        read_image(path)
    message = str(info.value)
    assert "notes.jpg" in message and "not an image" in message and "text" in message
    assert "\n" not in message


def test_truncated_jpeg(tmp_path: Path) -> None:
    ok, data = cv2.imencode(".jpg", _gradient())
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.tobytes()[:40])
    with pytest.raises(InputError, match="cut.jpg"):
        read_image(path)


def test_one_by_one_is_too_small_for_a_face(tmp_path: Path) -> None:
    path = tmp_path / "dot.png"
    cv2.imwrite(str(path), np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(InputError, match=r"dot.png: image is 1×1 pixels, too small to contain a face"):
        read_image(path)


def test_sixteen_bit_png_scaled_to_eight_bits(tmp_path: Path) -> None:
    img16 = _gradient().astype(np.uint16) * 257
    img16[0, 0] = (65535, 0, 40000)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), img16)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # really 16-bit on disk
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (64, 80, 3)
    np.testing.assert_array_equal(out, (img16 >> 8).astype(np.uint8))


def test_grayscale_becomes_three_channels(tmp_path: Path) -> None:
    gray = _gradient()[..., 0]
    path = tmp_path / "gray.png"
    cv2.imwrite(str(path), gray)
    out = read_image(path)
    assert out.shape == (64, 80, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)


def test_rgba_alpha_dropped(tmp_path: Path) -> None:
    bgr = _gradient()
    alpha = np.zeros(bgr.shape[:2], np.uint8)
    alpha[:, :40] = 255
    path = tmp_path / "rgba.png"
    cv2.imwrite(str(path), np.dstack([bgr, alpha]))
    out = read_image(path)
    assert out.shape == (64, 80, 3)
    np.testing.assert_array_equal(out, bgr)


def test_jpeg_without_exif(tmp_path: Path) -> None:
    bgr = _gradient(96, 128)
    path = tmp_path / "plain.jpg"
    cv2.imwrite(str(path), bgr)
    assert b"Exif" not in path.read_bytes()
    out = read_image(path)
    assert out.shape == (96, 128, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - bgr.astype(int)).mean() < 6  # JPEG loss only


def test_huge_png_refused_from_header_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    path.write_bytes(_png_header_only(10000, 10000))
    assert path.stat().st_size < 2000
    tracemalloc.start()
    try:
        with pytest.raises(InputError) as info:
            read_image(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    assert "huge.png" in message and "10000×10000" in message and "size limit" in message
    assert peak < 5_000_000  # far below the 300 MB the pixels would take


def test_max_pixels_is_configurable() -> None:
    ok, data = cv2.imencode(".png", _gradient(100, 100))
    with pytest.raises(InputError, match="size limit"):
        decode_image(data.tobytes(), max_pixels=5000, name="upload")
    assert decode_image(data.tobytes(), max_pixels=10000, name="upload").shape == (100, 100, 3)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".tiff", ".gif", ".ppm"])
def test_header_sizes_match_the_decoder(ext: str) -> None:
    img = _gradient(70, 90)
    ok, data = cv2.imencode(ext, img)
    assert ok
    header = read_header(data.tobytes())
    assert (header.width, header.height) == (90, 70)


def test_huge_jpeg_header_refused() -> None:
    ok, data = cv2.imencode(".jpg", _gradient(64, 64))
    raw = bytearray(data.tobytes())
    i = raw.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    raw[i + 5 : i + 9] = struct.pack(">HH", 60000, 60000)
    with pytest.raises(InputError, match="60000×60000"):
        decode_image(bytes(raw), name="bomb.jpg")


def test_write_image_roundtrip_and_errors(tmp_path: Path) -> None:
    img = _gradient()
    with pytest.raises(OutputError, match="sub does not exist; create it first"):
        write_image(tmp_path / "sub" / "out.png", img)
    assert not (tmp_path / "sub").exists()
    (tmp_path / "sub").mkdir()
    out = write_image(tmp_path / "sub" / "out.png", img)
    np.testing.assert_array_equal(read_image(out), img)
    with pytest.raises(OutputError, match="unknown image extension"):
        write_image(tmp_path / "out.xyz", img)
