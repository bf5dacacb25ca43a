"""Sinks: file outputs with audio pass-through, interrupted files, several outputs, vcam/display errors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from io_media import audio_packets, frame_image, make_video, read_video

from streamswap.errors import OutputError
from streamswap.io.avsink import FLUSH_INTERVAL_S, AvSink, file_lookahead, pick_encoder
from streamswap.io.base import FrameMeta, VideoFormat
from streamswap.io.display import NullSink
from streamswap.io.reconnect import Backoff, ReconnectingSink
from streamswap.io.settings import IoSettings
from streamswap.io.uri import open_sink, open_source

REPO = Path(__file__).resolve().parent.parent


def copy(src: Path, dst: str, settings: IoSettings | None = None) -> int:
    """Source -> sink the way the pipeline drives them; returns frames written."""
    settings = settings or IoSettings()
    source = open_source(str(src), settings)
    fmt = source.open()
    sink = open_sink(dst, settings)
    sink.open(fmt, source.audio)
    buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
    n = 0
    while (meta := source.read_into(buf)) is not None:
        sink.write_audio(source.take_audio())
        sink.write(buf, meta)
        n += 1
    sink.write_audio(source.take_audio())
    sink.close()
    source.close()
    return n


def start_offset(path: Path) -> float:
    """Seconds between the first audio and the first video timestamp."""
    vpts, _, vtb = read_video(path)
    apts, atb, _ = audio_packets(path)
    return float(apts[0] * atb) - float(vpts[0] * vtb)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_video(tmp_path_factory.mktemp("clip") / "in.mp4", frames=90)  # 3 s


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov", ".flv"])
def test_file_copy_keeps_frames_duration_and_audio(clip, tmp_path, suffix):
    out = tmp_path / f"out{suffix}"
    assert copy(clip, str(out)) == 90
    in_pts, _, in_tb = read_video(clip)
    out_pts, sizes, out_tb = read_video(out)
    assert len(out_pts) == 90 and sizes[0] == (320, 240)
    assert out_pts == sorted(out_pts)
    frame = 1 / 30
    in_dur = float((in_pts[-1] - in_pts[0]) * in_tb)
    out_dur = float((out_pts[-1] - out_pts[0]) * out_tb)
    assert out_dur == pytest.approx(in_dur, abs=frame)
    a_in, a_tb_in, _ = audio_packets(clip)
    a_out, a_tb_out, codec = audio_packets(out)
    assert codec == "aac" and abs(len(a_out) - len(a_in)) <= 1
    assert float((a_out[-1] - a_out[0]) * a_tb_out) == pytest.approx(float((a_in[-1] - a_in[0]) * a_tb_in), abs=0.03)
    assert abs(start_offset(out) - start_offset(clip)) <= frame
    if suffix in (".mp4", ".mov"):  # edit lists keep the AAC priming before 0: exact
        assert start_offset(out) == pytest.approx(start_offset(clip), abs=0.001)
        assert [float(p * out_tb) for p in out_pts] == pytest.approx([float(p * in_tb) for p in in_pts], abs=0.001)
    # The pictures are the source's (grey level encodes the frame number).
    with av.open(str(out)) as container:
        images = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    for i in (0, 45, 89):  # the red bar is left of x=200 in these frames
        want = float(np.median(frame_image(i, 320, 240)[:, 200:, 0]))
        assert abs(float(np.median(images[i][:, 200:, 0])) - want) < 8


def audio_times_and_bytes(path: Path) -> tuple[list[float], list[bytes]]:
    """Each audio packet's time relative to the first video frame, and its payload."""
    video_pts, _, video_tb = read_video(path)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size and p.pts is not None]
        start = float(video_pts[0] * video_tb)
        return [float(p.pts * stream.time_base) - start for p in packets], [bytes(p) for p in packets]


