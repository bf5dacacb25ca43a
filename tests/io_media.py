"""Real H.264/AAC media made with PyAV for the io tests (written into tmp dirs)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

SAMPLE_RATE = 48000


def frame_image(i: int, width: int, height: int) -> np.ndarray:
    """A BGR picture whose content encodes `i` (a moving bar and a grey level)."""
    img = np.zeros((height, width, 3), np.uint8)
    img[:] = (i * 7) % 200 + 20
    x = (i * 8) % max(width - 16, 1)
    img[:, x : x + 16] = (0, 0, 255)
    return img


def make_video(
    path: Path,
    *,
    frames: int = 60,
    fps: int = 30,
    size: tuple[int, int] = (320, 240),
    audio: bool = True,
    video: bool = True,
    change_size_at: int | None = None,
    new_size: tuple[int, int] = (480, 360),
    audio_codec: str = "aac",
    picture: Callable[[int, int, int], np.ndarray] = frame_image,
) -> Path:
    """Encode `frames` frames (+ a matching AAC tone) into `path`; format from its suffix.

    With `change_size_at`, frames from that index on are encoded by a second encoder at
    `new_size` into the same stream (needs an in-band-SPS container such as .ts).
    `picture(i, width, height)` draws frame i (BGR)."""
    container = av.open(str(path), "w")
    vs = None
    if video:
        vs = container.add_stream("libx264", rate=fps)
        vs.width, vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.codec_context.time_base = Fraction(1, fps)
        vs.options = {"preset": "ultrafast", "g": str(fps)}
    aus = None
    if audio:
        aus = container.add_stream(audio_codec, rate=SAMPLE_RATE)
        aus.codec_context.layout = "stereo"
    second = None
    tb = Fraction(1, fps)
    for i in range(frames if video else 0):
        w, h = size
        encoder = vs.codec_context
        if change_size_at is not None and i >= change_size_at:
            if second is None:
                for packet in vs.codec_context.encode(None):  # finish the first size
                    container.mux(packet)
                second = av.CodecContext.create("libx264", "w")
                second.width, second.height = new_size
                second.pix_fmt = "yuv420p"
                second.time_base = tb
                second.framerate = Fraction(fps)
                second.options = {"preset": "ultrafast", "g": str(fps)}
            encoder = second
            w, h = new_size
        frame = av.VideoFrame.from_ndarray(picture(i, w, h), format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        frame.time_base = tb
        for packet in encoder.encode(frame):
            packet.stream = vs
            container.mux(packet)
    if vs is not None and second is None:
        for packet in vs.codec_context.encode(None):
            container.mux(packet)
    if second is not None:
        for packet in second.encode(None):
            packet.stream = vs
            container.mux(packet)
    if aus is not None:
        seconds = (frames if video else 60) / fps
        _write_tone(container, aus, seconds)
    container.close()
    return path


def _write_tone(container: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    chunk = 1024
    total = int(seconds * SAMPLE_RATE)
    t = np.arange(total, dtype=np.float32) / SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, total, chunk):
        part = tone[start : start + chunk]
        data = np.stack([part, part])
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format="fltp", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        frame.time_base = Fraction(1, SAMPLE_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def read_video(path: str | Path, **open_kwargs) -> tuple[list[int], list[tuple[int, int]], Fraction]:
    """(pts of every decoded video frame, their sizes, the stream time base)."""
    with av.open(str(path), **open_kwargs) as container:
        stream = container.streams.video[0]
        pts, sizes = [], []
        for frame in container.decode(stream):
            pts.append(frame.pts)
            sizes.append((frame.width, frame.height))
        return pts, sizes, stream.time_base


def audio_packets(path: str | Path) -> tuple[list[int], Fraction, str]:
    """(pts of the audio packets, the audio time base, the codec name)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return [], Fraction(1), ""
        stream = container.streams.audio[0]
        pts = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
        return pts, stream.time_base, stream.codec_context.name
