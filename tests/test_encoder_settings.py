"""What the H.264 outputs are encoded with: files at constant quality with a preset that
holds the rate, network outputs with live low-latency settings; checked in the options
x264 itself writes into the stream (its SEI), not only in what we asked for."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from streamswap.io.avsink import auto_preset, encoder_settings
from streamswap.io.base import FrameMeta, VideoFormat
from streamswap.io.settings import IoSettings
from streamswap.io.uri import open_sink

HD = VideoFormat(1280, 720, Fraction(30), Fraction(1, 30))


def x264_options(path: Path) -> dict[str, str]:
    """The `options:` x264 writes into its first packet's SEI, as a dict."""
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            text = bytes(packet).decode("latin-1")
            found = re.search(r"options: ([^\x00]+)", text)
            if found:
                return dict(item.split("=", 1) for item in found.group(1).split() if "=" in item)
    raise AssertionError("no x264 SEI in the stream")


def test_auto_preset_holds_the_rate_within_the_encoder_share() -> None:
    assert auto_preset(1280, 720, 30, threads=1) == "veryfast"  # the 2-core machine's share
    assert auto_preset(1920, 1080, 30, threads=1) == "ultrafast"
    assert auto_preset(1920, 1080, 60, threads=1) == "ultrafast"  # never slower than the fastest
    assert auto_preset(1280, 720, 30, threads=4) == "medium"  # capped at medium
    assert auto_preset(1280, 720, 30, threads=2) == "fast"


def test_file_outputs_get_constant_quality_network_outputs_a_bitrate() -> None:
    file = encoder_settings(IoSettings(encoder_threads=1), "libx264", HD, network=False)
    assert file.options["crf"] == "20" and file.options["preset"] == "veryfast"
    assert file.bit_rate is None and "tune" not in file.options and file.threads == 1
    live = encoder_settings(IoSettings(encoder_threads=1), "libx264", HD, network=True)
    assert live.options["preset"] == "ultrafast" and live.options["tune"] == "zerolatency"
    assert live.bit_rate == 4_000_000 and "crf" not in live.options
    fixed = encoder_settings(IoSettings(crf=None, preset="medium"), "libx264", HD, network=False)
    assert fixed.bit_rate == 4_000_000 and fixed.options["preset"] == "medium" and "crf" not in fixed.options
    assert fixed.gop == 30 and fixed.options["keyint"] == "30" and fixed.options["bframes"] == "0"


def test_nvenc_files_use_constant_quality_and_streams_cbr() -> None:
    file = encoder_settings(IoSettings(crf=18), "h264_nvenc", HD, network=False)
    assert file.options["rc"] == "vbr" and file.options["cq"] == "18" and file.bit_rate is None
    live = encoder_settings(IoSettings(), "h264_nvenc", HD, network=True)
    assert live.options["rc"] == "cbr" and live.options["tune"] == "ull" and live.bit_rate == 4_000_000


@pytest.mark.parametrize(
    "settings, expect",
    [
        (
            IoSettings(encoder="libx264", encoder_threads=1),
            {"rc": "crf", "crf": "20.0", "threads": "1", "bframes": "0"},
        ),
        (
            IoSettings(encoder="libx264", preset="medium", crf=18, encoder_threads=2),
            {"rc": "crf", "crf": "18.0", "threads": "2", "subme": "7", "trellis": "1", "rc_lookahead": "4"},
        ),
        (
            IoSettings(encoder="libx264", crf=None, preset="ultrafast", bitrate_kbps=900),
            {"rc": "abr", "bitrate": "900", "subme": "0"},
        ),
    ],
)
def test_the_encoder_gets_the_options(tmp_path: Path, settings: IoSettings, expect: dict[str, str]) -> None:
    out = tmp_path / "out.mp4"
    sink = open_sink(str(out), settings)
    sink.open(VideoFormat(320, 240, Fraction(30), Fraction(1, 30)), None)
    frame = np.zeros((240, 320, 3), np.uint8)
    for i in range(5):
        frame[:] = i * 20
        sink.write(frame, FrameMeta(index=i, pts=i, capture_time=0.0))
    sink.close()
    options = x264_options(out)
    assert {k: options.get(k) for k in expect} == expect