@pytest.mark.parametrize("order", [(".mkv", ".mp4", ".flv", ".mov"), (".mov", ".flv", ".mp4", ".mkv")])
def test_every_output_gets_the_input_audio_packets_unchanged(clip, tmp_path, order):
    """AAC is passed through, not re-encoded: every output's packets are the input's,
    byte for byte, at the input's times (against the video), whichever output comes first
    (each packet object goes to every sink, which rebases it in place to mux it)."""
    settings = IoSettings()
    source = open_source(str(clip), settings)
    fmt = source.open()
    outs = [tmp_path / f"out{suffix}" for suffix in order]
    sinks = [open_sink(str(out), settings) for out in outs]
    for sink in sinks:
        sink.open(fmt, source.audio)
    buf = np.empty((fmt.height, fmt.width, 3), np.uint8)
    while (meta := source.read_into(buf)) is not None:
        packets = source.take_audio()
        for sink in sinks:
            sink.write_audio(packets)
            sink.write(buf, meta)
    packets = source.take_audio()
    for sink in sinks:
        sink.write_audio(packets)
        sink.close()
    source.close()
    want_times, want_bytes = audio_times_and_bytes(clip)
    assert len(want_bytes) > 100
    for out in outs:
        times, payloads = audio_times_and_bytes(out)
        assert payloads == want_bytes, f"{out.name}: audio packets differ from the input's"
        # MP4/MOV keep the input's 1/48000 time base: exact. MKV/FLV store milliseconds:
        # within one (a packet lasts 21 ms). A packet that reaches a later output with the
        # times an earlier one rounded to milliseconds fails the exact check.
        exact = out.suffix in (".mp4", ".mov")
        assert times == pytest.approx(want_times, abs=1e-6 if exact else 0.0011), out.name


def test_audio_reencoded_when_container_cannot_take_it(tmp_path):
    src = make_video(tmp_path / "pcm.mkv", frames=30, audio_codec="pcm_s16le")
    out = tmp_path / "out.flv"
    assert copy(src, str(out)) == 30
    a_out, tb, codec = audio_packets(out)
    assert codec == "aac"
    assert float((a_out[-1] - a_out[0]) * tb) == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".flv", ".mkv"])
def test_adts_aac_from_mpegts_lands_in_every_container(tmp_path, suffix):
    # AAC in MPEG-TS (RTSP cameras, TS recordings) is ADTS-framed with no extradata;
    # MP4/MOV need the audio config in their header, so it must not be copied blindly.
    src = make_video(tmp_path / "in.ts", frames=30)
    out = tmp_path / f"out{suffix}"
    assert copy(src, str(out)) == 30
    a_out, tb, codec = audio_packets(out)
    assert codec == "aac" and len(a_out) > 40
    assert float((a_out[-1] - a_out[0]) * tb) == pytest.approx(1.0, abs=0.06)
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(audio=0)) >= len(a_out) - 2


def test_no_audio_input_gives_video_only_file(tmp_path):
    src = make_video(tmp_path / "silent.mp4", frames=15, audio=False)
    out = tmp_path / "out.mp4"
    assert copy(src, str(out)) == 15
    assert audio_packets(out)[0] == [] and len(read_video(out)[0]) == 15


KILLED = """
import os, sys, numpy as np
from fractions import Fraction
from streamswap.io.base import FrameMeta, VideoFormat
from streamswap.io.settings import IoSettings
from streamswap.io.uri import open_sink, open_source
# One keyframe only (10 s interval): nothing may wait for the next keyframe to be written.
settings = IoSettings(keyframe_interval_s=10.0)
source = open_source(sys.argv[2], settings)  # a short clip: its audio ends after 1/3 s
video = source.open()
while source.read_into(np.zeros((video.height, video.width, 3), np.uint8)) is not None:
    pass
sink = open_sink(sys.argv[1], settings)
sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), source.audio)
sink.write_audio(source.take_audio())
frame = np.zeros((48, 64, 3), np.uint8)
for i in range(95):
    frame[:] = i
    sink.write(frame, FrameMeta(index=i, pts=i, capture_time=0.0))
os._exit(0)  # as if killed: no flush, no trailer
"""


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".flv"])
def test_killed_file_output_loses_at_most_the_flush_interval(tmp_path, suffix):
    clip = make_video(tmp_path / "short.mp4", frames=10)
    out = tmp_path / f"killed{suffix}"
    subprocess.run([sys.executable, "-c", KILLED, str(out), str(clip)], check=True, cwd=REPO, timeout=60)
    pts, _, _ = read_video(out)
    # The bound avsink states: FLUSH_INTERVAL_S (7.5 frames at 30 fps) + the encoder's delay
    # (its capped lookahead + 1; io.preset auto picks medium for these tiny frames). Before,
    # MP4/MOV/MKV lost everything since the last keyframe.
    lost = 95 - len(pts)
    assert lost <= FLUSH_INTERVAL_S * 30 + file_lookahead(30) + 2, f"{suffix}: {lost} of 95 frames lost"
    assert pts == sorted(pts) and len(set(pts)) == len(pts)


