"""The anchor work of `streamswap bench anchor`, generated deterministically: a 10 s
1280×720 30 fps H.264 + AAC clip of a moving face photo, a source face, and synthetic ONNX
models with the public I/O contracts and the compute of the real ones.

- detector: SCRFD-shaped (`input.1` 1×3×640×640, 9 outputs), ≈2.19 G multiply-adds
  (insightface's "GFLOPs", as in scrfd_2.5g / det_10g), finds the face photo by the green
  frame drawn around it (`synthetic.make_marker_scrfd_model`), so the swap follows it;
- swapper: inswapper-shaped (`target` 1×3×128×128, `source` 1×512, emap last), ≈2.78 G
  multiply-adds, output 1 − target (a visible change);
- recognizer: ArcFace-shaped (N×3×112×112 → N×512), cheap (it runs once per source face).

Same inputs, same bytes: the pictures are drawn with integer arithmetic and fixed seeds,
encoded with single-threaded x264 and FFmpeg's AAC encoder with fixed settings, and the
container carries no creation time.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from streamswap.bench import synthetic
from streamswap.errors import StreamswapError

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 30, 10.0
FACE_SIDE = 320  # the face photo's side in the clip, pixels
MARKER = 8  # width of the green frame the synthetic detector finds
SAMPLE_RATE = 48000

# 3×3 conv towers: (channels, stride). Multiply-adds at the contract's input size:
DETECTOR_TOWER = [
    (16, 2),
    (32, 2),
    (64, 2),
    (64, 1),
    (64, 1),
    (64, 1),
    (64, 1),
    (128, 2),
    (128, 1),
    (128, 1),
    (128, 1),
    (256, 2),
]  # 2.17 G at 640²
SWAPPER_TOWER = [(64, 1), (128, 2), (128, 1), (128, 1), (256, 2), (256, 1), (256, 2), (256, 1)]  # 2.75 G at 128²


@dataclass(frozen=True)
class AnchorFiles:
    clip: Path
    source_face: Path  # for the synthetic models (green frame)
    real_face: Path  # for the bundled BlazeFace + FaceMesh + mesh default
    detector: Path
    swapper: Path
    recognizer: Path


def _photo(package: str, *parts: str) -> np.ndarray:
    from streamswap.bench.faces import package_image

    image = package_image(package, *parts)
    if image is None:
        raise StreamswapError(
            f"the anchor clip needs {'/'.join(parts)} from the {package} package; "
            "install the demo extra: pip install 'streamswap[demo]'"
        )
    return image


def face_photo() -> np.ndarray:
    """scikit-image's astronaut, cropped square around her face, with the green frame."""
    crop = _photo("skimage", "data", "astronaut.png")[20:200, 135:315]
    return synthetic.draw_marker_frame(cv2.resize(crop, (FACE_SIDE, FACE_SIDE), interpolation=cv2.INTER_AREA), MARKER)


def background() -> np.ndarray:
    """A static, softly textured grey-blue backdrop (no faces, nothing green)."""
    rng = np.random.default_rng(20240601)
    coarse = rng.integers(60, 190, size=(9, 16), dtype=np.uint8)
    grey = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC)
    fine = cv2.resize(
        rng.integers(0, 24, size=(90, 160), dtype=np.uint8), (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR
    )
    grey = cv2.add(grey, fine)
    out = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    out[..., 0] = cv2.add(grey, 12)  # B: a cool tint, G below B and R so no pixel reads green
    out[..., 1] = cv2.subtract(grey, np.full_like(grey, 6))
    out[..., 2] = grey
    return out


def face_position(index: int) -> tuple[int, int]:
    """Top-left corner of the face photo in frame `index`: a slow Lissajous path."""
    t = index / FPS
    cx = WIDTH / 2 + 380 * math.sin(2 * math.pi * t / 5.0)
    cy = HEIGHT / 2 + 140 * math.sin(2 * math.pi * t / 3.3)
    return int(round(cx - FACE_SIDE / 2)), int(round(cy - FACE_SIDE / 2))


def make_clip(path: Path, seconds: float = SECONDS) -> Path:
    """Write the anchor clip (H.264 yuv420p, AAC stereo 48 kHz: a 440 Hz tone that rises)."""
    import av

    frames = int(round(seconds * FPS))
    back, photo = background(), face_photo()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        video = out.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.codec_context.thread_count = 1  # bit-exact output whatever the machine
        video.options = {"preset": "veryfast", "crf": "20", "g": str(FPS), "bframes": "0", "flags": "+bitexact"}
        audio = out.add_stream("aac", rate=SAMPLE_RATE)
        audio.codec_context.layout = "stereo"
        audio.codec_context.bit_rate = 128_000
        audio.codec_context.flags |= av.codec.context.Flags.bitexact
        frame = np.empty_like(back)
        samples_per_frame = SAMPLE_RATE // FPS
        for i in range(frames):
            np.copyto(frame, back)
            x, y = face_position(i)
            frame[y : y + FACE_SIDE, x : x + FACE_SIDE] = photo
            vframe = av.VideoFrame.from_ndarray(frame, format="bgr24")
            vframe.pts = i
            vframe.time_base = Fraction(1, FPS)
            for packet in video.encode(vframe):
                out.mux(packet)
            n = np.arange(i * samples_per_frame, (i + 1) * samples_per_frame)
            tone = 0.2 * np.sin(2 * np.pi * (440 + 40 * n / SAMPLE_RATE) * n / SAMPLE_RATE)
            aframe = av.AudioFrame.from_ndarray(
                np.stack([tone, tone]).astype(np.float32), format="fltp", layout="stereo"
            )
            aframe.sample_rate, aframe.pts = SAMPLE_RATE, i * samples_per_frame
            aframe.time_base = Fraction(1, SAMPLE_RATE)
            for packet in audio.encode(aframe):
                out.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode(None):
                out.mux(packet)
    return path


def make_models(folder: Path) -> tuple[Path, Path, Path]:
    """(detector, swapper, recognizer) ONNX files in `folder`."""
    return (
        synthetic.make_marker_scrfd_model(folder / "anchor_scrfd.onnx", tower=DETECTOR_TOWER),
        synthetic.make_swapper_model(folder / "anchor_inswapper.onnx", mode="invert", tower=SWAPPER_TOWER),
        synthetic.make_arcface_model(folder / "anchor_arcface.onnx"),
    )


def make_anchor(folder: Path, seconds: float = SECONDS) -> AnchorFiles:
    """Generate everything into `folder` (overwriting: the result is always the same)."""
    folder.mkdir(parents=True, exist_ok=True)
    detector, swapper, recognizer = make_models(folder)
    source = folder / "source_face.png"
    tom = cv2.resize(
        _photo("insightface", "data", "images", "Tom_Hanks_54745.png"), (256, 256), interpolation=cv2.INTER_CUBIC
    )
    cv2.imwrite(str(source), synthetic.draw_marker_frame(tom, MARKER))
    real = folder / "real_face.png"
    cv2.imwrite(str(real), cv2.copyMakeBorder(tom, 64, 64, 64, 64, cv2.BORDER_REPLICATE))
    return AnchorFiles(make_clip(folder / "anchor_720p30.mp4", seconds), source, real, detector, swapper, recognizer)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
