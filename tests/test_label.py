"""Responsible use: the visible label on every output frame (position/text configurable) and
the metadata tag in file outputs (video container, PNG, JPEG)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from streamswap.config import load_config
from streamswap.errors import ConfigError
from streamswap.io.images import write_image
from streamswap.io.label import Labeler, tag_text
from streamswap.io.settings import LabelSettings


def test_label_drawn_in_the_chosen_corner_only() -> None:
    frame = np.full((360, 640, 3), 120, np.uint8)
    Labeler(LabelSettings(enabled=True, position="top-left")).draw(frame)
    changed = np.abs(frame.astype(int) - 120).sum(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert changed.any() and ys.max() < 360 * 0.15 and xs.max() < 640 * 0.5
    assert (frame[changed] > 200).all(axis=1).any()  # white text on a darkened box
    other = np.full((360, 640, 3), 120, np.uint8)
    labeler = Labeler(LabelSettings(enabled=True, position="bottom-right", text="Deepfake demo"))
    labeler.draw(other)
    ys, xs = np.nonzero(np.abs(other.astype(int) - 120).sum(axis=2))
    assert ys.min() > 360 * 0.8 and xs.min() > 640 * 0.4
    labeler.draw(np.zeros((720, 1280, 3), np.uint8))  # a new frame size re-renders


def test_bad_label_text_is_refused() -> None:
    with pytest.raises(ConfigError, match="io.label.text"):
        load_config(None, {"io.label.text": "KI-erzeugt ✓"})


def test_image_files_carry_the_tag(tmp_path: Path) -> None:
    image = np.full((32, 48, 3), 90, np.uint8)
    text = tag_text(LabelSettings())
    for ext in (".png", ".jpg"):
        path = write_image(tmp_path / f"out{ext}", image, tag=text)
        data = path.read_bytes()
        assert text.encode() in data
        decoded = cv2.imread(str(path))
        assert decoded is not None and decoded.shape == image.shape  # still a valid image


def test_run_labels_every_frame_and_tags_the_file(tmp_path: Path) -> None:
    """`streamswap run` through a real H.264 file: every output frame carries the label in
    the configured corner, the container the metadata tag."""
    import os
    import subprocess
    import sys

    from io_media import make_video

    src = make_video(tmp_path / "in.mp4", frames=12, fps=30, size=(320, 240), audio=False)
    config = tmp_path / "label.yaml"
    config.write_text("io:\n  label:\n    enabled: true\n    position: top-left\n    text: Deepfake\n")
    out = tmp_path / "out.mp4"
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamswap",
            "run",
            "--config",
            str(config),
            "--input",
            str(src),
            "--output",
            str(out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    with av.open(str(src)) as container:
        before = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    with av.open(str(out)) as container:
        assert container.metadata.get("comment") == "Deepfake (face swapped by streamswap)"
        after = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(after) == len(before) == 12
    for a, b in zip(after, before):
        corner = np.abs(a[:24, :120].astype(int) - b[:24, :120]).mean()
        rest = np.abs(a[120:, 160:].astype(int) - b[120:, 160:]).mean()
        assert corner > 5.0 and rest < 1.0, (corner, rest)
