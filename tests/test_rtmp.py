"""RTMP output against a real nginx-rtmp server: publish, pull back, survive a server crash."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from io_media import make_video
from rtmp_server import rtmp_server  # noqa: F401  (fixture)

from streamswap.io.reconnect import ReconnectingSink
from streamswap.io.settings import IoSettings
from streamswap.io.uri import open_sink, open_source

pytestmark = pytest.mark.slow


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Publisher:
    """Plays a clip (looped, timestamps continuing) into an RTMP sink at its real rate."""

    def __init__(self, clip: Path, url: str, settings: IoSettings) -> None:
        self.clip = clip
        self.settings = settings
        self.sink = open_sink(url, settings)
        assert isinstance(self.sink, ReconnectingSink)
        self.stop = threading.Event()
        self.frames = 0
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None
        self._last_pts = 0

    def start(self) -> None:
        source = open_source(str(self.clip), self.settings, live=True)
        fmt = source.open()
        self.sink.open(fmt, source.audio)  # the first connection must succeed
        self.thread = threading.Thread(target=self._run, args=(source, fmt), daemon=True)
        self.thread.start()

    def _run(self, source, fmt) -> None:
        buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
        offset = 0
        try:
            while not self.stop.is_set():
                meta = source.read_into(buf)
                if meta is None:  # loop the clip, keeping time moving forward
                    source.close()
                    offset = self._last_pts + 1
                    source = open_source(str(self.clip), self.settings, live=True)
                    source.open()
                    continue
                packets = source.take_audio()
                shift = int(offset * fmt.time_base / packets[0].time_base) if packets else 0
                for packet in packets:
                    packet.pts += shift
                    packet.dts += shift
                self.sink.write_audio(packets)
                meta.pts += offset
                self._last_pts = meta.pts
                self.sink.write(buf, meta)
                self.frames += 1
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            source.close()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sink.close()


def pull(url: str, frames: int, timeout: float = 15.0) -> tuple[int, int, tuple[int, int]]:
    """Read `frames` video frames from the server; (frames, audio packets, size)."""
    got, audio, size = 0, 0, (0, 0)
    with av.open(url, timeout=(timeout, timeout)) as container:
        assert container.streams.video, "no video stream in the RTMP stream"
        streams = [container.streams.video[0]] + list(container.streams.audio[:1])
        for packet in container.demux(*streams):
            if packet.stream.type == "audio" and packet.size:
                audio += 1
                continue
            for frame in packet.decode():
                size = (frame.width, frame.height)
                got += 1
            if got >= frames:
                break
    return got, audio, size


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("rtmp") / "clip.mp4", frames=60, size=(320, 240))


def test_publish_reconnect_and_bounded_memory(rtmp_server, clip):  # noqa: F811
    settings = IoSettings(
        reconnect_initial_s=0.1, reconnect_max_s=0.5, keyframe_interval_s=0.5, open_timeout_s=5, read_timeout_s=5
    )
    url = rtmp_server.url("cam")
    publisher = Publisher(clip, url, settings)
    publisher.start()
    try:
        frames, audio, size = pull(url, 30)
        assert frames == 30 and size == (320, 240)
        assert audio > 10  # the AAC track came through

        baseline = rss_bytes()
        rtmp_server.kill()
        deadline = time.monotonic() + 15
        while publisher.sink.up and time.monotonic() < deadline:
            time.sleep(0.05)  # the loss shows on the next failed write
        assert not publisher.sink.up, "the sink did not notice the server crash"
        down_frames = publisher.frames
        peak = baseline
        while publisher.frames < down_frames + 45:  # 1.5 s of frames while down
            peak = max(peak, rss_bytes())
            time.sleep(0.05)
        assert publisher.sink.counters["dropped"] >= 30
        assert publisher.sink.counters["reconnect_failures"] >= 1

        rtmp_server.start()
        frames, audio, size = pull(url, 20)
        assert frames == 20 and size == (320, 240) and audio > 0
        assert publisher.sink.counters["reconnects"] >= 1
        peak = max(peak, rss_bytes())
        assert peak - baseline < 64 * 2**20, f"memory grew by {(peak - baseline) / 2**20:.0f} MiB"
        assert publisher.error is None
    finally:
        publisher.close()
