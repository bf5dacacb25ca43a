"""`streamswap run` publishing to a real nginx-rtmp server (io's tests/rtmp_server.py
fixture); a PyAV reader pulls the stream back: frames in order, audio present."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest

from rtmp_server import rtmp_server  # noqa: F401  (fixture)
from test_run_cli import FPS, SIZE, make_media, read_index

pytestmark = pytest.mark.slow


def test_run_publishes_rtmp_that_a_reader_pulls_back(rtmp_server, tmp_path: Path) -> None:  # noqa: F811
    clip = make_media(tmp_path / "clip.mp4", frames=12 * FPS)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  stats_interval: 0.1\n")
    url = rtmp_server.url("swap")
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamswap", "run", "--config", str(cfg), "--live",
         "--input", str(clip), "--output", url],
        stderr=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # publishing has begun once frames reach the sink
            m = re.search(r"stats .*frames_out=(\d+)", line)
            if m and int(m.group(1)) > 0:
                break
        else:
            pytest.fail("streamswap run ended before publishing")
        indices: list[int] = []
        audio_packets = 0
        with av.open(url, options={"rw_timeout": "10000000"}, timeout=10) as reader:
            assert reader.streams.video and reader.streams.audio
            assert reader.streams.audio[0].codec_context.name == "aac"
            for packet in reader.demux():
                if packet.stream.type == "audio" and packet.size:
                    audio_packets += 1
                elif packet.stream.type == "video":
                    for frame in packet.decode():
                        assert (frame.width, frame.height) == SIZE
                        indices.append(read_index(frame.to_ndarray(format="bgr24")))
                if len(indices) >= 60:
                    break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(60) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert len(indices) == 60
    # in order and, for a paced input that the pipeline keeps up with, consecutive
    assert all(b > a for a, b in zip(indices, indices[1:])), indices
    assert indices[-1] - indices[0] < 90, indices
    assert audio_packets > 30
    assert re.search(r"run: \d+ frames out of \d+ read", rest), rest
