"""`streamswap run` publishing to a real nginx-rtmp server (io's tests/rtmp_server.py
fixture); a PyAV reader pulls the stream back: frames in order, audio present. The server
is then killed and restarted: the run reconnects, the reader gets frames again, and the
process's memory stays bounded meanwhile."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
from rtmp_server import rtmp_server  # noqa: F401  (fixture)
from test_run_cli import FPS, SIZE, make_media, read_index

pytestmark = pytest.mark.slow


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pull(url: str, frames: int, deadline_s: float = 30) -> tuple[list[int], int]:
    """Open the stream (retrying while it is not up yet) and read `frames` frames:
    (their painted indices, audio packets seen)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            reader = av.open(url, options={"rw_timeout": "5000000"}, timeout=5)
            break
        except (av.error.FFmpegError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)  # the publisher is still reconnecting: nothing to wait on but time
    indices: list[int] = []
    audio = 0
    with reader:
        assert reader.streams.video and reader.streams.audio
        assert reader.streams.audio[0].codec_context.name == "aac"
        for packet in reader.demux():
            if packet.stream.type == "audio" and packet.size:
                audio += 1
            elif packet.stream.type == "video":
                for frame in packet.decode():
                    assert (frame.width, frame.height) == SIZE
                    indices.append(read_index(frame.to_ndarray(format="bgr24")))
            if len(indices) >= frames:
                break
    return indices, audio


def test_run_publishes_rtmp_and_reconnects_after_server_crash(rtmp_server, tmp_path: Path) -> None:  # noqa: F811
    clip = make_media(tmp_path / "clip.mp4", frames=30 * FPS)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("pipeline:\n  stats_interval: 0.1\nio:\n  reconnect_initial_s: 0.2\n  reconnect_max_s: 1\n")
    url = rtmp_server.url("swap")
    env = {k: v for k, v in os.environ.items() if k != "STREAMSWAP_CONFIG"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamswap",
            "run",
            "--config",
            str(cfg),
            "--live",
            "--log-every",
            "0.1",
            "--input",
            str(clip),
            "--output",
            url,
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    publishing = threading.Event()

    def drain() -> None:  # keep reading stderr so the process never blocks on a full pipe
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"stats .*frames_out=(\d+)", line)
            if m and int(m.group(1)) > 0:
                publishing.set()

    reader_thread = threading.Thread(target=drain, daemon=True)
    reader_thread.start()
    try:
        assert publishing.wait(30), "streamswap run did not publish:\n" + "".join(lines)
        first, audio = pull(url, 45)
        assert all(b > a for a, b in zip(first, first[1:])), first
        assert first[-1] - first[0] < 90, first  # consecutive for a pipeline that keeps up
        assert audio > 20
        rss_before = rss_mib(proc.pid)

        rtmp_server.kill()
        rtmp_server.start()
        second, audio = pull(url, 30)
        assert all(b > a for a, b in zip(second, second[1:])), second
        assert second[0] > first[-1] and audio > 10
        rss_after = rss_mib(proc.pid)
        assert rss_after < rss_before + 64, (rss_before, rss_after)

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, "".join(lines)
        reader_thread.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines)
    assert re.search(r"stats .*reconnects=[1-9]", log), log[-3000:]
    assert re.search(r"run: \d+ frames out of \d+ read", log), log[-3000:]