def test_pts_from_source_even_with_gaps(tmp_path):
    out = tmp_path / "gaps.mkv"
    sink = open_sink(str(out), IoSettings())
    sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    frame = np.zeros((48, 64, 3), np.uint8)
    for index, pts in enumerate([0, 1, 2, 10, 11, 11, 12]):  # a gap and a repeated pts
        sink.write(frame, FrameMeta(index=index, pts=pts, capture_time=0.0))
    sink.close()
    pts, _, tb = read_video(out)
    secs = [round(float(p * tb) * 30) for p in pts]
    assert secs[:5] == [0, 1, 2, 10, 11] and len(secs) == 7 and secs == sorted(secs)


def test_unknown_output_scheme_and_type(tmp_path):
    with pytest.raises(OutputError) as info:
        open_sink("ftp://x/y", IoSettings())
    assert "vcam://" in str(info.value) and "rtmp://" in str(info.value)
    with pytest.raises(OutputError, match="unsupported output file type"):
        open_sink(str(tmp_path / "out.avi"), IoSettings())
    with pytest.raises(OutputError, match="does not exist"):
        open_sink(str(tmp_path / "nope" / "out.mp4"), IoSettings())


def test_vcam_without_device_tells_how_to_load_v4l2loopback(tmp_path):
    sink = open_sink("vcam:///dev/video-missing", IoSettings())
    with pytest.raises(OutputError) as info:
        sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    message = str(info.value)
    assert "sudo modprobe v4l2loopback devices=1 video_nr=10 card_label=streamswap exclusive_caps=1" in message


def test_display_without_a_display(monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(OutputError, match="no display"):
        open_sink("display://", IoSettings()).open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)


def test_encoder_auto_falls_back_to_libx264():
    fmt = VideoFormat(64, 48, Fraction(30), Fraction(1, 30))
    assert pick_encoder(IoSettings(encoder="libx264"), fmt) == "libx264"
    assert pick_encoder(IoSettings(), fmt) in ("libx264", "h264_nvenc")


class FlakySink(NullSink):
    """A network-like sink whose writes fail while `down` is set (and opens fail too)."""

    def __init__(self, down: threading.Event, opened: list) -> None:
        super().__init__("flaky://")
        self.down = down
        self.opened = opened

    def open(self, video, audio) -> None:
        if self.down.is_set():
            raise OutputError("flaky://: connection refused")
        self.opened.append(self)

    def write(self, frame, meta) -> None:
        if self.down.is_set():
            raise OutputError("flaky://: broken pipe")
        super().write(frame, meta)


def test_other_outputs_keep_going_while_a_network_sink_reconnects(tmp_path):
    down = threading.Event()
    opened: list = []
    flaky = ReconnectingSink(lambda: FlakySink(down, opened), name="flaky://", backoff=Backoff(0.01, 0.02))
    null = NullSink()
    out = tmp_path / "tee.mkv"
    sinks = [null, flaky, open_sink(str(out), IoSettings())]
    for sink in sinks:
        sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    frame = np.zeros((48, 64, 3), np.uint8)
    i = 0

    def write() -> None:  # one frame to every output, as the pipeline's output stage does
        nonlocal i
        for sink in sinks:
            sink.write(frame, FrameMeta(index=i, pts=i, capture_time=0.0))
        i += 1

    for _ in range(10):
        write()
    down.set()
    for _ in range(10):
        write()
    assert not flaky.up and flaky.counters["dropped"] == 10
    down.clear()
    while not opened[-1:] or len(opened) < 2 or not flaky.up:
        write()
        if i > 5000:
            pytest.fail("the flaky sink never reconnected")
    for _ in range(5):
        write()
    for sink in sinks:
        sink.close()
    assert flaky.counters["reconnects"] == 1
    assert null.counters["frames"] == i  # the others never missed a frame
    assert flaky.counters["frames"] + flaky.counters["dropped"] == i
    assert len(read_video(out)[0]) == i


def test_failing_file_sink_write_is_an_output_error(tmp_path):
    sink = AvSink(str(tmp_path / "x.mkv"), "matroska", IoSettings(), network=False)
    sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    real = sink._container

    class DiskFull:  # the container as it behaves once the disk is full
        def mux(self, packet):
            raise OSError(28, "No space left on device")

        def __getattr__(self, name):
            return getattr(real, name)

    sink._container = DiskFull()
    with pytest.raises(OutputError, match="write failed.*No space"):
        for i in range(40):  # the encoder may buffer a few frames before the first write
            sink.write(np.zeros((48, 64, 3), np.uint8), FrameMeta(index=i, pts=i, capture_time=0.0))
    sink._container = real
    sink.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def monotonic(self) -> float:
        return self.now


