"""`streamswap swap-image` end to end in a subprocess, with the bundled offline models."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from swap_fixtures import sample_photo_paths


@pytest.fixture(scope="module")
def photos() -> tuple[Path, Path]:
    astronaut, group, _ = sample_photo_paths()
    return astronaut, group


def swap_image(models_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "STREAMSWAP_CONFIG": ""}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streamswap",
            "--models-dir",
            str(models_dir),
            "--log-level",
            "WARNING",
            "swap-image",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def _error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {result.stderr!r}"
    assert lines[0].startswith("streamswap swap-image: error: ")
    return lines[0]


def test_swaps_the_faces_of_a_photo(bundled_models_dir: Path, photos, tmp_path: Path) -> None:
    source, target = photos
    out = tmp_path / "out.png"
    result = swap_image(bundled_models_dir, "--source", str(source), "--target", str(target), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "6 faces swapped" in result.stdout
    before = cv2.imread(str(target))
    after = cv2.imread(str(out))
    assert after is not None and after.shape == before.shape
    changed = (np.abs(after.astype(int) - before.astype(int)).sum(axis=-1) > 30).mean()
    assert 0.01 < changed < 0.25  # the faces, not the whole picture


def test_missing_target(bundled_models_dir: Path, photos, tmp_path: Path) -> None:
    result = swap_image(
        bundled_models_dir,
        "--source",
        str(photos[0]),
        "--target",
        str(tmp_path / "gone.jpg"),
        "-o",
        str(tmp_path / "o.png"),
    )
    assert result.returncode != 0
    assert "gone.jpg" in _error_line(result) and "not found" in result.stderr


def test_missing_source(bundled_models_dir: Path, photos, tmp_path: Path) -> None:
    result = swap_image(
        bundled_models_dir,
        "--source",
        str(tmp_path / "who.png"),
        "--target",
        str(photos[1]),
        "-o",
        str(tmp_path / "o.png"),
    )
    assert result.returncode != 0
    assert "who.png" in _error_line(result)


def test_text_file_named_jpg(bundled_models_dir: Path, photos, tmp_path: Path) -> None:
    fake = tmp_path / "holiday.jpg"
    fake.write_text("not really a photo\n")
    result = swap_image(
        bundled_models_dir, "--source", str(photos[0]), "--target", str(fake), "-o", str(tmp_path / "o.png")
    )
    assert result.returncode != 0
    line = _error_line(result)
    assert "holiday.jpg" in line and "not an image" in line
    assert not (tmp_path / "o.png").exists()


def test_target_without_a_face(bundled_models_dir: Path, photos, tmp_path: Path) -> None:
    wall = tmp_path / "wall.png"
    cv2.imwrite(str(wall), np.full((240, 320, 3), 128, np.uint8))
    result = swap_image(
        bundled_models_dir, "--source", str(photos[0]), "--target", str(wall), "-o", str(tmp_path / "o.png")
    )
    assert result.returncode != 0
    line = _error_line(result)
    assert "wall.png" in line and "no face" in line


def test_folder_continues_past_bad_images(bundled_models_dir: Path, photos, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "group.jpg").write_bytes(photos[1].read_bytes())
    (folder / "broken.jpg").write_text("text")
    cv2.imwrite(str(folder / "wall.png"), np.full((240, 320, 3), 128, np.uint8))
    outdir = tmp_path / "out"
    result = swap_image(bundled_models_dir, "--source", str(photos[0]), "--target", str(folder), "-o", str(outdir))
    assert result.returncode == 1
    assert (outdir / "group.png").is_file()
    assert not (outdir / "broken.png").exists() and not (outdir / "wall.png").exists()
    assert "broken.jpg" in result.stderr and "wall.png" in result.stderr
    assert "1 of 3 images swapped, 2 failed" in result.stderr


def _real_png(path: Path, width: int, height: int) -> Path:
    """A complete, valid 8-bit grayscale PNG of zeros, written row by row so the test never
    holds the pixels itself (10000×10000 compresses to about 100 KB)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + the row
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )
    return path


REFUSED = {  # issue 3's bad inputs that cannot be used: name -> (make file, words of the message)
    "empty.jpg": (lambda p: p.write_bytes(b""), "empty file"),
    "notes.jpg": (lambda p: p.write_text("shopping list\n"), "not an image"),
    "dot.png": (lambda p: cv2.imwrite(str(p), np.zeros((1, 1, 3), np.uint8)), "1×1 pixels, too small"),
    "huge.png": (lambda p: _real_png(p, 10000, 10000), "10000×10000 (100 megapixels), over the size limit"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
@pytest.mark.parametrize("role", ["target", "source"])
def test_bad_input_is_one_line(bundled_models_dir: Path, photos, tmp_path: Path, name: str, role: str) -> None:
    make, words = REFUSED[name]
    bad = tmp_path / name
    make(bad)
    source, target = (str(bad), str(photos[1])) if role == "source" else (str(photos[0]), str(bad))
    result = swap_image(bundled_models_dir, "--source", source, "--target", target, "-o", str(tmp_path / "o.png"))
    assert result.returncode != 0
    line = _error_line(result)
    assert name in line and words in line, line
    assert not (tmp_path / "o.png").exists()


def _variants(photo: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "deep16.png": photo.astype(np.uint16) * 257,
        "gray.png": cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY),
        "rgba.png": np.dstack([photo, np.full(photo.shape[:2], 180, np.uint8)]),
    }


@pytest.mark.parametrize("name", ["deep16.png", "gray.png", "rgba.png"])
@pytest.mark.parametrize("role", ["target", "source"])
def test_unusual_but_valid_images_are_handled(
    bundled_models_dir: Path, photos, tmp_path: Path, name: str, role: str
) -> None:
    """16-bit, grayscale and RGBA photos work as the target and as the source: the faces are
    swapped and an 8-bit 3-channel picture of the target's size is written."""
    unusual = tmp_path / name
    original = photos[0] if role == "source" else photos[1]  # the astronaut, or the group photo
    cv2.imwrite(str(unusual), _variants(cv2.imread(str(original)))[name])
    assert cv2.imread(str(unusual), cv2.IMREAD_UNCHANGED).dtype == (np.uint16 if name == "deep16.png" else np.uint8)
    source, target = (unusual, photos[1]) if role == "source" else (photos[0], unusual)
    out = tmp_path / "out.png"
    result = swap_image(bundled_models_dir, "--source", str(source), "--target", str(target), "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out} (6 faces swapped)"
    written = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    before = cv2.imread(str(target))
    assert written.dtype == np.uint8 and written.shape == before.shape
    assert (np.abs(written.astype(int) - before.astype(int)).sum(axis=-1) > 30).mean() > 0.005


def test_unknown_output_extension_is_reported_before_any_work(photos, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()  # empty: loading the models would convert the bundled ones into it
    result = swap_image(models, "--source", str(photos[0]), "--target", str(photos[1]), "-o", str(tmp_path / "out.xyz"))
    assert result.returncode != 0
    line = _error_line(result)
    assert "out.xyz" in line and "unknown image extension" in line
    assert not any(models.iterdir())  # refused before any model was touched