def test_vcam_paces_to_its_fps_without_blocking(monkeypatch):
    import types

    from streamswap.io import vcam

    sent = []

    class Camera:
        def __init__(self, width, height, fps, fmt=None, device=None):
            self.device = device or "/dev/video10"
            assert fmt is FakeVirtualCam.PixelFormat.BGR

        def send(self, frame):
            sent.append(int(frame[0, 0, 0]))

        def close(self):
            pass

    FakeVirtualCam = types.SimpleNamespace(Camera=Camera, PixelFormat=types.SimpleNamespace(BGR="bgr"))
    monkeypatch.setitem(sys.modules, "pyvirtualcam", FakeVirtualCam)
    clock = FakeClock()
    monkeypatch.setattr(vcam, "time", clock)
    sink = open_sink("vcam://", IoSettings(vcam_fps=10))
    sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    frame = np.zeros((48, 64, 3), np.uint8)
    for i in range(60):  # 2 s of 30 fps frames into a 10 fps camera
        frame[:] = i
        sink.write(frame, FrameMeta(index=i, pts=i, capture_time=0.0))
        clock.now += 1 / 30
    assert 19 <= len(sent) <= 21 and sink.counters["skipped"] == 60 - len(sent)
    assert all(b - a in (2, 3, 4) for a, b in zip(sent, sent[1:]))  # evenly spaced
    sink.close()


def test_keyframe_interval_follows_settings(tmp_path):
    out = tmp_path / "gop.mkv"
    # ultrafast: slower presets code pure-noise frames as (key) I-frames of their own accord
    sink = open_sink(str(out), IoSettings(keyframe_interval_s=0.5, preset="ultrafast"))
    sink.open(VideoFormat(64, 48, Fraction(30), Fraction(1, 30)), None)
    rng = np.random.default_rng(0)
    for i in range(60):  # noise: no scene would otherwise force keyframes
        sink.write(rng.integers(0, 255, (48, 64, 3), np.uint8), FrameMeta(index=i, pts=i, capture_time=0.0))
    sink.close()
    with av.open(str(out)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
    assert [i for i, p in enumerate(packets) if p.is_keyframe] == [0, 15, 30, 45]


def test_stalled_network_sink_holds_up_only_its_own_output():
    """A server that stops reading blocks only this output's own pipeline thread: the
    pipeline drops this output's oldest waiting frames (counted for it, in order, no
    copies), and the output beside it gets every frame."""
    from test_pipeline import FakeSource, make_pipeline

    release = threading.Event()
    written: list[int] = []

    class Stalled(NullSink):
        def write(self, frame, meta) -> None:
            release.wait(10)  # a server that stopped reading
            written.append(meta.index)

    class Camera(FakeSource):  # a frame every 5 ms
        def read_into(self, out):
            threading.Event().wait(0.005)
            return super().read_into(out)

    stalled = ReconnectingSink(lambda: Stalled("stalled://"), name="stalled://", backoff=Backoff(0.01, 0.02))
    beside = NullSink("beside://")
    pipeline = make_pipeline(None, source=Camera(50, live=True), sinks=[stalled, beside])
    pipeline.start()
    deadline = time.monotonic() + 10
    while beside.counters["frames"] < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    outputs = pipeline.status()["output_frames"]
    assert beside.counters["frames"] == 50 and outputs["beside://"] == {"written": 50, "dropped": 0}
    assert outputs["stalled://"]["dropped"] >= 50 - 3 - 1 - 5  # queue + the one in write(), some slack
    release.set()
    assert pipeline.wait(10)
    assert written == sorted(written) and stalled.counters["frames"] == len(written)


def test_rtmp_output_to_a_silent_or_dead_server_fails_fast_with_a_clear_error():
    # PyAV's output open has no timeout of its own: a server that accepts and never
    # answers must not hang the run (it used to block for ever, Ctrl-C included).
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    port = listener.getsockname()[1]
    video = VideoFormat(64, 48, Fraction(30), Fraction(1, 30))
    try:
        sink = open_sink(f"rtmp://127.0.0.1:{port}/live/key", IoSettings(open_timeout_s=0.5, reconnect=False))
        with pytest.raises(OutputError, match=r"no answer within 0.5 s.*open_timeout_s"):
            sink.open(video, None)
    finally:
        listener.close()
    dead = open_sink(f"rtmp://127.0.0.1:{port}/live/key", IoSettings(open_timeout_s=0.5, reconnect=False))
    with pytest.raises(OutputError, match="refused"):
        dead.open(video, None)
